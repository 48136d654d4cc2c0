"""Driver accounts at the edges of sign-out, company links, erasure and token refresh (review fixes): a sign-out
cut short is finished by its retry, a driver's own sign-out never signs out another driver, a company link ends
an account's agenda on the car, an erased last car signs the account out, a refresh never overwrites a newer
sign-in's tokens, and a sign-out's clean-up gets the token it needs to delete the Graph subscription."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import pytest

from shared.accounts import profiles as P
from shared.accounts.erasure import forget_car
from shared.accounts.identity import Refreshed
from shared.accounts.ids import SignedInAccount
from shared.accounts.tokens import DelegatedTokenSource
from shared.calendar.config import CalendarSettings
from shared.calendar.documents import ACCOUNT_DOC_ID, DRIVER_ID, SUBSCRIPTION_ID
from shared.calendar.sync import CalendarSync
from shared.containers import CALENDARS, SIGNINS
from shared.drivers.link import DriverLink, DriverLinks
from shared.errors import StoreError
from shared.graph.base import GraphClient
from shared.graph.exceptions import ReauthRequiredError
from shared.graph.types import DeltaPage, OnlineMeeting, Subscription
from tests.accounts_support import CAR, OTHER_CAR, WORK_TENANT, FakeVault, ScriptedIdentity, World

COMPANY_DRIVER = DriverLink("2b9d6f4e-1c3a-4e5f-8a7b-9c0d1e2f3a4b", "kim@contoso.example", "Europe/Berlin", True, True)


@pytest.fixture
async def world() -> World:
    w = World()
    await w.register(CAR, OTHER_CAR)
    return w


def carla() -> SignedInAccount:
    return SignedInAccount(
        WORK_TENANT, "6b3f0e2a-9c41-4d7e-8a25-0f1e2d3c4b5a", "carla@northwind.example", "Carla",
        frozenset({"Calendars.Read"}), b"cache-carla",
    )  # fmt: skip


async def signed_out_everywhere(w: World, acct: str) -> None:
    account = await w.doc(CALENDARS, acct, ACCOUNT_DOC_ID)
    assert account is not None
    assert account["state"] == "signed_out"
    assert account["cars"] == {}
    assert await w.service.cars_of(acct) == []
    driver = await w.doc(CALENDARS, acct, DRIVER_ID)
    assert driver is not None
    assert driver["consent"]["calendar"] is False
    assert driver["vehicleIds"] == []
    assert any(job.user_id == acct and job.reason == "signout" for job, _ in w.jobs.jobs)


# ---- 1. sign-out ----


async def test_a_sign_out_cut_short_by_a_transient_error_is_finished_by_its_retry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id
    withdraw = world.service._withdraw_calendar
    calls = []

    async def flaky(vehicle_id: str, account_id: str, channel: str) -> None:
        calls.append(account_id)
        if len(calls) == 1:
            raise StoreError("503 from the store")
        await withdraw(vehicle_id, account_id, channel)

    monkeypatch.setattr(world.service, "_withdraw_calendar", flaky)
    with pytest.raises(StoreError):
        await world.service.sign_out(CAR, "1")
    assert await world.service.sign_out(CAR, "1") is True  # the retry (the request is redelivered)
    assert "driver" not in await world.vehicle(CAR)
    await signed_out_everywhere(world, acct)
    assert (await world.doc(SIGNINS, CAR, P.DOC_ID))["profiles"] == {}  # type: ignore[index]
    assert world.gateway.desired[CAR]["account"]["profiles"] == {}  # a null removed it


async def test_a_drivers_own_sign_out_cut_short_at_the_profile_is_finished_by_its_retry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DELETE /me/cars/V failing at its last step (the profile), after the account already left the car: the
    retry finds the car gone from the account but the profile still holding it, and finishes the sign-out."""
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id
    update = P.update
    failed: list[bool] = []

    async def flaky(store: Any, vehicle_id: str, change: Any) -> Any:
        if not failed:
            failed.append(True)
            raise StoreError("503 from the store")
        return await update(store, vehicle_id, change)

    monkeypatch.setattr(P, "update", flaky)
    with pytest.raises(StoreError):
        await world.service.sign_out_of(acct, CAR)
    assert await world.service.sign_out_of(acct, CAR) is True  # the retry
    await signed_out_everywhere(world, acct)
    assert (await world.doc(SIGNINS, CAR, P.DOC_ID))["profiles"] == {}  # type: ignore[index]


