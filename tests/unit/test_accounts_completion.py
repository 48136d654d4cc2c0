"""A sign-in's completion cut short (shared/accounts/service.py, `_complete`): a device code is redeemed once (asked
again the provider refuses it: `bad_verification_code` at the local stand-in, `invalid_grant` from the scripted one
here), so a completion that fails or dies after the token response must be finished by the poll message's retry
without asking the provider again.

Every effect the completion has after the provider answered `signed_in` (a seal at Key Vault, a Cosmos DB write, a
twin patch, a reply, a queued job) is found by running a clean sign-in, then each one in turn is made to fail:
`unavailable` instead of it (Cosmos DB 429/503, Key Vault or IoT Hub 503), `timeout` after it landed (the caller
cannot tell whether it did), `crash` after it landed (the instance dies; nothing after it runs), and for an
etag-conditional replace `race` (another writer changed the document since it was read: 412). The host then does
what it does with a failed queue message: it comes back, waits out the poll's lease, runs again. Whatever the cut,
the end is the clean run's: one redemption, one account listing the car, the car's profile and driver, the flow
`signed_in`, the same documents and no more."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from shared.accounts import profiles as P
from shared.accounts import service as S
from shared.accounts.identity import PollOutcome
from shared.accounts.ids import SignedInAccount
from shared.accounts.service import PollMessage
from shared.accounts.vault import KeyUnavailableError
from shared.auth.policy import Role
from shared.calendar.documents import ACCOUNT_DOC_ID, DRIVER_ID
from shared.containers import CALENDARS, CONSENTS, MEMBERSHIPS, VEHICLES, partition_keys
from shared.errors import IoTHubError, StoreError
from shared.tenancy.documents import membership_id
from tests.accounts_support import CAR, OTHER_CAR, WORK_TENANT, FakeVault, ScriptedIdentity, World

COMPANY_DRIVER = "0e5d4c3b-2a19-4f8e-8d7c-6b5a49382716"
MEMBERSHIP = membership_id(Role.DRIVER, "contoso-motors", None, CAR)
MODES = ("unavailable", "timeout", "crash", "race")
ADA = ScriptedIdentity().account.id  # signed in on profile 1 before Carla in the `replacing` scene


class Crash(Exception):
    """The instance died: the coroutine is aborted where it stood (no retry in process catches this)."""


class Faults:
    """Counts the completion's effects (armed once the provider answered `signed_in`) and fails the `at`-th."""

    def __init__(self, at: int = 0, mode: str = "") -> None:
        self.at, self.mode = at, mode
        self.armed = False
        self.effects: list[str] = []
        self.fired = False

    async def effect(
        self,
        label: str,
        run: Callable[[], Awaitable[Any]],
        error: Exception,
        race: Callable[[], Awaitable[None]] | None = None,
    ) -> Any:
        if not self.armed:
            return await run()
        self.effects.append(label)
        if self.fired or len(self.effects) != self.at:
            return await run()
        self.fired = True
        if self.mode == "race":
            assert race is not None
            await race()  # another writer first: the write below meets a changed etag
            return await run()
        if self.mode == "unavailable":
            raise error
        await run()
        raise Crash(label) if self.mode == "crash" else error


