"""Drivers sign in from the car (issue 13), end to end through the whole local stack: VirtualCars on the real
`azure-iot-device` SDK send `auth.signin`; the function app starts the device-code flow with the real MSAL against
the local OpenID Connect provider and polls it from the Azurite `signin-poll` queue; the test plays the person at
the provider's verification page over HTTP; the account's MSAL cache is sealed under the local Key Vault
stand-in's key (the real azure-keyvault-keys client); the calendar sync reads the driver's own calendar from the
Graph sandbox through `/me` with the driver's token, and the agenda arrives in the car's twin.

Shortened through the stack's settings only: a 2 s poll interval, 25 s device codes, and Graph tokens of 2 minutes,
so every Graph call refreshes (MSAL refreshes a token with less than 5 minutes left) and a revoked account shows at
the next call instead of after an hour, as it would in Azure. The Graph sandbox sends no change notifications
and the stack has no public https URL, so no Graph subscriptions exist here: "no subscription left" is asserted on
the sandbox, where none was ever made (the unit and integration tests cover subscriptions on /me/events).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest

pytest.importorskip("azure.iot.device", reason="azure-iot-device is not installed")

from devstack.api_client import ApiClient, ApiError
from devstack.demo_fleet import DemoFleet, prepare_fleet
from devstack.iothub.hub import wait_connected
from devstack.oidc import approve_device_code
from devstack.oidc.seed import find_account
from devstack.stack import LocalStack, StackConfig, free_loopback_address
from shared.accounts.ids import account_id
from shared.calendar.documents import ACCOUNT_DOC_ID
from shared.containers import CALENDARS, VEHICLES
from shared.device_messages import safe_id
from shared.stores.base import DocumentStore
from simulator.car import CarOptions, VirtualCar
from simulator.signin import SigninPrompt

CARS = ["signin-car-1", "signin-car-2", "signin-car-3"]
FAMILY_CAR, WORK_CAR, SPARE_CAR = CARS
ADA, BEN, CARLA = "ada@outlook.example", "ben@outlook.example", "carla@northwind.example"


@dataclass
class World:
    stack: LocalStack
    demo: DemoFleet
    cars: dict[str, VirtualCar]
    store: DocumentStore
    http: aiohttp.ClientSession
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def password(self) -> str:
        assert self.stack.oidc is not None
        return str(self.stack.oidc.seed["password"])

    def account_of(self, username: str) -> str:
        assert self.stack.oidc is not None
        account = find_account(self.stack.oidc.seed, username)
        return account_id(str(account["tenantId"]), str(account["oid"]))

    async def approve(self, prompt: SigninPrompt, username: str, decline: bool = False) -> None:
        """The person: opens the URL the car shows, types the code, signs in, accepts (or declines)."""
        assert self.stack.oidc is not None
        await approve_device_code(
            prompt.verification_uri, prompt.user_code, username, self.password, ca_file=self.stack.oidc.ca_file,
            decline=decline,
        )  # fmt: skip

    async def sign_in(self, car: str, profile: str, username: str) -> dict[str, Any]:
        prompt = await self.cars[car].sign_in(profile, "Europe/Berlin")
        await self.approve(prompt, username)
        outcome = await self.cars[car].signin_outcome(prompt, 60)
        assert outcome["status"] == "ok", outcome
        return outcome

    async def docs(self, user: str) -> list[dict[str, Any]]:
        found = await self.store.query(
            CALENDARS, "SELECT * FROM c WHERE c.userId = @u", {"@u": user}, partition_key=user
        )
        return [dict(d) for d in found]

    async def vehicle(self, car: str) -> dict[str, Any]:
        stored = await self.store.read(VEHICLES, car, safe_id(car))
        assert stored is not None
        return dict(stored.document)


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 40.0, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.3)
    pytest.fail(f"not within {seconds}s: {what}")


def agenda_ids(car: VirtualCar) -> list[str]:
    return [str(e["id"]) for e in car.log.agenda]


def profile_state(car: VirtualCar, profile: str) -> str | None:
    account = car.account or {}
    view = (account.get("profiles") or {}).get(profile) or {}
    return view.get("state")


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    config = StackConfig([], signin_code_seconds=25, signin_poll_seconds=2, graph_token_seconds=120).with_free_ports(
        free_loopback_address()
    )
    async with LocalStack(config) as stack, aiohttp.ClientSession() as http:
        assert stack.tls is not None
        demo = await prepare_fleet(http, stack, CARS, link_drivers=False)
        options = CarOptions(sample_seconds=0.5, samples_per_message=2, ask_for_meetings=False, trip_seconds=8.0)
        cars = {
            car: VirtualCar(n, demo.connection_strings[car], stack.tls.ca_pem, 11, options)
            for n, car in enumerate(CARS)
        }
        from shared.stores.cosmos import cosmos_store_from_env

        w = World(stack, demo, cars, cosmos_store_from_env.get(), http)
        w.tasks = [asyncio.create_task(c.run(time.time() + 900)) for c in cars.values()]
        assert await wait_connected(stack.hub, CARS, 30)
        for car in cars.values():
            await car.wait_awake()
        try:
            yield w
        finally:
            for task in w.tasks:
                task.cancel()
            await asyncio.gather(*w.tasks, return_exceptions=True)


async def test_a_personal_account_signs_in_gets_its_agenda_and_joins_without_teams(world: World) -> None:
    car = world.cars[FAMILY_CAR]
    prompt = await car.sign_in("1", "Europe/Berlin")
    assert prompt.verification_uri.endswith("/devicelogin")
    assert prompt.qr_text == prompt.verification_uri
    assert prompt.seconds_left() > 0
    again = await car.sign_in("1")  # a second auth.signin while one is pending: the same flow
    assert (again.flow_id, again.user_code, again.resumed) == (prompt.flow_id, prompt.user_code, True)
    await world.approve(prompt, ADA)
    outcome = await car.signin_outcome(prompt, 60)
    assert outcome["status"] == "ok"
    assert outcome["account"]["type"] == "personal"
    assert outcome["account"]["capabilities"] == {"calendar": True, "teams": False, "mail": True}
    await until(lambda: _true(profile_state(car, "1") == "signed_in"), what="twin account signed_in")
    assert (car.account or {})["active"] == "1"
    await until(lambda: _true(len(car.log.agenda) >= 2), what="Ada's agenda in the car")
    subjects = {e["subject"]: e for e in car.log.agenda}
    own_link = subjects["Call with Grace (Teams)"]
    joined = await car.join_meeting(own_link["id"])
    assert (joined["status"], joined["source"], joined["joinWebUrl"]) == ("ok", "event", own_link["joinUrl"])
    plain = await car.join_meeting(subjects["Dentist"]["id"])
    assert plain["error"]["code"] == "teams_unavailable"
    driver = (await world.vehicle(FAMILY_CAR))["driver"]
    assert driver["userId"] == world.account_of(ADA)
    assert driver["account"] == {"type": "personal", "teams": False}
    account = next(d for d in await world.docs(world.account_of(ADA)) if d["id"] == ACCOUNT_DOC_ID)
    text = orjson.dumps(account).decode()
    assert "refresh_token" not in text.lower()
    assert "secret" not in account["tokenCache"]  # sealed: an envelope, not MSAL's JSON
    assert set(account["tokenCache"]) >= {"wrappedKey", "ciphertext", "keyId"}


async def test_a_work_account_on_another_car_gets_a_teams_link(world: World) -> None:
    car = world.cars[WORK_CAR]
    outcome = await world.sign_in(WORK_CAR, "1", CARLA)
    assert outcome["account"]["capabilities"] == {"calendar": True, "teams": True, "mail": True}
    await until(lambda: _true(any(e["subject"] == "Supplier call" for e in car.log.agenda)), what="Carla's agenda")
    call = next(e for e in car.log.agenda if e["subject"] == "Supplier call")
    joined = await car.join_meeting(call["id"])
    assert joined["status"] == "ok"
    assert joined["source"] == "created"
    assert joined["joinWebUrl"].startswith("https://")
    sandbox = world.stack.graph_sandbox
    carla = find_account(world.stack.oidc.seed, CARLA)["oid"]  # type: ignore[union-attr]
    made = [r for r in sandbox.requests if "createOrGet" in r.path and r.caller == carla]
    assert len(made) == 1
    assert made[0].path.startswith("/v1.0/me/")  # the driver's own token, not the app's permission


async def test_switching_the_active_profile_switches_the_agenda(world: World) -> None:
    car = world.cars[FAMILY_CAR]
    ada_ids = agenda_ids(car)
    await world.sign_in(FAMILY_CAR, "2", BEN)
    await until(lambda: _true(bool(agenda_ids(car)) and agenda_ids(car) != ada_ids), what="Ben's agenda")
    assert (await world.vehicle(FAMILY_CAR))["driver"]["userId"] == world.account_of(BEN)
    selected = await car.select_profile("1")
    assert selected["account"]["username"] == ADA
    await until(lambda: _true(agenda_ids(car) == ada_ids), what="Ada's agenda back")
    assert (await world.vehicle(FAMILY_CAR))["driver"]["userId"] == world.account_of(ADA)
    await until(lambda: _true((car.account or {}).get("active") == "1"), what="twin active profile 1")


async def test_a_declined_code_and_an_expired_code_end_the_flow_and_say_why(world: World) -> None:
    car = world.cars[SPARE_CAR]
    declined = await car.sign_in("1")
    await world.approve(declined, BEN, decline=True)
    outcome = await car.signin_outcome(declined, 60)
    assert outcome["error"]["code"] == "signin_declined"
    expired = await car.sign_in("2")
    outcome = await car.signin_outcome(expired, 60)  # nobody enters the code: it expires after 25 s
    assert outcome["error"]["code"] == "signin_expired"
    assert (await car.signin_status(expired.flow_id))["signin"]["state"] == "expired"
    assert profile_state(car, "1") is None
    assert profile_state(car, "2") is None
    assert "driver" not in await world.vehicle(SPARE_CAR)


async def test_a_car_cannot_see_another_cars_flow(world: World) -> None:
    prompt = await world.cars[SPARE_CAR].sign_in("3")
    theirs = await world.cars[WORK_CAR].signin_status(prompt.flow_id)
    assert theirs["error"]["code"] == "flow_not_found"
    mine = await world.cars[SPARE_CAR].signin_status(prompt.flow_id)
    assert mine["signin"]["state"] == "pending"


async def test_a_revoked_refresh_token_means_reauth_required_without_a_retry_storm(world: World) -> None:
    car = world.cars[WORK_CAR]
    oidc = world.stack.oidc
    assert oidc is not None
    assert await oidc.revoke_grants(CARLA) >= 1  # a password reset
    await car.ask("calendar.refresh")
    await until(lambda: _true(profile_state(car, "1") == "reauth_required"), 60, "twin account reauth_required")
    refreshes = (await oidc.token_requests()).get(f"refresh_token {CARLA}", 0)
    carla = find_account(oidc.seed, CARLA)["oid"]

    def carlas_graph_calls() -> int:  # hers only: the other drivers' syncs in this module's stack go on meanwhile
        return sum(1 for r in world.stack.graph_sandbox.requests if r.caller == carla)

    sandbox_calls = carlas_graph_calls()
    for _ in range(3):
        assert (await car.ask("calendar.refresh"))["status"] == "ok"
    call = next(e for e in car.log.agenda if e["subject"] == "Supplier call")
    refused = await car.ask("meeting.join", {"eventId": call["id"] + "-other"})
    assert refused["status"] == "error"
    await asyncio.sleep(6)  # the sync jobs ran (the queue is polled every 2 s)
    assert (await oidc.token_requests()).get(f"refresh_token {CARLA}", 0) == refreshes  # never asked again
    assert carlas_graph_calls() == sandbox_calls
    driver = next(d for d in await world.docs(world.account_of(CARLA)) if d["id"] == "driver")
    assert driver["reauthRequired"] is True


async def test_a_tampered_token_cache_means_reauth_required_and_nothing_crashes(world: World) -> None:
    car = world.cars[FAMILY_CAR]
    ada = world.account_of(ADA)
    account = next(d for d in await world.docs(ada) if d["id"] == ACCOUNT_DOC_ID)
    sealed = dict(account["tokenCache"])
    sealed["ciphertext"] = sealed["ciphertext"][:-4] + ("AAAA" if not sealed["ciphertext"].endswith("AAAA") else "BBBB")
    await world.store.upsert(CALENDARS, {**account, "tokenCache": sealed})
    reply = await car.ask("calendar.refresh")
    assert reply["status"] == "ok"
    await until(lambda: _true(profile_state(car, "1") == "reauth_required"), 60, "reauth_required after tampering")
    assert profile_state(car, "2") == "signed_in"  # Ben's sign-in on the same car is untouched


async def test_signing_out_at_the_car_leaves_no_token_subscription_or_calendar(world: World) -> None:
    work = world.cars[WORK_CAR]
    carla = world.account_of(CARLA)
    assert await world.docs(carla)
    out = await work.sign_out("1")  # Carla needs to sign in again; she signs out instead
    assert out["signedOut"] is True

    async def gone() -> bool:
        return not await world.docs(carla)

    await until(gone, 40, "Carla's tokens, calendar and sync state deleted")
    sandbox = world.stack.graph_sandbox
    oid = find_account(world.stack.oidc.seed, CARLA)["oid"]  # type: ignore[union-attr]
    assert not [sid for sid, owner in sandbox.subscription_owners.items() if owner == oid]
    assert profile_state(work, "1") is None
    assert "driver" not in await world.vehicle(WORK_CAR)


async def test_a_personal_account_driver_sees_their_cars_in_their_own_session_and_signs_out(world: World) -> None:
    """Ben's own session: a token of his personal account for the platform's API (a tenant no brand accepts, so a
    guest without roles): his cars, and signing out of one; nothing else of the API is his."""
    ben = await ApiClient.as_user(world.http, world.stack, BEN)
    mine = await ben.call("GET", "/me/cars")
    assert [(c["vehicleId"], c["profile"], c["state"]) for c in mine["cars"]] == [(FAMILY_CAR, "2", "signed_in")]
    for path in ("/vehicles", "/me", f"/vehicles/{FAMILY_CAR}"):
        with pytest.raises(ApiError) as refused:
            await ben.call("GET", path)
        assert refused.value.status == 401
    await ben.call("DELETE", f"/me/cars/{FAMILY_CAR}", expect=(204,))
    await until(lambda: _true(profile_state(world.cars[FAMILY_CAR], "2") is None), what="Ben gone from the car")

    async def gone() -> bool:
        return not await world.docs(world.account_of(BEN))

    await until(gone, 40, "Ben's tokens, calendar and sync state deleted")
    assert (await ben.call("GET", "/me/cars"))["cars"] == []


async def _true(value: bool) -> bool:
    return value
