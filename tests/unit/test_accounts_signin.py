"""Driver sign-in from the car (shared/accounts/service.py, tokens.py): flows, polls, profiles, sign-out and
reauthentication, against the in-memory store, gateway and queues with a scripted identity provider. The real
MSAL, Key Vault and Graph run in tests/integration and tests/e2e."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.accounts import profiles as P
from shared.accounts.erasure import forget_account, forget_car
from shared.accounts.identity import ReauthNeededError
from shared.accounts.ids import CONSUMER_TENANT, SignedInAccount, account_id
from shared.accounts.service import PollMessage
from shared.accounts.tokens import DelegatedTokenSource
from shared.auth.policy import Role
from shared.calendar.documents import ACCOUNT_DOC_ID, DRIVER_ID
from shared.containers import CALENDARS, CONSENTS, MEMBERSHIPS, SIGNINS, VEHICLES
from shared.device_messages import canonical_time
from shared.graph.exceptions import ReauthRequiredError
from shared.tenancy.documents import membership_id
from tests.accounts_support import CAR, OTHER_CAR, WORK_TENANT, FakeVault, World


@pytest.fixture
async def world() -> World:
    w = World()
    await w.register(CAR, OTHER_CAR)
    return w


async def test_signin_answers_with_the_code_and_queues_one_poll_after_the_interval(world: World) -> None:
    view = await world.service.start(CAR, "contoso-motors", "1", "r1")
    assert view["state"] == "pending"
    assert view["userCode"] == "CODE1"
    assert view["interval"] == 5
    assert view["qr"] == {"text": "https://microsoft.com/devicelogin"}
    assert "device_code" not in orjson.dumps(view).decode()
    assert "dc-1" not in orjson.dumps(view).decode()
    [(raw, delay)] = world.polls.messages
    assert delay == 5
    assert PollMessage.parse(raw) == PollMessage(CAR, "1", view["flowId"], 0)
    stored = await world.doc(SIGNINS, CAR, P.DOC_ID)
    assert stored is not None
    assert "dc-1" not in orjson.dumps(stored).decode()
    assert world.gateway.desired[CAR]["account"]["profiles"]["1"]["state"] == "pending"


async def test_a_second_signin_while_one_is_pending_returns_the_same_flow(world: World) -> None:
    first = await world.service.start(CAR, "contoso-motors", "1", "r1")
    again = await world.service.start(CAR, "contoso-motors", "1", "r2")
    assert world.identity.started == 1
    assert again["flowId"] == first["flowId"]
    assert again["userCode"] == first["userCode"]
    assert again["resumed"]
    world.identity.answers = ["signed_in"]
    await world.run_polls()
    assert sorted(rid for _, rid, _ in world.replies) == ["r1", "r2"]  # both requests learn the outcome


async def test_polls_follow_pending_and_slow_down_and_a_stale_message_never_polls(world: World) -> None:
    view = await world.service.start(CAR, "contoso-motors", "1", "r1")
    [(first, _)] = world.polls.messages
    world.identity.answers = ["pending"]
    assert await world.run_polls() == ["pending"]
    [(second, delay)] = world.polls.messages
    assert delay == 5
    assert PollMessage.parse(second) == PollMessage(CAR, "1", view["flowId"], 1)
    # The first message delivered again (at-least-once queue): stale, no token request.
    assert await world.service.poll(PollMessage.parse(first), world.reply) == "skipped"  # type: ignore[arg-type]
    assert len(world.identity.polls) == 1
    world.identity.answers = ["slow_down"]
    assert await world.run_polls() == ["slow_down"]
    [(_, delay)] = world.polls.messages
    assert delay == 10
    flow = (await world.doc(SIGNINS, CAR, P.DOC_ID))["profiles"]["1"]["flow"]  # type: ignore[index]
    assert flow["interval"] == 10
    assert "leaseUntil" not in flow


async def test_a_poller_that_died_holding_the_lease_is_taken_over_after_it(world: World) -> None:
    await world.service.start(CAR, "contoso-motors", "1", "r1")
    [(raw, _)] = world.polls.messages
    message = PollMessage.parse(raw)
    assert message is not None

    def claim_and_die(doc: dict[str, Any]) -> None:  # what a claim does, then nothing (the instance crashed)
        flow = doc["profiles"]["1"]["flow"]
        flow["polls"] = 1
        flow["leaseUntil"] = canonical_time(world.now + dt.timedelta(seconds=60))

    await P.update(world.store, CAR, claim_and_die)
    world.polls.drain()
    assert await world.service.poll(message, world.reply) == "waiting"  # the redelivery waits for the lease
    [(again, delay)] = world.polls.messages
    assert delay >= 60
    assert world.identity.polls == []
    world.now += dt.timedelta(seconds=61)
    world.polls.drain()
    world.identity.answers = ["signed_in"]
    assert await world.service.poll(PollMessage.parse(again), world.reply) == "signed_in"  # type: ignore[arg-type]


async def test_a_signed_in_personal_account_drives_the_car_with_its_own_calendar_and_consent(world: World) -> None:
    await world.sign_in(CAR, "1")
    acct = account_id(CONSUMER_TENANT, world.identity.account.object_id)
    account = await world.doc(CALENDARS, acct, ACCOUNT_DOC_ID)
    assert account is not None
    assert account["state"] == "signed_in"
    assert account["type"] == "personal"
    assert account["capabilities"] == {"calendar": True, "teams": False, "mail": False}
    assert account["tokenCache"]["ctx"] == acct
    assert b"cache-ada" not in orjson.dumps(account)
    vehicle = await world.vehicle(CAR)
    assert vehicle["driver"]["userId"] == acct
    assert vehicle["driver"]["account"] == {"type": "personal", "teams": False}
    assert vehicle["driver"]["timeZone"] == "Europe/Berlin"
    assert vehicle["consent"]["calendar"] is True
    driver = await world.doc(CALENDARS, acct, DRIVER_ID)
    assert driver is not None
    assert driver["vehicleIds"] == [CAR]
    assert driver["consent"]["calendar"] is True
    records = await world.store.query(CONSENTS, "SELECT * FROM c", {}, partition_key=CAR)
    assert any(r.get("channel") == "car_screen" and r.get("granted") is True for r in records)
    [(car, rid, body)] = world.replies
    assert (car, rid, body["status"]) == (CAR, "r1", "ok")
    assert body["account"]["username"] == "ada@outlook.example"
    twin = world.gateway.desired[CAR]["account"]
    assert twin["active"] == "1"
    assert twin["profiles"]["1"]["state"] == "signed_in"
    assert "tokenCache" not in orjson.dumps(twin).decode()
    assert acct not in orjson.dumps(twin).decode()
    assert any(job.user_id == acct for job, _ in world.jobs.jobs)


@pytest.mark.parametrize(
    ("answer", "code"), [("expired", "signin_expired"), ("declined", "signin_declined"), ("failed", "signin_failed")]
)
async def test_an_ended_flow_tells_the_car_why_and_leaves_no_device_code(world: World, answer: str, code: str) -> None:
    await world.service.start(CAR, "contoso-motors", "1", "r1")
    world.identity.answers = [answer]
    assert await world.run_polls() == [answer]
    [(_, _, body)] = world.replies
    assert body["status"] == "error"
    assert body["error"]["code"] == code
    assert body["signin"]["state"] == answer
    flow = (await world.doc(SIGNINS, CAR, P.DOC_ID))["profiles"]["1"]["flow"]  # type: ignore[index]
    assert "sealed" not in flow
    assert world.polls.messages == []


async def test_a_flow_past_its_expiry_ends_without_asking_the_provider(world: World) -> None:
    await world.service.start(CAR, "contoso-motors", "1", "r1")
    world.now += dt.timedelta(minutes=16)
    assert await world.run_polls() == ["expired"]
    assert world.identity.polls == []


async def test_a_car_cannot_read_another_cars_flow(world: World) -> None:
    view = await world.service.start(CAR, "contoso-motors", "1", "r1")
    assert (await world.service.status(CAR, view["flowId"]))["state"] == "pending"  # type: ignore[index]
    assert await world.service.status(OTHER_CAR, view["flowId"]) is None


async def test_switching_profiles_switches_the_driver_and_where_each_agenda_goes(world: World) -> None:
    await world.sign_in(CAR, "1")
    ada = account_id(CONSUMER_TENANT, world.identity.account.object_id)
    world.identity.account = SignedInAccount(
        WORK_TENANT, "6b3f0e2a-9c41-4d7e-8a25-0f1e2d3c4b5a", "carla@northwind.example", "Carla",
        frozenset({"Calendars.Read", "OnlineMeetings.ReadWrite"}), b"cache-carla",
    )  # fmt: skip
    await world.sign_in(CAR, "2", "r2")
    carla = world.identity.account.id
    assert (await world.vehicle(CAR))["driver"]["account"] == {"type": "work", "teams": True}
    assert (await world.doc(CALENDARS, ada, DRIVER_ID))["vehicleIds"] == []  # type: ignore[index]
    assert (await world.doc(CALENDARS, carla, DRIVER_ID))["vehicleIds"] == [CAR]  # type: ignore[index]
    view = await world.service.select(CAR, "1")
    assert view is not None
    assert view["username"] == "ada@outlook.example"
    assert (await world.vehicle(CAR))["driver"]["userId"] == ada
    assert (await world.vehicle(CAR))["consent"]["calendar"] is True  # her own records project onto the car again
    assert (await world.doc(CALENDARS, ada, DRIVER_ID))["vehicleIds"] == [CAR]  # type: ignore[index]
    assert (await world.doc(CALENDARS, carla, DRIVER_ID))["vehicleIds"] == []  # type: ignore[index]
    assert await world.service.select(CAR, "3") is None  # an empty profile: nobody's calendar
    assert "driver" not in await world.vehicle(CAR)
    assert (CAR, {"agenda": None}) in world.gateway.patches  # a null removes the agenda from the twin


async def test_signing_in_at_a_car_ends_its_former_drivers_membership(world: World) -> None:
    """A company driver invited to the car (a Driver membership) is replaced by an account signed in at its screen:
    the membership goes, so the former driver no longer reads the car, links back or exports its new driver's
    data (shared/auth/access.py grants by membership)."""
    former = "0e5d4c3b-2a19-4f8e-8d7c-6b5a49382716"
    membership = membership_id(Role.DRIVER, "contoso-motors", None, CAR)
    await world.store.upsert(MEMBERSHIPS, {"id": membership, "principalId": former, "kind": "membership"})
    stored = await world.store.read(VEHICLES, CAR, CAR)
    assert stored is not None
    await world.store.upsert(VEHICLES, {**stored.document, "driver": {"userId": former, "upn": "f@contoso.example"}})
    await world.sign_in(CAR, "1")
    assert await world.store.read(MEMBERSHIPS, former, membership) is None


async def a_company_driver_invited_three_days_ago(world: World) -> tuple[str, str, str]:
    """The car's driver: a company driver with a Driver membership. Their id, when they accepted, the membership."""
    former = "0e5d4c3b-2a19-4f8e-8d7c-6b5a49382716"
    accepted = canonical_time(world.now - dt.timedelta(days=3))
    membership = membership_id(Role.DRIVER, "contoso-motors", None, CAR)
    await world.store.upsert(MEMBERSHIPS, {"id": membership, "principalId": former, "kind": "membership",
                                           "role": "Driver", "vehicleId": CAR, "grantedAt": accepted})  # fmt: skip
    stored = await world.store.read(VEHICLES, CAR, CAR)
    assert stored is not None
    await world.store.upsert(VEHICLES, {**stored.document, "driver": {"userId": former, "upn": "f@contoso.example"}})
    return former, accepted, membership