def instrument(world: World, faults: Faults) -> None:
    """Route every effect of the world's service through `faults` (instance attributes shadow the methods)."""
    read, upsert = world.store.read, world.store.upsert

    def through(
        obj: Any, name: str, label: Callable[..., str], error: Exception, race: Callable[..., Any] | None = None
    ) -> None:
        original = getattr(obj, name)

        async def wrapped(*args: Any) -> Any:
            return await faults.effect(label(*args), lambda: original(*args), error, race and race(*args))

        setattr(obj, name, wrapped)

    def touch(container: str, doc: dict[str, Any], *_: Any) -> Callable[[], Awaitable[None]]:
        async def write_it_again() -> None:  # the same document written by someone else: a new etag
            key: Any = doc
            for part in partition_keys()[container].strip("/").split("/"):
                key = key[part]
            stored = await read(container, str(key), doc["id"])
            assert stored is not None
            await upsert(container, stored.document)

        return write_it_again

    cosmos, iothub = StoreError("503 from Cosmos DB"), IoTHubError("503 from IoT Hub")
    for op in ("create", "replace", "upsert"):
        through(world.store, op, lambda c, doc, *_, op=op: f"{op} {c}/{doc.get('kind') or doc['id']}", cosmos, touch)
    through(world.store, "delete", lambda c, *_: f"delete {c}", cosmos)
    for op in ("patch_desired", "patch_module_desired"):
        through(world.gateway, op, lambda *a, op=op: f"{op} {','.join(sorted(a[-1]))}", iothub)
    through(world.jobs, "enqueue", lambda *_: "enqueue sync job", StoreError("503 from the queue"))
    through(world.service.vault, "seal", lambda *_: "seal token cache", KeyUnavailableError("503 from Key Vault"))
    through(world, "reply", lambda *_: "reply", iothub)
    poll = world.identity.poll

    async def redeem(authority: str, flow: dict[str, Any]) -> PollOutcome:
        outcome = await poll(authority, flow)
        faults.armed = faults.armed or outcome.status == "signed_in"
        return outcome

    world.identity.poll = redeem  # type: ignore[method-assign]


def carla() -> SignedInAccount:
    return SignedInAccount(
        WORK_TENANT, "6b3f0e2a-9c41-4d7e-8a25-0f1e2d3c4b5a", "carla@northwind.example", "Carla",
        frozenset({"Calendars.Read", "OnlineMeetings.ReadWrite"}), b"cache-carla",
    )  # fmt: skip


async def scene(name: str) -> World:
    """`first`: nobody drives the car. `replacing`: Ada, signed in on profile 1, drives it. `company`: a company
    driver with a Driver membership drives it. Then Carla's flow on profile 1 is started and about to succeed."""
    world = World()
    await world.register(CAR, OTHER_CAR)
    if name == "replacing":
        await world.sign_in(CAR, "1", "r0")
    elif name == "company":
        await world.store.upsert(MEMBERSHIPS, {"id": MEMBERSHIP, "principalId": COMPANY_DRIVER, "kind": "membership"})
        stored = await world.store.read(VEHICLES, CAR, CAR)
        assert stored is not None
        driver = {"userId": COMPANY_DRIVER, "upn": "kim@contoso.example"}
        await world.store.upsert(VEHICLES, {**stored.document, "driver": driver})
    world.identity.account = carla()
    world.replies.clear()
    await world.service.start(CAR, "contoso-motors", "1", "r1", "Europe/Berlin")
    world.identity.answers = ["signed_in"]
    return world


async def run_to_the_end(world: World) -> None:
    """The poll queue as the host runs it until it is empty: a message that failed comes back after the visibility
    timeout (30 s, host.json), within the poll's lease, so it waits the lease out as a delayed copy, then runs."""
    for _ in range(10):
        if not world.polls.messages:
            return
        world.now += dt.timedelta(seconds=max(delay for _, delay in world.polls.messages))
        for raw in world.polls.drain():
            message = PollMessage.parse(raw)
            assert message is not None
            try:
                await world.service.poll(message, world.reply)
            except (StoreError, IoTHubError, Crash):
                world.polls.messages.append((raw, 30))
    raise AssertionError("the poll queue never emptied")


async def inventory(world: World) -> dict[str, list[str]]:
    """Which documents exist, per container (a duplicate or a stray one would show)."""
    out = {}
    for container in sorted(partition_keys()):
        docs = await world.store.query(container, "SELECT * FROM c")
        out[container] = sorted(str(d["id"]) for d in docs)
    return out


def effects_of(name: str) -> list[str]:
    """The effects of a clean completion in scene `name` (found by running one)."""

    async def clean() -> list[str]:
        world = await scene(name)
        faults = Faults()
        instrument(world, faults)
        await run_to_the_end(world)
        return faults.effects

    return asyncio.run(clean())


