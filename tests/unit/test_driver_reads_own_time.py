"""A driver reads their car through the API for their own time only (shared/auth/access.py `Access.reads_from`):
the car's history, trips, alerts, commands and geofence events from before the car named them are the former
driver's, as their exports say (tests/unit/test_privacy_export.py). Staff of the fleet read all of it.

Real routes, real access control (memberships written by the real invitation flow), in-memory stores."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from shared.auth.access import AccessControl
from shared.auth.policy import Role
from shared.auth.principal import Principal
from shared.containers import GEOFENCE_EVENTS, MEMBERSHIPS
from shared.errors import AuthenticationError
from shared.stores.base import strip_system_properties
from shared.stores.memory import MemoryDeadLetterSink
from shared.telemetry.ingest import TelemetryIngestor
from shared.tenancy.documents import membership_id
from tests.factories import T0, drive, iso, message
from tests.fleet_support import BRAND, FLEET
from tests.unit.test_privacy_export import (
    ALEX,
    HANDOVER,
    MEGAN,
    OPERATOR,
    TENANT,
    Brand,
    _issue,
    megan_accepts_and_a_write_fails,
    megan_drives,
)

OPERATOR_ROLES = frozenset({Role.FLEET_OPERATOR.value})


def principal(oid: str) -> Principal:
    roles = OPERATOR_ROLES if oid == OPERATOR else frozenset()
    return Principal(oid, TENANT, "client", roles, frozenset(), False, username=f"{oid[:4]}@c.example")


async def tokens(header: str | None) -> Principal:
    """`Bearer <object id>`: the caller is that person (tokens are tests/integration's; this is about access)."""
    if not header or not header.startswith("Bearer "):
        raise AuthenticationError("no bearer token")
    return principal(header.removeprefix("Bearer "))


async def alex_drives(brand: Brand) -> None:
    """Alex's trip at T0 (20 s, a DTC P0300, positions near 52.5 N)."""
    trip = [dict(lv="ON", speed=40.0, lat=52.5 + s / 1000, lon=13.4, soc=80.0, dtc=["P0300"]) for s in range(20)]
    trip[-1]["lv"] = "OFF"
    batch = [message(brand.car, drive(s + 1, s, **signals), enqueued_s=s, sequence_number=s)
             for s, signals in enumerate(trip)]  # fmt: skip
    await TelemetryIngestor(brand.store, MemoryDeadLetterSink()).ingest(batch)


async def crossing(brand: Brand, seconds: int, name: str) -> None:
    await brand.store.upsert(GEOFENCE_EVENTS, {"id": f"{brand.car}:{name}", "vehicleId": brand.car, "ts": iso(seconds),
                                               "event": "enter", "geofenceId": name, "scope": "fleet",
                                               "position": {"lat": 52.5, "lon": 13.4}, "retracted": False})  # fmt: skip


async def handed_over() -> tuple[Brand, str, str]:
    """Alex drives the car (a trip, a DTC alert, a command, a crossing); at T0 + 30 min Megan accepts an invitation
    to it, then drives (her trip, DTC P0420, command, crossing). Returns the brand and the two commands' ids."""
    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    await alex_drives(brand)
    alex_command = await _issue(brand.store, brand.car, T0 + dt.timedelta(minutes=10), "alex-lock")
    await crossing(brand, 60, "alex-depot")
    await brand.accept(MEGAN, T0 + HANDOVER)
    await megan_drives(brand.store, brand.car)
    megan_command = await _issue(brand.store, brand.car, T0 + dt.timedelta(minutes=45), "megan-lock")
    await crossing(brand, 41 * 60, "megan-site")
    await operator_membership(brand)
    serve(brand)
    brand.fleet.now = T0 + dt.timedelta(hours=1)
    return brand, alex_command, megan_command


def serve(brand: Brand) -> None:
    """The API on the brand's store, with access control on the callers' memberships."""
    from shared.api import runtime
    from shared.commands.service import CommandService
    from shared.stores.queues import MemoryQueue

    brand.fleet.gatekeeper = AccessControl(brand.store, tokens)
    commands = CommandService(brand.store, brand.fleet.gateway, MemoryQueue(), clock=lambda: brand.fleet.now)
    brand.fleet.overrides[runtime.command_service] = lambda: commands


async def read(brand: Brand, who: str, path: str, **query: str) -> Any:
    answer = await brand.fleet.call("GET", f"/api/vehicles/{brand.car}{path}", query, token=f"Bearer {who}")
    assert answer.status == 200, answer.body
    return answer.json


async def everything(brand: Brand, who: str) -> dict[str, Any]:
    """Each dated thing of the car the caller reads, one item a page (so the floor holds across pages too)."""

    async def paged(path: str, **query: str) -> list[Any]:
        items: list[Any] = []
        token: str | None = None
        while True:
            page = await read(brand, who, path, limit="1", **query, **({"continuationToken": token} if token else {}))
            items += page["items"]
            token = page["continuationToken"]
            if token is None:
                return items

    window = {"from": iso(-7200), "to": iso(7200)}
    history = await read(brand, who, "/telemetry", **window)
    car = await read(brand, who, "")
    return {
        "samples": sorted(s["ts"] for m in history["items"] for s in m["samples"]),
        "trips": [t["startTs"] for t in await paged("/trips")],
        "alerts": sorted(a["code"] for a in await paged("/alerts")),
        "commands": [c["commandId"] for c in await paged("/commands")],
        "crossings": [e["geofenceId"] for e in await paged("/geofence-events")],
        "car alerts": sorted(a["code"] for a in car["alerts"]),
        "car trip": (car["trip"] or {}).get("startTs"),
    }


async def test_the_cars_next_driver_reads_nothing_of_the_one_before_and_the_operator_reads_both() -> None:
    brand, alex_command, megan_command = await handed_over()
    since = iso(HANDOVER.seconds)
    megan = await everything(brand, MEGAN)
    assert megan["samples"], "Megan reads none of her own samples"
    assert min(megan["samples"]) >= since, "Megan reads Alex's positions"
    assert megan["trips"] == [iso(40 * 60)]
    assert megan["alerts"] == ["P0300", "P0420"], "Alex's trouble code, still on at the handover, cleared in her time"
    assert megan["commands"] == [megan_command]
    assert megan["crossings"] == ["megan-site"]
    assert megan["car alerts"] == ["P0420"]
    operator = await everything(brand, OPERATOR)
    assert min(operator["samples"]) == iso(0)
    assert operator["trips"] == [iso(40 * 60), iso(0)]
    assert operator["alerts"] == ["P0300", "P0420"]
    assert operator["commands"] == [megan_command, alex_command]
    assert operator["crossings"] == ["megan-site", "alex-depot"]


async def test_a_command_sent_in_the_former_drivers_time_is_not_found_for_the_next() -> None:
    brand, alex_command, megan_command = await handed_over()
    path = f"/api/vehicles/{brand.car}/commands/{alex_command}"
    assert (await brand.fleet.call("GET", path, token=f"Bearer {MEGAN}")).status == 404
    assert (await brand.fleet.call("GET", path, token=f"Bearer {OPERATOR}")).status == 200
    assert (await read(brand, MEGAN, f"/commands/{megan_command}"))["commandId"] == megan_command


async def test_a_trip_the_car_drove_across_the_handover_is_not_the_next_drivers() -> None:
    """Alex's trip still open when the car names Megan (never switched off): neither the live trip nor the list
    shows it to her, as her export leaves it out; the car's current state is hers."""
    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    trip = [dict(lv="ON", speed=40.0, lat=52.5, lon=13.4, soc=80.0) for _ in range(3)]
    await TelemetryIngestor(brand.store, MemoryDeadLetterSink()).ingest(
        [
            message(brand.car, drive(s + 1, s, **signals), enqueued_s=s, sequence_number=s)
            for s, signals in enumerate(trip)
        ]
    )
    await brand.accept(MEGAN, T0 + HANDOVER)
    serve(brand)
    car = await read(brand, MEGAN, "")
    assert car["trip"] is None
    assert car["signals"], "the car's current state is its driver's"
    assert (await read(brand, MEGAN, "/trips"))["items"] == []


@pytest.mark.parametrize("dated_by", ["membership", "link", "nothing"])
async def test_a_driver_the_car_named_before_since_was_recorded_reads_from_their_membership(dated_by: str) -> None:
    """A car that names Megan without `driver.since` (written before it existed): her time starts at the earlier
    of her membership's and her link's dates (T0 + 30 min, the other moved to T0 + 42 min, after her first samples
    at T0 + 40 min), as her export's; with nothing that dates it, she reads nothing dated but the car's current
    state (its trouble code still active)."""
    brand, _, megan_command = await handed_over()
    later = iso(42 * 60)
    if dated_by == "membership":
        await undate(brand, link=later)
    elif dated_by == "link":
        await undate(brand, membership=later)
    else:
        await undate(brand, membership=None, link=None)
    megan = await everything(brand, MEGAN)
    if dated_by == "nothing":
        current = {"alerts": ["P0420"], "car alerts": ["P0420"]}
        assert {k: v for k, v in megan.items() if v} == current, "a driver whose time nothing dates read dated data"
    else:
        assert min(megan["samples"]) == iso(40 * 60), "her time did not start at the earlier date"
        assert megan["commands"] == [megan_command]
        assert megan["alerts"] == ["P0300", "P0420"]


KEEP = "keep"


async def undate(brand: Brand, membership: str | None = KEEP, link: str | None = KEEP) -> None:
    """The car names Megan without `driver.since`, as before it was recorded; her Driver membership's `grantedAt`
    and her link's `linkedAt` set as given (None: absent), or kept."""
    stored = await brand.store.read("vehicles", brand.car, brand.car)
    assert stored is not None
    legacy = strip_system_properties(stored.document)
    legacy["driver"] = {k: v for k, v in legacy["driver"].items() if k != "since"}
    await brand.store.upsert("vehicles", legacy)
    if membership != KEEP:
        for doc in await brand.store.query(MEMBERSHIPS, "SELECT * FROM c WHERE c.principalId = @u", {"@u": MEGAN}):
            await brand.store.upsert(MEMBERSHIPS, {**strip_system_properties(doc), "grantedAt": membership})
    if link != KEEP:
        stored_link = await brand.store.read("calendars", MEGAN, "driver")
        assert stored_link is not None
        await brand.store.upsert("calendars", {**strip_system_properties(stored_link.document), "linkedAt": link})


async def test_the_former_drivers_places_on_the_car_do_not_exist_for_the_next_while_the_handover_is_unfinished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator set the car's depot before anyone drove it (the car's); Alex sets his home and fills the car's
    places; Megan accepts, and recording Alex's time fails, so the handover that deletes his places is unfinished:
    she neither lists nor reads his places, they leave her room whole (nor say how many), deleting one leaves it,
    and her PUT of his home's id creates (201) a place of hers. She sees the depot; the operator sees all."""
    from shared.geofences.service import MAX_VEHICLE_GEOFENCES

    brand = Brand()
    await brand.fleet.register(BRAND, FLEET, [brand.car])
    serve(brand)
    await operator_membership(brand)
    place = {"name": "a place", "shape": {"type": "Circle", "center": [13.4, 52.5], "radiusM": 100}}
    base = f"/api/vehicles/{brand.car}/geofences"
    brand.fleet.now = T0 - dt.timedelta(hours=2)
    assert (await brand.fleet.call("PUT", f"{base}/depot", body=place, token=f"Bearer {OPERATOR}")).status == 201
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    brand.fleet.now = T0 + dt.timedelta(minutes=5)
    for n in range(MAX_VEHICLE_GEOFENCES - 1):
        answer = await brand.fleet.call("PUT", f"{base}/alex-{n}", body=place, token=f"Bearer {ALEX}")
        assert answer.status == 201, answer.body
    await megan_accepts_and_a_write_fails(brand, monkeypatch, "create", lambda doc: doc.get("kind") == "drivingPeriod")
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert [e["userId"] for e in car.document["handovers"]] == [ALEX], "the test needs Alex's handover unfinished"
    brand.fleet.now = T0 + dt.timedelta(hours=1)
    assert [g["geofenceId"] for g in (await read(brand, MEGAN, "/geofences"))["items"]] == ["depot"]
    assert (await brand.fleet.call("GET", f"{base}/alex-0", token=f"Bearer {MEGAN}")).status == 404
    assert (await brand.fleet.call("DELETE", f"{base}/alex-0", token=f"Bearer {MEGAN}")).status == 204
    staff = [g["geofenceId"] for g in (await read(brand, OPERATOR, "/geofences"))["items"]]
    assert staff == sorted(["depot", *(f"alex-{n}" for n in range(MAX_VEHICLE_GEOFENCES - 1))])
    assert (await brand.fleet.call("PUT", f"{base}/alex-0", body=place, token=f"Bearer {MEGAN}")).status == 201
    assert (await brand.fleet.call("PUT", f"{base}/home", body=place, token=f"Bearer {MEGAN}")).status == 201
    mine = [g["geofenceId"] for g in (await read(brand, MEGAN, "/geofences"))["items"]]
    assert mine == ["alex-0", "depot", "home"]
    assert (await brand.fleet.call("PUT", f"{base}/home", body=place, token=f"Bearer {MEGAN}")).status == 200