async def test_signing_in_at_a_car_records_the_time_its_former_driver_drove_it(world: World) -> None:
    """The former driver's export keeps the car for the time they drove it (shared/drivers/periods.py): recorded
    from their membership before it goes, up to the sign-in; a driver account that leaves the car in turn has its
    own time recorded, from the sign-in that named it (`driver.since`) to the sign-out."""
    from shared.drivers.periods import former_periods

    former, accepted, _ = await a_company_driver_invited_three_days_ago(world)
    await world.sign_in(CAR, "1")
    signed_in = canonical_time(world.now)
    [period] = await former_periods(world.store, former)
    assert (period.vehicle_id, period.since, period.until) == (CAR, accepted, signed_in)
    world.now += dt.timedelta(hours=1)
    assert await world.service.sign_out(CAR, "1") is True
    [own] = await former_periods(world.store, world.identity.account.id)
    assert (own.vehicle_id, own.since, own.until) == (CAR, signed_in, canonical_time(world.now))


async def test_a_driver_account_exports_what_the_car_recorded_from_its_sign_in_and_not_before(world: World) -> None:
    """A driver account signed in at the car has a dated time with it (`driver.since`, as a linked driver): its
    export holds the car's history from the sign-in, not what the car recorded before, and signing in again keeps
    the date."""
    from shared.device_messages import DeviceMessage
    from shared.privacy.categories import default_categories
    from shared.privacy.export import DriverExport
    from shared.stores.memory import MemoryDeadLetterSink
    from shared.telemetry.ingest import TelemetryIngestor
    from tests.factories import iso

    def sample(seq: int, minutes: int) -> DeviceMessage:
        at = iso(minutes * 60, world.now)
        raw = {"v": 1, "seq": seq, "samples": [{"ts": at, "signals": {"Vehicle.Speed": float(seq)}}]}
        return DeviceMessage(orjson.dumps(raw), CAR, at, seq)

    ingest = TelemetryIngestor(world.store, MemoryDeadLetterSink())
    await ingest.ingest([sample(1, -10)])  # before anyone signed in
    await world.sign_in(CAR, "1")
    signed_in = canonical_time(world.now)
    acct = account_id(CONSUMER_TENANT, world.identity.account.object_id)
    assert (await world.vehicle(CAR))["driver"]["since"] == signed_in
    await ingest.ingest([sample(2, 5)])
    world.now += dt.timedelta(minutes=30)
    await world.sign_in(CAR, "1", request_id="r2")  # the same account again: its time goes on
    assert (await world.vehicle(CAR))["driver"]["since"] == signed_in

    archive = DriverExport(world.store, default_categories().category_of, lambda: world.now)
    lines = [orjson.loads(line) async for line in archive.lines(acct)]
    assert lines[0]["vehicles"] == [{"vehicleId": CAR, "since": signed_in}]
    speeds = [s["signals"]["Vehicle.Speed"] for r in lines if r.get("source") == "telemetry"
              for s in r["record"]["samples"]]  # fmt: skip
    assert speeds == [2.0], "the account's export holds none of its time, or the car's before it"