SCENES = ("first", "replacing", "company")
EFFECTS = {name: effects_of(name) for name in SCENES}
CASES = [
    pytest.param(name, at, mode, id=f"{name}-{at:02d}-{label}-{mode}")
    for name in SCENES
    for at, label in enumerate(EFFECTS[name], start=1)
    for mode in MODES
    # Dying between the token response and the first write of its record cannot be recovered: the tokens were
    # only in that process (a transient failure there is retried in process: `unavailable` and `timeout`).
    if not (mode == "crash" and label == "seal token cache") and (mode != "race" or label.startswith("replace "))
]


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "RECORD_RETRY_SECONDS", (0.0, 0.0), raising=False)


async def assert_signed_in_once(world: World, name: str, clean: Mapping[str, list[str]]) -> None:
    carla_id = carla().id
    assert world.identity.polls.count("dc-2" if name == "replacing" else "dc-1") == 1  # one token request
    profiles = await P.read(world.store, CAR)
    entry = profiles["profiles"]["1"]
    assert (entry["accountId"], entry["state"], profiles["active"]) == (carla_id, "signed_in", "1")
    assert entry["flow"]["state"] == "signed_in"
    assert not {"sealed", "redeemed", "linked", "leaseUntil"} & set(entry["flow"])  # no tokens left on the flow
    account = await world.doc(CALENDARS, carla_id, ACCOUNT_DOC_ID)
    assert account is not None
    assert account["state"] == "signed_in"
    assert account["cars"] == {CAR: {"profile": "1", "since": entry["since"]}}
    assert await FakeVault().open(account["tokenCache"], carla_id) == b"cache-carla"
    assert (await world.vehicle(CAR))["driver"]["userId"] == carla_id
    assert (await world.doc(CALENDARS, carla_id, DRIVER_ID))["vehicleIds"] == [CAR]  # type: ignore[index]
    records = await world.store.query(CONSENTS, "SELECT * FROM c", {}, partition_key=CAR)
    granted = [r for r in records if r.get("userId") == carla_id and r.get("kind") == "consentRecord"]
    assert granted
    assert all(r["granted"] and r["channel"] == "car_screen" and r["seq"] == 1 for r in granted)
    bodies = [body for _, rid, body in world.replies if rid == "r1"]
    assert bodies
    assert all(b["status"] == "ok" and b["signin"]["state"] == "signed_in" for b in bodies)
    twin = world.gateway.desired[CAR]["account"]
    assert twin["profiles"]["1"]["username"] == "carla@northwind.example"
    assert any(job.user_id == carla_id for job, _ in world.jobs.jobs)
    if name == "replacing":  # Ada left the car: signed out, no agenda sent there
        ada = await world.doc(CALENDARS, ADA, ACCOUNT_DOC_ID)
        assert ada is not None
        assert (ada["cars"], ada["state"]) == ({}, "signed_out")
        assert (await world.doc(CALENDARS, ADA, DRIVER_ID))["vehicleIds"] == []  # type: ignore[index]
    if name == "company":  # the former driver's membership went
        assert await world.store.read(MEMBERSHIPS, COMPANY_DRIVER, MEMBERSHIP) is None
    assert await inventory(world) == clean


CLEAN_INVENTORY: dict[str, dict[str, list[str]]] = {}


async def clean_inventory(name: str) -> dict[str, list[str]]:
    if name not in CLEAN_INVENTORY:
        world = await scene(name)
        await run_to_the_end(world)
        await assert_signed_in_once(world, name, await inventory(world))
        CLEAN_INVENTORY[name] = await inventory(world)
    return CLEAN_INVENTORY[name]


def test_the_completion_has_the_steps_it_must_survive() -> None:
    """The cuts below cover every step: the record, the profile, the account, the car, consent, replies, twin, and
    (the tests below count on it) the redemption's record then the profile's link come first."""
    first = EFFECTS["first"]
    assert first[:3] == ["seal token cache", "replace signins/carProfiles", "replace signins/carProfiles"]
    for label in ("create calendars/account", "create consents/consentRecord", "reply", "patch_desired account"):
        assert label in first
    assert "replace vehicles/car-1" in first
    assert len(EFFECTS["replacing"]) > len(first)  # Ada leaves the car too