async def test_the_former_drivers_pending_command_cannot_be_cancelled_or_probed_by_the_next() -> None:
    brand, alex_command, megan_command = await handed_over()
    cancel = f"/api/vehicles/{brand.car}/commands/{alex_command}/cancel"
    assert (await brand.fleet.call("POST", cancel, token=f"Bearer {MEGAN}")).status == 404
    assert (await brand.fleet.call("POST", cancel, token=f"Bearer {OPERATOR}")).status == 200
    mine = f"/api/vehicles/{brand.car}/commands/{megan_command}/cancel"
    assert (await brand.fleet.call("POST", mine, token=f"Bearer {MEGAN}")).status == 200


async def test_the_cars_counts_and_gap_summary_are_of_the_drivers_time() -> None:
    """Alex's trip still open at the handover, a gap he reported, and one of samples lost in his time that the car
    reported in Megan's: the car's detail and the list of cars give Megan no count or date of them; the operator
    gets the car's whole summary. His trouble code, still active, is the
    car's state now: counted for both."""
    from shared.containers import GAPS

    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    trip = [dict(lv="ON", speed=40.0, lat=52.5, lon=13.4, soc=80.0, dtc=["P0300"]) for _ in range(3)]
    await TelemetryIngestor(brand.store, MemoryDeadLetterSink()).ingest(
        [
            message(brand.car, drive(s + 1, s, **signals), enqueued_s=s, sequence_number=s)
            for s, signals in enumerate(trip)
        ]
    )
    await brand.store.upsert(GAPS, {"id": "gap-alex", "vehicleId": brand.car, "type": "gap", "samples": 40,
                                    "reportedAt": iso(10)})  # fmt: skip
    await brand.store.upsert(GAPS, {"id": "gap-megan", "vehicleId": brand.car, "type": "gap", "samples": 2,
                                    "fromTs": None, "reportedAt": iso(HANDOVER.seconds + 60)})  # fmt: skip
    # samples lost in Alex's time, reported once the car was Megan's: about his time, not hers
    await brand.store.upsert(GAPS, {"id": "gap-alex-late", "vehicleId": brand.car, "type": "gap", "samples": 7,
                                    "fromTs": iso(5), "toTs": iso(9),
                                    "reportedAt": iso(HANDOVER.seconds + 90)})  # fmt: skip
    stored = await brand.store.read("vehicles", brand.car, brand.car)
    assert stored is not None
    await brand.store.upsert("vehicles", {**strip_system_properties(stored.document),
                                          "gaps": {"count": 3, "samples": 49, "unknown": 0,
                                                   "lastAt": iso(HANDOVER.seconds + 90)}})  # fmt: skip
    await brand.accept(MEGAN, T0 + HANDOVER)
    serve(brand)
    await operator_membership(brand)
    car = await read(brand, MEGAN, "")
    assert (car["activeAlerts"], car["tripOpen"], car["trip"]) == (1, False, None)
    assert [a["code"] for a in car["alerts"]] == ["P0300"]
    assert car["gaps"] == {"count": 1, "samples": 2, "unknown": 0, "lastAt": iso(HANDOVER.seconds + 60)}
    [row] = (await brand.fleet.call("GET", "/api/vehicles", token=f"Bearer {MEGAN}")).json["items"]
    assert (row["activeAlerts"], row["tripOpen"]) == (1, False)
    staff = await read(brand, OPERATOR, "")
    assert (staff["activeAlerts"], staff["tripOpen"], staff["gaps"]["count"]) == (1, True, 3)
    [row] = (await brand.fleet.call("GET", "/api/vehicles", token=f"Bearer {OPERATOR}")).json["items"]
    assert (row["activeAlerts"], row["tripOpen"]) == (1, True)