async def test_an_accounts_unfinished_handover_is_in_its_export_and_its_erasure_takes_its_place(world: World) -> None:
    """An account's handover away from the car cut short (the car names the next driver; recording the account's
    time failed): nothing of the account names the car (no membership, no link), yet its export holds the car up
    to the handover and its erasure takes the place it set and its dated time off the car."""
    from shared.containers import TENANCY
    from shared.drivers import handover
    from shared.drivers.link import DriverLinks
    from shared.geofences.service import GeofenceService
    from shared.iothub.memory_gateway import MemoryIoTHubGateway
    from shared.privacy.categories import default_categories
    from shared.privacy.erasure import Eraser
    from shared.privacy.export import DriverExport
    from shared.vehicle_updates import update_vehicle

    stored = await world.store.read(VEHICLES, CAR, CAR)
    assert stored is not None
    await world.store.upsert(VEHICLES, {**stored.document, "fleetId": "berlin", "type": "vehicle"})
    await world.sign_in(CAR, "1")
    signed_in = canonical_time(world.now)
    ada = account_id(CONSUMER_TENANT, world.identity.account.object_id)
    world.now += dt.timedelta(minutes=10)
    home = {"name": "home", "shape": {"type": "Circle", "center": [13.4, 52.5], "radiusM": 100}}
    await GeofenceService(world.store, lambda: world.now).put_vehicle_geofence(CAR, "ada-home", home)
    world.now += dt.timedelta(minutes=10)
    at = canonical_time(world.now)

    def name_bob(doc: dict[str, Any] | None) -> dict[str, Any]:  # the finish that would follow is never run
        assert doc is not None
        handover.mark(doc, doc.get("driver"), "bob", at)
        doc["driver"] = {"userId": "bob", "upn": "bob@contoso.example", "timeZone": "UTC", "since": at}
        return doc

    await update_vehicle(world.store, CAR, name_bob)
    archive = DriverExport(world.store, default_categories().category_of, lambda: world.now)
    [period] = await archive.cars(ada)
    assert (period.vehicle_id, period.since, period.until) == (CAR, signed_in, at)

    async def no_graph(user: str, vehicle: str) -> None:
        return None

    links = DriverLinks(world.store, world.jobs, lambda: world.now, MemoryIoTHubGateway())
    await Eraser(world.store, MemoryIoTHubGateway(), links, no_graph, clock=lambda: world.now).erase_driver(ada)
    found = await world.store.query(TENANCY, "SELECT * FROM c WHERE c.vehicleId = @v", {"@v": CAR})
    assert not [d for d in found if d.get("kind") == "vehicleGeofence"], "her place outlived her erasure"
    assert "driverLeft" not in await world.vehicle(CAR)