async def test_signing_out_of_a_car_takes_the_cars_routes_to_the_accounts_meetings(world: World) -> None:
    """The car's travel state holds the account's meeting labels and routes from the car's positions: derived
    from the account's calendar, it goes when the account leaves the car (the signout job names no car)."""
    from shared.containers import TRAVEL
    from shared.travel.stores import TRAVEL_DOC_ID

    await world.sign_in(CAR, "1")
    await world.store.upsert(TRAVEL, {"id": TRAVEL_DOC_ID, "vehicleId": CAR, "kind": "travel", "state": {"v": 1}})
    await world.store.upsert(TRAVEL, {"id": TRAVEL_DOC_ID, "vehicleId": OTHER_CAR, "kind": "travel", "state": {}})
    assert await world.service.sign_out(CAR, "1") is True
    assert await world.store.read(TRAVEL, CAR, TRAVEL_DOC_ID) is None
    assert await world.store.read(TRAVEL, OTHER_CAR, TRAVEL_DOC_ID) is not None  # not the account's car


async def test_a_sign_in_completing_during_a_sign_out_is_signed_out_too(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.sign_in(CAR, "1")
    ada = world.identity.account.id
    read = P.read
    raced: list[bool] = []

    async def read_then_race(store: Any, vehicle_id: str) -> dict[str, Any]:
        doc = await read(store, vehicle_id)
        if not raced:  # between the sign-out's read and its write, Carla's flow on the same profile completes
            raced.append(True)
            world.identity.account = carla()
            await world.sign_in(CAR, "1", "r2")
        return doc

    monkeypatch.setattr(P, "read", read_then_race)
    assert await world.service.sign_out(CAR, "1") is True
    carla_id = world.identity.account.id
    assert "driver" not in await world.vehicle(CAR)  # not Carla's car with nobody on the profile
    await signed_out_everywhere(world, carla_id)
    await signed_out_everywhere(world, ada)
    assert (await world.doc(SIGNINS, CAR, P.DOC_ID))["profiles"] == {}  # type: ignore[index]


async def test_a_driver_signing_out_of_a_car_from_their_session_never_signs_out_its_next_driver(
    world: World,
) -> None:
    await world.sign_in(CAR, "1")
    ada = world.identity.account.id
    world.identity.account = carla()
    await world.sign_in(CAR, "1", "r2")  # Carla took profile 1
    carla_id = world.identity.account.id
    stored = await world.store.read(CALENDARS, ada, ACCOUNT_DOC_ID)  # Ada's list still names the car (a
    assert stored is not None  # detach cut short)
    doc = dict(stored.document)
    doc.update({"cars": {CAR: {"profile": "1", "since": "2026-12-06T09:00:00Z"}}, "state": "signed_in"})
    await world.store.upsert(CALENDARS, doc)

    assert await world.service.sign_out_of(ada, CAR) is True  # DELETE /me/cars/{CAR} by Ada
    assert (await world.doc(SIGNINS, CAR, P.DOC_ID))["profiles"]["1"]["accountId"] == carla_id  # type: ignore[index]
    assert (await world.vehicle(CAR))["driver"]["userId"] == carla_id
    assert [c["vehicleId"] for c in await world.service.cars_of(carla_id)] == [CAR]
    assert await world.service.cars_of(ada) == []


# ---- 2. a company driver link replaces a signed-in account ----


@pytest.mark.parametrize("change", ["link", "unlink"])
async def test_an_operator_link_change_ends_the_accounts_agenda_on_the_car(world: World, change: str) -> None:
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id
    world.jobs.jobs.clear()
    links = DriverLinks(world.store, world.jobs, lambda: world.now, world.gateway)
    if change == "link":
        await links.link(CAR, COMPANY_DRIVER)
    else:
        assert await links.unlink(CAR) is True
    driver = await world.doc(CALENDARS, acct, DRIVER_ID)
    assert driver is not None
    assert driver["vehicleIds"] == []  # the sync no longer sends Ada's agenda to the car
    profiles = await world.doc(SIGNINS, CAR, P.DOC_ID)
    assert profiles is not None
    assert profiles["active"] is None
    assert profiles["profiles"]["1"]["accountId"] == acct  # still signed in on her profile
    assert world.gateway.desired[CAR]["account"].get("active") is None  # a null removes it
    assert (CAR, {"agenda": None}) in [(v, {"agenda": p.get("agenda")}) for v, p in world.gateway.patches]
    assert not any(job.user_id == acct for job, _ in world.jobs.jobs)


# ---- 3. erasure of an account's last car ----


@pytest.mark.parametrize("queued", [True, False])
async def test_erasing_an_accounts_last_car_signs_the_account_out(world: World, queued: bool) -> None:
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id
    world.jobs.jobs.clear()
    if queued:
        assert await forget_car(world.store, CAR, world.jobs) == 1
        await signed_out_everywhere(world, acct)
    else:  # no queue given: the timer's next job for the driver document forgets the calendar
        assert await forget_car(world.store, CAR) == 1
        account = await world.doc(CALENDARS, acct, ACCOUNT_DOC_ID)
        assert account is not None
        assert account["state"] == "signed_out"
        assert (await world.doc(CALENDARS, acct, DRIVER_ID))["consent"]["calendar"] is False  # type: ignore[index]


async def test_erasing_one_of_two_cars_keeps_the_account_signed_in(world: World) -> None:
    await world.sign_in(CAR, "1")
    await world.sign_in(OTHER_CAR, "1", "r2")
    acct = world.identity.account.id
    world.jobs.jobs.clear()
    assert await forget_car(world.store, OTHER_CAR, world.jobs) == 1
    assert (await world.doc(CALENDARS, acct, ACCOUNT_DOC_ID))["state"] == "signed_in"  # type: ignore[index]
    assert (await world.doc(CALENDARS, acct, DRIVER_ID))["vehicleIds"] == [CAR]  # type: ignore[index]
    assert not any(job.reason == "signout" for job, _ in world.jobs.jobs)


# ---- 4. a refresh racing a new sign-in ----


class RacingIdentity(ScriptedIdentity):
    """While the refresh is out at Entra, the driver signs in again (a newer cache is stored)."""

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store

    async def refresh(
        self, authority: str, token_cache: bytes, home_account_id: str, scopes: Sequence[str]
    ) -> Refreshed:
        self.refreshes += 1
        stored = await self.store.read(CALENDARS, self.account.id, ACCOUNT_DOC_ID)
        newer = {**stored.document, "tokenCache": await FakeVault().seal(b"cache-new-signin", self.account.id)}
        await self.store.upsert(CALENDARS, newer)
        return Refreshed("access-token", 3600, b"cache-rotated-from-old")


async def test_a_refresh_racing_a_new_sign_in_keeps_the_newer_token_cache(world: World) -> None:
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id
    identity = RacingIdentity(world.store)
    tokens = DelegatedTokenSource(world.store, FakeVault(), identity, world.service.mark_reauth_required)
    assert await tokens.access_token(acct) == "access-token"
    account = await world.doc(CALENDARS, acct, ACCOUNT_DOC_ID)
    assert account is not None
    assert base64.b64decode(account["tokenCache"]["data"]) == b"cache-new-signin"


async def test_a_rotated_cache_is_stored_when_nothing_changed_meanwhile(world: World) -> None:
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id

    class Rotating(ScriptedIdentity):
        async def refresh(self, *args: Any) -> Refreshed:
            return Refreshed("access-token", 3600, b"cache-rotated")

    tokens = DelegatedTokenSource(world.store, FakeVault(), Rotating(), world.service.mark_reauth_required)
    assert await tokens.access_token(acct) == "access-token"
    account = await world.doc(CALENDARS, acct, ACCOUNT_DOC_ID)
    assert base64.b64decode(account["tokenCache"]["data"]) == b"cache-rotated"  # type: ignore[index]


# ---- 5. the sign-out's subscription delete gets its token ----


class TokenGraph(GraphClient):
    """Deletes subscriptions as the delegated client does: with the account's own token."""

    def __init__(self, tokens: DelegatedTokenSource) -> None:
        self.tokens = tokens
        self.deleted: list[tuple[str, str]] = []

    async def calendar_delta(self, user_id: str, **_: Any) -> DeltaPage:
        raise AssertionError("no calendar sync for a signed-out account")

    async def create_or_get_meeting(self, *args: Any) -> OnlineMeeting:
        raise AssertionError("no meetings here")

    async def create_subscription(self, *args: Any) -> Subscription:
        raise AssertionError("no new subscription for a signed-out account")

    async def renew_subscription(self, *args: Any) -> Subscription:
        raise AssertionError("no renewal for a signed-out account")

    async def reauthorize_subscription(self, *args: Any) -> None:
        raise AssertionError("no reauthorization for a signed-out account")

    async def delete_subscription(self, user_id: str, subscription_id: str) -> None:
        await self.tokens.access_token(user_id)
        self.deleted.append((user_id, subscription_id))


async def test_the_signout_job_deletes_the_subscription_with_the_signed_out_accounts_token(world: World) -> None:
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id
    subscription = {"id": SUBSCRIPTION_ID, "userId": acct, "kind": "subscription", "subscriptionId": "sub-1",
                    "expiresAt": "2026-12-09T09:00:00Z"}  # fmt: skip
    await world.store.upsert(CALENDARS, subscription)
    world.jobs.jobs.clear()
    assert await world.service.sign_out(CAR, "1") is True
    tokens = DelegatedTokenSource(world.store, FakeVault(), world.identity, world.service.mark_reauth_required)
    graph = TokenGraph(tokens)
    sync = CalendarSync(world.store, graph, world.gateway, world.jobs, CalendarSettings(), lambda: world.now)
    [job] = [job for job, _ in world.jobs.jobs if job.reason == "signout"]
    await sync.run(job)
    assert graph.deleted == [(acct, "sub-1")]
    assert await world.doc(CALENDARS, acct, SUBSCRIPTION_ID) is None  # no renewal job for it any more
    assert await world.doc(CALENDARS, acct, ACCOUNT_DOC_ID) is None  # then the tokens went
    with pytest.raises(ReauthRequiredError):  # and nothing is served after
        await tokens.access_token(acct)


async def test_a_signed_out_account_gets_no_token_once_nothing_is_left_to_clean_up(world: World) -> None:
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id
    assert await world.service.sign_out(CAR, "1") is True
    tokens = DelegatedTokenSource(world.store, FakeVault(), world.identity, world.service.mark_reauth_required)
    with pytest.raises(ReauthRequiredError):  # no subscription: no Graph call needs the token
        await tokens.access_token(acct)
    assert world.identity.refreshes == 0
    assert (await world.doc(CALENDARS, acct, ACCOUNT_DOC_ID))["state"] == "signed_out"  # type: ignore[index]


# ---- a loopback sign-in authority outside the local stack ----


def test_a_loopback_authority_is_refused_without_the_local_stacks_ca_before_anything_is_sent() -> None:
    """A brand's `signinAuthority` pointing at loopback would, in Azure, hand device codes and refresh tokens to
    whatever listens on the instance: only the local stack (its CA configured, AUTH_CA_BUNDLE) may use one."""
    from shared.accounts.identity import MsalIdentity
    from shared.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="local stack only"):
        MsalIdentity("client-id")._app("https://localhost:8443/contoso", None)
    with pytest.raises(ConfigurationError, match="local stack only"):
        MsalIdentity("client-id")._app("https://127.0.0.1/contoso", None)