async def test_a_driver_whose_time_nothing_dates_gets_the_window_asked_and_no_sample() -> None:
    brand, _, _ = await handed_over()
    await undate(brand, membership=None, link=None)
    page = await read(brand, MEGAN, "/telemetry", **{"from": iso(-7200), "to": iso(7200)})
    assert (page["from"], page["to"], page["items"]) == (iso(-7200), iso(7200), [])


async def operator_membership(brand: Brand) -> None:
    await brand.store.upsert(MEMBERSHIPS, {"id": membership_id(Role.FLEET_OPERATOR, BRAND, FLEET, None),
                                           "kind": "membership", "principalId": OPERATOR, "tenantId": TENANT,
                                           "role": Role.FLEET_OPERATOR.value, "brandId": BRAND, "fleetId": FLEET,
                                           "vehicleId": None})  # fmt: skip


async def test_a_driver_whose_time_nothing_dates_reads_and_cancels_the_command_they_sent() -> None:
    brand, alex_command, _ = await handed_over()
    await undate(brand, membership=None, link=None)
    sent = await brand.fleet.call("POST", f"/api/vehicles/{brand.car}/commands", body={"name": "lock"},
                                  token=f"Bearer {MEGAN}", headers={"Idempotency-Key": "megan-undated"})  # fmt: skip
    assert sent.status == 201, sent.body
    mine = f"/api/vehicles/{brand.car}/commands/{sent.json['commandId']}"
    assert (await brand.fleet.call("GET", mine, token=f"Bearer {MEGAN}")).status == 200
    assert (await brand.fleet.call("POST", f"{mine}/cancel", token=f"Bearer {MEGAN}")).status == 200
    theirs = f"/api/vehicles/{brand.car}/commands/{alex_command}"
    assert (await brand.fleet.call("GET", theirs, token=f"Bearer {MEGAN}")).status == 404