async def test_a_sign_in_cut_short_after_naming_the_account_is_finished_by_the_next(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The car names the account, then recording the former driver's time fails: the handover stays on the car
    (shared/drivers/handover.py) and the next sign-in finishes it, the former driver's time ending at the first,
    his membership gone."""
    from shared.drivers.handover import HANDOVERS
    from shared.drivers.periods import former_periods
    from shared.errors import StoreError

    former, accepted, membership = await a_company_driver_invited_three_days_ago(world)
    create = world.store.create

    async def failing(container: str, doc: dict[str, Any]) -> str:
        if doc.get("kind") == "drivingPeriod":
            raise StoreError("the service is unavailable")
        return await create(container, doc)

    monkeypatch.setattr(world.store, "create", failing)
    handed_at = canonical_time(world.now)
    with pytest.raises(StoreError):
        await world.sign_in(CAR, "1")
    monkeypatch.setattr(world.store, "create", create)
    assert [e["userId"] for e in (await world.vehicle(CAR))[HANDOVERS]] == [former]
    assert await former_periods(world.store, former) == []
    assert await world.store.read(MEMBERSHIPS, former, membership) is not None
    world.now += dt.timedelta(minutes=5)
    await world.sign_in(CAR, "1")
    assert HANDOVERS not in await world.vehicle(CAR)
    assert await world.store.read(MEMBERSHIPS, former, membership) is None
    [period] = await former_periods(world.store, former)
    assert (period.since, period.until) == (accepted, handed_at)


async def test_signing_out_of_the_last_car_withdraws_consent_and_leaves_the_tokens_to_the_sync(world: World) -> None:
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id
    world.jobs.jobs.clear()
    assert await world.service.sign_out(CAR, "1") is True
    account = await world.doc(CALENDARS, acct, ACCOUNT_DOC_ID)
    assert account is not None
    assert account["state"] == "signed_out"
    assert account["cars"] == {}
    driver = await world.doc(CALENDARS, acct, DRIVER_ID)
    assert driver is not None
    assert driver["consent"]["calendar"] is False
    assert driver["vehicleIds"] == []
    assert any(job.user_id == acct and job.reason == "signout" for job, _ in world.jobs.jobs)
    records = await world.store.query(CONSENTS, "SELECT * FROM c", {}, partition_key=CAR)
    assert any(r.get("granted") is False for r in records)
    assert "driver" not in await world.vehicle(CAR)
    assert world.gateway.desired[CAR]["account"]["profiles"] == {}
    assert await world.service.sign_out(CAR, "1") is False


async def test_one_account_on_two_cars_signs_out_of_one_and_keeps_the_other(world: World) -> None:
    await world.sign_in(CAR, "1")
    await world.sign_in(OTHER_CAR, "1", "r2")
    acct = world.identity.account.id
    assert [c["vehicleId"] for c in await world.service.cars_of(acct)] == [CAR, OTHER_CAR]
    assert await world.service.sign_out_of(acct, CAR) is True
    assert [c["vehicleId"] for c in await world.service.cars_of(acct)] == [OTHER_CAR]
    assert (await world.doc(CALENDARS, acct, ACCOUNT_DOC_ID))["state"] == "signed_in"  # type: ignore[index]
    assert (await world.doc(CALENDARS, acct, DRIVER_ID))["vehicleIds"] == [OTHER_CAR]  # type: ignore[index]


async def test_a_refused_refresh_marks_reauth_required_once_and_never_asks_again(world: World) -> None:
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id
    tokens = DelegatedTokenSource(world.store, FakeVault(), world.identity, world.service.mark_reauth_required)
    assert await tokens.access_token(acct) == "access-token"
    assert await tokens.access_token(acct) == "access-token"
    assert world.identity.refreshes == 1
    tokens.forget(acct)
    world.identity.refresh_error = ReauthNeededError("invalid_grant")
    for _ in range(3):
        with pytest.raises(ReauthRequiredError):
            await tokens.access_token(acct)
    assert world.identity.refreshes == 2  # one refused refresh, then no more asking
    assert world.gateway.desired[CAR]["account"]["profiles"]["1"]["state"] == "reauth_required"
    assert (await world.doc(CALENDARS, acct, DRIVER_ID))["reauthRequired"] is True  # type: ignore[index]
    account = await world.doc(CALENDARS, acct, ACCOUNT_DOC_ID)
    assert account is not None
    assert "tokenCache" not in account


async def test_a_tampered_token_cache_means_reauth_required_not_a_crash(world: World) -> None:
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id
    stored = await world.store.read(CALENDARS, acct, ACCOUNT_DOC_ID)
    assert stored is not None
    doc = dict(stored.document)
    doc["tokenCache"] = {"ctx": acct, "data": "%%%not base64%%%"}
    await world.store.upsert(CALENDARS, doc)
    tokens = DelegatedTokenSource(world.store, FakeVault(), world.identity, world.service.mark_reauth_required)
    with pytest.raises(ReauthRequiredError):
        await tokens.access_token(acct)
    assert world.identity.refreshes == 0
    assert world.gateway.desired[CAR]["account"]["profiles"]["1"]["state"] == "reauth_required"


async def test_signing_in_again_after_reauth_resumes_the_sync(world: World) -> None:
    await world.sign_in(CAR, "1")
    acct = world.identity.account.id
    await world.service.mark_reauth_required(acct)
    await world.sign_in(CAR, "1", "r2")
    assert "reauthRequired" not in (await world.doc(CALENDARS, acct, DRIVER_ID))  # type: ignore[operator]
    assert world.gateway.desired[CAR]["account"]["profiles"]["1"]["state"] == "signed_in"


@given(
    st.binary(max_size=300)
    | st.builds(
        orjson.dumps,
        st.dictionaries(
            st.text(max_size=10), st.integers(-(2**31), 2**31) | st.text(max_size=20) | st.none(), max_size=6
        ),
    )
)
def test_poll_messages_from_anywhere_parse_or_are_refused_never_crash(raw: bytes) -> None:
    message = PollMessage.parse(raw)
    assert message is None or PollMessage.parse(message.to_json()) == message


async def test_erasing_the_driver_empties_their_profiles_and_erasing_a_car_leaves_their_list(world: World) -> None:
    await world.sign_in(CAR, "1")
    await world.sign_in(OTHER_CAR, "1", "r2")
    acct = world.identity.account.id
    assert await forget_car(world.store, OTHER_CAR) == 1
    assert [c["vehicleId"] for c in await world.service.cars_of(acct)] == [CAR]
    assert (await world.doc(CALENDARS, acct, DRIVER_ID))["vehicleIds"] == [CAR]  # type: ignore[index]
    assert await forget_account(world.store, world.gateway, acct, canonical_time(world.now)) == 1
    profiles = (await world.doc(SIGNINS, CAR, P.DOC_ID))["profiles"]  # type: ignore[index]
    assert profiles == {}
    assert world.gateway.desired[CAR]["account"]["profiles"] == {}
    assert "ada" not in orjson.dumps(world.gateway.desired[CAR]).decode()