# ---- an account holds one profile per car ----


async def test_signing_in_on_another_profile_of_the_same_car_moves_the_account_there(world: World) -> None:
    """The account document keeps one profile per car: signed in on profile 2 after profile 1, the account leaves
    profile 1 (whose name and username would otherwise stay on the car, signed in nowhere, past sign-out and
    erasure)."""
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id
    await world.sign_in(CAR, "2", "r2")
    profiles = await P.read(world.store, CAR)
    assert [p for p, e in profiles["profiles"].items() if e.get("accountId") == acct] == ["2"]
    assert await world.service.sign_out(CAR, "2") is True
    profiles = await P.read(world.store, CAR)
    assert not any(e.get("accountId") == acct for e in profiles["profiles"].values())
    await signed_out_everywhere(world, acct)


async def test_signing_out_clears_the_agenda_from_the_edge_modules_twin_too(world: World) -> None:
    """The module keeps its copy of the agenda for the driver offline: a sign-out takes it from there too."""
    from shared.collection.service import edge_module_id

    await world.sign_in(CAR, "1")
    await world.gateway.patch_module_desired(CAR, edge_module_id(), {"agenda": {"events": [{"id": "x"}]}})
    assert await world.service.sign_out(CAR, "1") is True
    assert "agenda" not in world.gateway.module_desired[CAR, edge_module_id()]