async def test_crossings_and_alerts_of_a_former_drivers_place_do_not_name_it_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Alex's home is still on the car (his handover unfinished) and evaluated: Megan drives into it in her time.
    The crossing and its alert would name his home and where it is: she gets neither (the list, the car's detail
    and its count); the operator gets both, and her crossing of a fleet geofence stays hers."""
    from shared.containers import ALERTS

    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    serve(brand)
    brand.fleet.now = T0 + dt.timedelta(minutes=5)
    home = {"name": "Alex's home", "shape": {"type": "Circle", "center": [13.4, 52.5], "radiusM": 100}}
    put = await brand.fleet.call("PUT", f"/api/vehicles/{brand.car}/geofences/home", body=home, token=f"Bearer {ALEX}")
    assert put.status == 201
    await megan_accepts_and_a_write_fails(brand, monkeypatch, "create", lambda doc: doc.get("kind") == "drivingPeriod")
    await operator_membership(brand)
    at = iso(HANDOVER.seconds + 600)
    for scope, name in (("vehicle", "home"), ("fleet", "depot")):
        await brand.store.upsert(GEOFENCE_EVENTS, {"id": f"{brand.car}:{name}", "vehicleId": brand.car, "ts": at,
                                                   "event": "enter", "geofenceId": name, "scope": scope,
                                                   "name": name, "position": {"lat": 52.5, "lon": 13.4},
                                                   "retracted": False})  # fmt: skip
    alert = {"id": f"{brand.car}:geofence:home", "vehicleId": brand.car, "type": "alert", "key": "geofence_enter:v:home",
             "status": "active", "raisedAt": at, "clearedAt": None, "kind": "geofence_enter", "geofenceId": "home",
             "scope": "vehicle", "name": "Alex's home"}  # fmt: skip
    await brand.store.upsert(ALERTS, alert)
    stored = await brand.store.read("vehicles", brand.car, brand.car)
    assert stored is not None
    await brand.store.upsert("vehicles", {**strip_system_properties(stored.document), "alerts": {alert["key"]: alert}})
    brand.fleet.now = T0 + dt.timedelta(hours=1)
    crossings = [e["geofenceId"] for e in (await read(brand, MEGAN, "/geofence-events"))["items"]]
    assert crossings == ["depot"]
    assert (await read(brand, MEGAN, "/alerts"))["items"] == []
    car = await read(brand, MEGAN, "")
    assert (car["alerts"], car["activeAlerts"]) == ([], 0)
    staff = [e["geofenceId"] for e in (await read(brand, OPERATOR, "/geofence-events"))["items"]]
    assert sorted(staff) == ["depot", "home"]
    assert [a["id"] for a in (await read(brand, OPERATOR, "/alerts"))["items"]] == [alert["id"]]
    assert (await read(brand, OPERATOR, ""))["activeAlerts"] == 1


async def test_an_alert_about_the_cars_condition_still_active_at_the_handover_is_the_next_drivers_to_read() -> None:
    """Alex's trouble code P0300 is still active when Megan takes the car: it is the car's state now (as its
    warning light is), so she reads it in the car's detail, its count and the alerts' pages, after her own
    P0420, and once it clears in her time, as cleared. What he drove into stays his: his speeding alert (open at
    the handover), and a trouble code that cleared in his time (P0171). The operator reads all of them."""
    from shared.containers import ALERTS

    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    codes = [["P0171"], ["P0300"], ["P0300"]]
    await TelemetryIngestor(brand.store, MemoryDeadLetterSink()).ingest(
        [
            message(brand.car, drive(s + 1, s, lv="ON", speed=140.0, lat=52.5, lon=13.4, dtc=dtc), s, s)
            for s, dtc in enumerate(codes)
        ]
    )
    speeding = {"id": f"{brand.car}:speeding:alex", "vehicleId": brand.car, "type": "alert", "key": "speeding",
                "status": "active", "raisedAt": iso(2), "clearedAt": None, "kind": "speeding", "value": 140.0,
                "threshold": 130.0}  # fmt: skip
    await brand.store.upsert(ALERTS, speeding)
    stored = await brand.store.read("vehicles", brand.car, brand.car)
    assert stored is not None
    before = strip_system_properties(stored.document)
    await brand.store.upsert("vehicles", {**before, "alerts": {**before["alerts"], "speeding": speeding}})
    await brand.accept(MEGAN, T0 + HANDOVER)
    start = HANDOVER.seconds + 60
    await TelemetryIngestor(brand.store, MemoryDeadLetterSink()).ingest(
        [message(brand.car, drive(10, start, lv="ON", speed=30.0, dtc=["P0300", "P0420"]), start, 10)]
    )
    serve(brand)
    await operator_membership(brand)
    megan = await everything(brand, MEGAN)
    assert megan["alerts"] == ["P0300", "P0420"]
    assert megan["car alerts"] == ["P0300", "P0420"]
    pages = await read(brand, MEGAN, "/alerts", limit="1")
    assert [a["code"] for a in pages["items"]] == ["P0420"], "her own alert comes first: newest first"
    assert (await read(brand, MEGAN, ""))["activeAlerts"] == 2
    [row] = (await brand.fleet.call("GET", "/api/vehicles", token=f"Bearer {MEGAN}")).json["items"]
    assert row["activeAlerts"] == 2
    staff = await read(brand, OPERATOR, "/alerts")
    assert sorted(a.get("code") or a["kind"] for a in staff["items"]) == ["P0171", "P0300", "P0420", "speeding"]
    # his speeding alert: this fleet sets no speed limit, so her first sample cleared it (limit_removed), in her
    # time but still his: she never reads it
    [ended] = [a for a in staff["items"] if a["kind"] == "speeding"]
    assert (ended["status"], ended.get("clearReason")) == ("cleared", "limit_removed")
    assert (await read(brand, OPERATOR, ""))["activeAlerts"] == 2
    # P0300 clears in her time: still hers to read, as cleared then
    await TelemetryIngestor(brand.store, MemoryDeadLetterSink()).ingest(
        [message(brand.car, drive(11, start + 10, lv="ON", speed=30.0, dtc=["P0420"]), start + 10, 11)]
    )
    listed = {a["code"]: (a["status"], a["clearedAt"]) for a in (await read(brand, MEGAN, "/alerts"))["items"]}
    assert listed == {"P0420": ("active", None), "P0300": ("cleared", iso(start + 10))}
    car = await read(brand, MEGAN, "")
    assert ([a["code"] for a in car["alerts"]], car["activeAlerts"]) == (["P0420"], 1)