@pytest.mark.parametrize(("name", "at", "mode"), CASES)
async def test_a_completion_cut_short_at_any_step_is_finished_once_by_the_retry(name: str, at: int, mode: str) -> None:
    clean = await clean_inventory(name)
    world = await scene(name)
    faults = Faults(at, mode)
    instrument(world, faults)
    await run_to_the_end(world)
    assert faults.fired
    assert faults.effects[at - 1] == EFFECTS[name][at - 1]
    await assert_signed_in_once(world, name, clean)


@pytest.mark.parametrize("at", [2, 4], ids=["after-the-record", "after-the-account"])
async def test_a_completion_that_keeps_failing_ends_failed_after_its_window_and_is_undone(at: int) -> None:
    """Nothing retries forever: past the window the car is told `signin_failed` and left as before the sign-in."""
    world = await scene("replacing")
    [(raw, _)] = world.polls.messages
    message = PollMessage.parse(raw)
    assert message is not None
    instrument(world, Faults(at, "crash"))
    with pytest.raises(Crash):
        await world.service.poll(message, world.reply)
    world.now += S.COMPLETION_WINDOW
    assert await world.service.poll(message, world.reply) == "failed"
    assert world.identity.polls.count("dc-2") == 1
    [(_, _, body)] = [r for r in world.replies if r[1] == "r1"]
    assert body["error"]["code"] == "signin_failed"
    profiles = await P.read(world.store, CAR)
    if at == 2:  # only the record was written: the profile keeps Ada
        assert profiles["profiles"]["1"]["accountId"] == ADA
        assert not {"sealed", "redeemed", "linked", "leaseUntil"} & set(profiles["profiles"]["1"]["flow"])
    else:  # the profile had taken Carla (and dropped Ada): both are signed out of the car
        assert profiles["profiles"] == {}
        assert "driver" not in await world.vehicle(CAR)
        assert await world.service.cars_of(ADA) == []
    assert await world.service.cars_of(carla().id) == []


async def test_the_car_asking_again_while_a_completion_is_cut_short_resumes_it_past_the_codes_expiry() -> None:
    world = await scene("first")
    [(raw, _)] = world.polls.messages
    message = PollMessage.parse(raw)
    assert message is not None
    instrument(world, Faults(2, "crash"))  # right after the redemption's record
    with pytest.raises(Crash):
        await world.service.poll(message, world.reply)
    world.now += dt.timedelta(minutes=16)  # the device code's 15 minutes are over
    again = await world.service.start(CAR, "contoso-motors", "1", "r2", "Europe/Berlin")
    assert again["flowId"] == message.flow_id  # not a new flow over the redeemed one
    assert world.identity.started == 1
    assert await world.service.poll(message, world.reply) == "signed_in"
    assert sorted(rid for _, rid, b in world.replies if b["status"] == "ok") == ["r1", "r2"]
    assert world.identity.polls == ["dc-1"]


async def test_a_sign_out_while_a_completion_is_cut_short_leaves_nothing_of_the_account_on_the_car() -> None:
    world = await scene("first")
    [(raw, _)] = world.polls.messages
    message = PollMessage.parse(raw)
    assert message is not None
    instrument(world, Faults(3, "crash"))  # the profile holds Carla; her account does not list the car yet
    with pytest.raises(Crash):
        await world.service.poll(message, world.reply)
    assert await world.service.sign_out(CAR, "1") is True
    world.now += dt.timedelta(seconds=S.LEASE_SECONDS + 1)
    assert await world.service.poll(message, world.reply) == "skipped"
    assert (await P.read(world.store, CAR))["profiles"] == {}
    assert "driver" not in await world.vehicle(CAR)
    assert await world.service.cars_of(carla().id) == []
    assert world.identity.polls == ["dc-1"]


async def test_the_scripted_provider_refuses_a_code_redeemed_already() -> None:
    """The premise, as the identity provider behaves (tests/integration/test_oidc_device_flow.py): a second token
    request for a redeemed device code ends the flow `failed`."""
    identity = ScriptedIdentity()
    identity.answers = ["signed_in"]
    flow = {"device_code": "dc-1", "interval": 5}
    assert (await identity.poll("authority", flow)).status == "signed_in"
    again = await identity.poll("authority", flow)
    assert (again.status, again.error) == ("failed", "invalid_grant")
