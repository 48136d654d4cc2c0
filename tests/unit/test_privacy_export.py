"""A driver's export: every category of data they have, by category, and nothing of anyone else.

Two drivers, each linked to their own car; both cars drive (positions, speed, charge, a diagnostic code, trips),
both drivers have calendar events and a Teams meeting. The export of one must hold each of their categories and
not one id, event or signal of the other driver or their car.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from shared.calendar.documents import KIND_EVENT, event_doc_id
from shared.calendar.jobs import MemorySyncQueue
from shared.containers import AUDIT, CALENDARS, MEETINGS, REQUESTS, partition_keys
from shared.device_messages import safe_id
from shared.drivers.link import DriverLinks, parse_link
from shared.privacy.categories import default_categories
from shared.privacy.export import FORMAT, DriverExport
from shared.stores.base import DocumentStore
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import T0, drive, iso, message

ALEX, MEGAN = "7d3c0a51-2b7e-4c1f-9a43-3f1d2c6e8a01", "0f9b8e2d-6c1a-4f57-8d3e-5a7b9c1d2e02"
CARS = {ALEX: "car-alex", MEGAN: "car-megan"}
NOW = T0 + dt.timedelta(hours=1)


async def world(store: DocumentStore | None = None, cars: dict[str, str] = CARS) -> DocumentStore:
    """Each driver linked to their car, which drove (positions, speed, charge, a DTC, a trip); their calendar
    event, Teams meeting and an audit entry of theirs. `store`: in memory unless given (the local Cosmos server)."""
    store = store or MemoryDocumentStore(partition_keys())
    links = DriverLinks(store, MemorySyncQueue(), lambda: T0 - dt.timedelta(minutes=1))
    ingest = TelemetryIngestor(store, MemoryDeadLetterSink())
    for user, car in cars.items():
        await store.upsert("vehicles", {"id": safe_id(car), "vehicleId": car, "type": "vehicle"})
        link = {"userId": user, "upn": f"{user[:4]}@contoso.example", "timeZone": "Europe/Berlin",
                "consent": {"calendar": True, "location": True}}  # fmt: skip
        await links.link(car, parse_link(orjson.dumps(link)))
        trip = [dict(lv="ON", speed=40.0, lat=52.5 + s / 1000, lon=13.4, soc=80.0 - s, dtc=["P0300"]) for s in range(3)]
        trip[-1]["lv"] = "OFF"
        batch = [
            message(car, drive(s + 1, s, **signals), enqueued_s=s, sequence_number=s) for s, signals in enumerate(trip)
        ]
        await ingest.ingest(batch)
        await store.upsert(CALENDARS, {"id": event_doc_id(f"ev-{user}"), "userId": user, "kind": KIND_EVENT,
                                       "eventId": f"ev-{user}", "subject": f"Review of {user[:4]}"})  # fmt: skip
        await store.upsert(MEETINGS, {"id": f"meeting-{user}", "userId": user, "joinUrl": f"https://t/{user}"})
        await store.upsert(AUDIT, {"id": f"a-{user}", "brandId": "contoso", "at": "t", "action": "link_driver",
                                   "actor": {"objectId": user, "kind": "user"}})  # fmt: skip
    return store


async def export(store: DocumentStore, user: str) -> list[dict[str, Any]]:
    archive = DriverExport(store, default_categories().category_of, lambda: NOW)
    return [orjson.loads(line) async for line in archive.lines(user)]


@pytest.mark.parametrize(("user", "other"), [(ALEX, MEGAN), (MEGAN, ALEX)])
async def test_the_export_holds_every_category_of_the_driver_and_nothing_of_another(user: str, other: str) -> None:
    lines = await export(await world(), user)
    manifest, *records, summary = lines
    assert (manifest["kind"], manifest["format"], manifest["userId"]) == ("manifest", FORMAT, user)
    assert manifest["vehicles"] == [{"vehicleId": CARS[user], "since": manifest["vehicles"][0]["since"]}]
    categories = {r["category"] for r in records}
    assert {"account", "activity", "calendar", "position", "driving_behaviour", "vehicle_health"} <= categories
    assert summary == {"kind": "summary", "records": {c: sum(r["category"] == c for r in records) for c in categories}}
    # every car signal sits under its own category
    for r in records:
        if r["source"] in ("vehicles", "telemetry"):
            paths = [
                p for s in r["record"].get("samples", [r["record"]]) for p in (s.get("state") or s.get("signals") or {})
            ]
            assert {default_categories().category_of(p) for p in paths} <= {r["category"]}
    # nothing of the other driver or their car, and no platform secret
    text = b"".join(orjson.dumps(r) for r in lines).decode()
    assert other not in text
    assert CARS[other] not in text
    assert other[:4] not in text
    assert "clientState" not in text
    assert "_etag" not in text


async def test_a_driver_without_a_car_gets_their_own_records_only() -> None:
    store = await world()
    stranger = "11111111-2222-4333-8444-555555555555"
    manifest, summary = await export(store, stranger)
    assert manifest["vehicles"] == []
    assert summary["records"] == {}


async def test_commands_sent_to_their_car_are_in_the_export_without_who_sent_them() -> None:
    from shared.auth.policy import Role
    from shared.commands.service import Caller, CommandService
    from shared.iothub.memory_gateway import MemoryIoTHubGateway
    from shared.stores.queues import MemoryQueue

    store = await world()
    commands = CommandService(store, MemoryIoTHubGateway(), MemoryQueue(), clock=lambda: NOW)
    operator = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
    sent, _ = await commands.issue(Caller(operator, frozenset({Role.FLEET_OPERATOR})), CARS[ALEX], "lock", {}, "k")
    lines = await export(store, ALEX)
    [record] = [r for r in lines if r.get("source") == "commands"]
    assert record["category"] == "activity"
    assert record["record"]["commandId"] == sent["commandId"]
    assert operator not in orjson.dumps(lines).decode()  # another person's id: the audit log keeps it
    assert not [r for r in await export(store, MEGAN) if r.get("source") == "commands"]


async def test_the_cars_own_geofences_and_geofence_events_are_position_records() -> None:
    from shared.containers import GEOFENCE_EVENTS, TENANCY
    from shared.geofences.store import KIND_VEHICLE_GEOFENCE

    store = await world()
    home = {"id": "geofence@car-alex:home", "brandId": "contoso", "kind": KIND_VEHICLE_GEOFENCE, "vehicleId": "car-alex",
            "name": "Home", "shape": {"type": "Circle", "center": [13.4, 52.5], "radiusM": 100},
            "updatedAt": iso(0)}  # fmt: skip
    await store.upsert(TENANCY, home)
    await store.upsert(TENANCY, {**home, "id": "geofence@car-megan:home", "vehicleId": "car-megan"})
    crossing = {"id": "e1", "vehicleId": "car-alex", "ts": (T0 + dt.timedelta(minutes=1)).isoformat(), "kind": "enter"}
    await store.upsert(GEOFENCE_EVENTS, crossing)
    lines = await export(store, ALEX)
    mine = [r for r in lines if r.get("source") in (TENANCY, GEOFENCE_EVENTS)]
    assert {(r["source"], r["category"]) for r in mine} == {(TENANCY, "position"), (GEOFENCE_EVENTS, "position")}
    assert "car-megan" not in orjson.dumps(lines).decode()


def test_every_container_is_exported_or_left_out_for_a_stated_reason() -> None:
    from shared.containers import partition_keys
    from shared.privacy.export import EXPORTED, NOT_EXPORTED

    assert EXPORTED | set(NOT_EXPORTED) == set(partition_keys())
    assert not EXPORTED & set(NOT_EXPORTED)
    assert all(len(reason) > 40 for reason in NOT_EXPORTED.values())


async def test_gap_reports_travel_state_account_places_and_late_notices_are_theirs_and_no_secret() -> None:
    from shared.containers import CALENDARS, GAPS, TRAVEL
    from shared.travel.stores import KIND_LATE, KIND_PLACE, KIND_TRAVEL, TRAVEL_DOC_ID

    store = await world()
    ingest = TelemetryIngestor(store, MemoryDeadLetterSink())
    for user, car in CARS.items():
        gap = {"id": 1, "reason": "evicted", "from": iso(1), "to": iso(2), "samples": 40, "priority": 0, "detail": None}
        await ingest.ingest([message(car, orjson.dumps({"v": 1, "gap": gap}), enqueued_s=30, sequence_number=99)])
        route = {"eventId": f"ev-{user}", "origin": {"lat": 52.5, "lon": 13.4}, "minutes": 25}
        await store.upsert(
            TRAVEL, {"id": TRAVEL_DOC_ID, "vehicleId": car, "kind": KIND_TRAVEL, "state": {"routes": [route]}}
        )
        account = {"id": "account", "userId": user, "kind": "account", "username": f"{user[:4]}@outlook.example",
                   "tokenCache": {"sealed": f"SEALED-{user}"}, "cars": {car: {"profile": 1}}}  # fmt: skip
        for doc in (account, {"id": "place-k", "userId": user, "kind": KIND_PLACE, "lat": 52.5, "label": "HQ"},
                    {"id": "late-1", "userId": user, "kind": KIND_LATE, "eventId": f"ev-{user}", "vehicleId": car}):  # fmt: skip
            await store.upsert(CALENDARS, doc)
    lines = await export(store, ALEX)
    seen = {(r["source"], r["category"], r["record"].get("kind") or r["record"].get("type")) for r in lines[1:-1]}
    assert {(GAPS, "vehicle_health", "gap"), (TRAVEL, "position", KIND_TRAVEL), (CALENDARS, "account", "account"),
            (CALENDARS, "calendar", KIND_PLACE), (CALENDARS, "calendar", KIND_LATE)} <= seen  # fmt: skip
    [account] = [r["record"] for r in lines[1:-1] if r["record"].get("kind") == "account"]
    assert "tokenCache" not in account
    assert account["username"].startswith(ALEX[:4])
    text = orjson.dumps(lines).decode()
    assert "SEALED-" not in text
    assert "car-megan" not in text
    assert MEGAN[:4] not in text


async def test_the_travel_state_follows_the_cars_current_driver_only() -> None:
    from shared.containers import TRAVEL
    from shared.travel.stores import KIND_TRAVEL, TRAVEL_DOC_ID

    store = await world()
    await store.upsert(TRAVEL, {"id": TRAVEL_DOC_ID, "vehicleId": CARS[ALEX], "kind": KIND_TRAVEL, "state": {}})
    assert [r for r in await export(store, ALEX) if r.get("source") == TRAVEL]
    await DriverLinks(store, MemorySyncQueue()).unlink(CARS[ALEX])  # the car has no driver now: not Alex's routes
    assert not [r for r in await export(store, ALEX) if r.get("source") == TRAVEL]


async def test_the_export_reads_exactly_the_containers_it_declares() -> None:
    from shared.containers import TRAVEL
    from shared.privacy.export import EXPORTED
    from shared.travel.stores import KIND_TRAVEL, TRAVEL_DOC_ID

    class Recording(MemoryDocumentStore):
        def __init__(self) -> None:
            super().__init__(partition_keys())
            self.read_from: set[str] = set()

        async def read(self, container: str, partition_key: str, item_id: str) -> Any:
            self.read_from.add(container)
            return await super().read(container, partition_key, item_id)

        async def query(self, container: str, *args: Any, **kwargs: Any) -> Any:
            self.read_from.add(container)
            return await super().query(container, *args, **kwargs)

    store = Recording()
    await world(store)
    await store.upsert(TRAVEL, {"id": TRAVEL_DOC_ID, "vehicleId": CARS[ALEX], "kind": KIND_TRAVEL, "state": {}})
    store.read_from.clear()
    await export(store, ALEX)
    assert store.read_from == EXPORTED


async def test_the_travel_state_holds_no_route_of_an_earlier_driver() -> None:
    from shared.containers import TRAVEL
    from shared.travel.stores import KIND_TRAVEL, TRAVEL_DOC_ID

    store = await world()  # Alex linked a minute before T0
    before, after = iso(-3600), iso(60)
    routes = {"THEIRS": {"routedAt": before, "origin": {"lat": 1.0, "lon": 2.0}, "dest": "their-office"},
              "ALEX-1": {"routedAt": after, "origin": {"lat": 52.5, "lon": 13.4}, "dest": "alex-office"}}  # fmt: skip
    state = {"events": routes, "notices": ["THEIRS|10", "ALEX-1|5"], "calls": []}
    await store.upsert(TRAVEL, {"id": TRAVEL_DOC_ID, "vehicleId": CARS[ALEX], "kind": KIND_TRAVEL, "state": state})
    [record] = [r["record"] for r in await export(store, ALEX) if r.get("source") == TRAVEL]
    assert list(record["state"]["events"]) == ["ALEX-1"]
    assert record["state"]["notices"] == ["ALEX-1|5"]
    assert "their-office" not in orjson.dumps(record).decode()


async def test_a_car_whose_id_needs_escaping_is_exported_whole() -> None:
    # IoT Hub device ids may hold characters a Cosmos id may not ('#', '?', '/', '%'): the vehicle document's id is
    # the escaped one (safe_id), and the export must read it by that id, or it leaves out the car's state.
    car = "car#alex?1"
    store = await world(cars={ALEX: car})
    lines = await export(store, ALEX)
    vehicle = [r for r in lines[1:-1] if r["source"] == "vehicles"]
    assert vehicle, "the car's state is missing from the export"


HANDOVER = dt.timedelta(minutes=30)  # when the car is linked to its next driver, after T0


async def _issue(store: DocumentStore, car: str, at: dt.datetime, key: str) -> str:
    from shared.auth.policy import Role
    from shared.commands.service import Caller, CommandService
    from shared.iothub.memory_gateway import MemoryIoTHubGateway
    from shared.stores.queues import MemoryQueue

    operator = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"
    service = CommandService(store, MemoryIoTHubGateway(), MemoryQueue(), clock=lambda: at)
    sent, _ = await service.issue(Caller(operator, frozenset({Role.FLEET_OPERATOR})), car, "lock", {}, key)
    return str(sent["commandId"])


async def handover(store: DocumentStore, car: str) -> tuple[str, str]:
    """Alex drives the car (`world`: linked a minute before T0, a trip at T0 with a DTC, a command at T0+10 min);
    at T0+30 min it is linked to Megan, who drives it from T0+40 min (20 messages: a history chunk then holds the
    end of Alex's time and the start of hers; a trip elsewhere, another DTC) and has a command sent to it. Returns
    the two commands' ids."""
    theirs = await _issue(store, car, T0 + dt.timedelta(minutes=10), "alex-lock")
    megan = {"userId": MEGAN, "upn": "megan@contoso.example", "timeZone": "Europe/Berlin",
             "consent": {"calendar": False, "location": True}}  # fmt: skip
    await DriverLinks(store, MemorySyncQueue(), lambda: T0 + HANDOVER).link(car, parse_link(orjson.dumps(megan)))
    await megan_drives(store, car)
    hers = await _issue(store, car, T0 + dt.timedelta(minutes=45), "megan-lock")
    assert await store.query("telemetry", "SELECT * FROM c", {}), "the test needs a flushed history chunk"
    return theirs, hers


async def megan_drives(store: DocumentStore, car: str, start: int = 40 * 60) -> None:
    trip = [dict(lv="ON", speed=90.0, lat=41.9 + s / 1000, lon=12.5, soc=60.0, dtc=["P0420"]) for s in range(20)]
    trip[-1]["lv"] = "OFF"
    batch = [message(car, drive(10 + s, start + s, **signals), enqueued_s=start + s, sequence_number=10 + s)
             for s, signals in enumerate(trip)]  # fmt: skip
    await TelemetryIngestor(store, MemoryDeadLetterSink()).ingest(batch)


def samples_of(records: list[dict[str, Any]]) -> list[str]:
    return [s["ts"] for r in records if r["source"] == "telemetry" for s in r["record"]["samples"]]


def assert_nothing_of_megan(lines: list[dict[str, Any]], hers: str) -> None:
    text = orjson.dumps(lines).decode()
    for leak in (MEGAN, "megan@", "41.9", "P0420", hers):
        assert leak not in text, f"{leak} (the new driver's) is in the former driver's export"


async def test_a_replaced_driver_keeps_the_car_for_the_time_they_drove_it_and_nothing_of_the_next_driver() -> None:
    """A company car handed to another driver: the former driver's export still holds the car for the time they
    drove it (their trip, positions, alert, the command sent to it then), and nothing recorded after the handover
    (the new driver's trip, positions, alert, command, the car's current state): that is another person's data."""
    car = CARS[ALEX]
    store = await world(cars={ALEX: car})
    theirs, hers = await handover(store, car)

    lines = await export(store, ALEX)
    manifest, *records, _ = lines
    assert manifest["vehicles"] == [{"vehicleId": car, "since": iso(-60), "until": iso(30 * 60)}]
    trips = [r["record"] for r in records if r["source"] == "trips" and r["category"] == "driving_behaviour"]
    assert [t["startTs"] for t in trips] == [iso(0)], "the former driver's trip is missing, or the next driver's is in"
    assert not [t for t in trips if set(t) & {"startPosition", "lastPosition", "endPosition"}], "a position as driving"
    assert [r["record"]["commandId"] for r in records if r["source"] == "commands"] == [theirs]
    assert iso(0) in samples_of(records), "the former driver's positions are missing"
    assert max(samples_of(records)) < iso(30 * 60), "a sample from after the handover is in the former's export"
    assert not [r for r in records if r["source"] == "vehicles"], "the car's current state is the new driver's"
    assert [r["record"]["code"] for r in records if r["source"] == "alerts"] == ["P0300"]
    [period] = [r["record"] for r in records if r["source"] == "memberships"]  # the record of the time they drove it
    assert (period["vehicleId"], period["since"], period["until"]) == (car, iso(-60), iso(30 * 60))
    assert_nothing_of_megan(lines, hers)


async def test_the_former_drivers_alert_and_command_are_as_they_stood_when_his_time_ended() -> None:
    """Alex's trouble code cleared in Megan's time (her first sample), and his queued lock delivered and done when the
    car woke in her time: his export shows both as they stood at the handover, and no time after it. When the code
    cleared and when the car took the command would tell him when the car was next driven."""
    from shared.commands.lifecycle import Status, advance
    from shared.containers import COMMANDS

    car = CARS[ALEX]
    store = await world(cars={ALEX: car})
    theirs, hers = await handover(store, car)
    # samples the car lost in Alex's time: one loss reported while he drove, one reported only in Megan's time
    ingest = TelemetryIngestor(store, MemoryDeadLetterSink())
    for gap_id, reported in ((1, 20), (2, 41 * 60)):
        gap = {"id": gap_id, "reason": "evicted", "from": iso(1), "to": iso(2), "samples": 9, "priority": 0}
        raw = orjson.dumps({"v": 1, "gap": gap})
        await ingest.ingest([message(car, raw, enqueued_s=reported, sequence_number=90 + gap_id)])
    # a lock accepted a second before the handover and queued after it; a request the car asked in his time and
    # asked again in hers (its delivery noted again then)
    late = await _issue(store, car, T0 + HANDOVER - dt.timedelta(seconds=1), "alex-late")
    [queued] = await store.query(COMMANDS, "SELECT * FROM c WHERE c.id = @i", {"@i": late})
    assert advance(queued, Status.QUEUED, T0 + HANDOVER + dt.timedelta(seconds=10))
    queued["delivery"] = {"via": "c2d", "at": iso(30 * 60 + 10)}
    await store.upsert(COMMANDS, queued)
    await store.upsert(REQUESTS, {"id": "req-1", "vehicleId": car, "requestId": "r1", "action": "agenda",
                                  "reply": {"status": 200}, "createdAt": iso(20 * 60), "ttl": 3600,
                                  "delivery": {"status": "sent", "message": "m2", "at": iso(42 * 60)}})  # fmt: skip
    [command] = await store.query(COMMANDS, "SELECT * FROM c WHERE c.id = @i", {"@i": theirs})
    assert advance(command, Status.QUEUED, T0 + dt.timedelta(minutes=10, seconds=1))  # the car was asleep
    before = command["status"]
    for status in (Status.DELIVERED, Status.SUCCEEDED):  # the car woke in Megan's time
        assert advance(command, status, T0 + dt.timedelta(minutes=41), message="done", by_car=True)
    await store.upsert(COMMANDS, command)

    lines = await export(store, ALEX)
    manifest, *records, _ = lines
    [alert] = [r["record"] for r in records if r["source"] == "alerts"]
    assert (alert["code"], alert["status"], alert["clearedAt"]) == ("P0300", "active", None)
    assert "clearValue" not in alert
    assert "clearReason" not in alert
    sent, accepted = sorted((r["record"] for r in records if r["source"] == "commands"), key=lambda c: c["createdAt"])
    assert (accepted["status"], accepted["delivery"]) == ("accepted", None), "queued after he left"
    [request] = [r["record"] for r in records if r["source"] == "requests"]
    assert request["delivery"] is None, "the car asked again in Megan's time"
    assert sent["status"] == before
    assert [t["status"] for t in sent["transitions"]] == ["accepted", "queued"]
    assert "message" not in sent, "the car's words on taking the command are from Megan's time"
    gaps = [r["record"]["gapId"] for r in records if r["source"] == "gaps"]
    assert gaps == [1], "a gap report arrived after he left (or his own is missing)"
    end = manifest["vehicles"][0]["until"]
    later = sorted(
        {text for text in _strings(records) if text[:2] == "20" and text > end}
        - {sent["expiresAt"], accepted["expiresAt"]}
    )  # a time set when the command was sent, not one of Megan's
    assert not later, f"times from after the handover are in the former driver's export: {later}"
    assert_nothing_of_megan(lines, hers)

    # Megan's export has the same alert cleared in her time: what she did while it was hers
    _, *hers_records, _ = await export(store, MEGAN)
    assert {r["record"]["code"]: r["record"]["status"] for r in hers_records if r["source"] == "alerts"}["P0300"] == (
        "cleared"
    )
    assert not [r for r in hers_records if r["source"] == "gaps"], "a loss in Alex's time is in Megan's export"


async def test_a_former_drivers_command_stored_without_dated_transitions_shows_as_accepted() -> None:
    """A stored command whose transitions do not date it (an odd shape from any writer): its later status, time and
    the car's words are not shown to a former driver; it shows as accepted when it was created."""
    from shared.containers import COMMANDS

    car = CARS[ALEX]
    store = await world(cars={ALEX: car})
    await handover(store, car)
    for n, transitions in enumerate((None, [{"status": "succeeded"}])):
        await store.upsert(COMMANDS, {"id": f"odd-{n}", "vehicleId": car, "kind": "command", "name": "lock",
                                      "createdAt": iso(20 * 60), "status": "succeeded", "updatedAt": iso(41 * 60),
                                      "message": "locked", "transitions": transitions, "issuedBy": {"role": "x"}})  # fmt: skip
    _, *records, _ = await export(store, ALEX)
    odd = [r["record"] for r in records if r["source"] == "commands" and r["record"]["commandId"].startswith("odd-")]
    assert [(c["status"], c["updatedAt"], "message" in c) for c in odd] == [("accepted", iso(20 * 60), False)] * 2


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in _strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


async def test_the_next_drivers_withdrawal_of_location_leaves_the_former_drivers_positions_in_his_export() -> None:
    """Megan takes the car with location consent withheld while Alex's last messages are still in its history
    buffer: her first message's fold scrubs positions from what the car buffers, but only hers. Alex's positions,
    recorded in his time, stay his, and his export holds them once the buffer is written as a chunk."""
    from shared.containers import VEHICLES

    car = CARS[ALEX]
    store = await world(cars={ALEX: car})
    megan = {"userId": MEGAN, "upn": "megan@contoso.example", "timeZone": "Europe/Berlin",
             "consent": {"calendar": False, "location": False}}  # fmt: skip
    await DriverLinks(store, MemorySyncQueue(), lambda: T0 + HANDOVER).link(car, parse_link(orjson.dumps(megan)))
    stored = await store.read(VEHICLES, car, safe_id(car))
    assert stored is not None
    left = stored.document["driverLeft"]
    assert (left["userId"], left["since"], left["at"]) == (ALEX, iso(-60), iso(30 * 60))
    assert left["consent"]["location"] is True, "the consent Alex left the car with"
    await megan_drives(store, car)  # 20 messages: the buffer with Alex's 3 is written as a chunk

    _, *records, _ = await export(store, ALEX)
    positions = [s for r in records if r["source"] == "telemetry" and r["category"] == "position"
                 for s in r["record"]["samples"]]  # fmt: skip
    kept = {s["ts"]: s["signals"]["Vehicle.CurrentLocation.Latitude"] for s in positions if "signals" in s}
    assert kept == {iso(s): 52.5 + s / 1000 for s in range(3)}, "Megan's withdrawal took Alex's positions"
    _, *hers, _ = await export(store, MEGAN)
    assert "41.9" not in orjson.dumps(hers).decode(), "Megan's own positions were stored"


async def test_erasing_the_former_driver_takes_his_dated_time_off_the_car() -> None:
    """After a finished handover the car keeps Alex's dated time (what Megan's withdrawal leaves to him); erasing
    him takes it, since nothing of his is kept for him any more."""
    from shared.containers import VEHICLES
    from shared.iothub.memory_gateway import MemoryIoTHubGateway
    from shared.privacy.erasure import Eraser

    car = CARS[ALEX]
    store = await world(cars={ALEX: car})
    await handover(store, car)
    stored = await store.read(VEHICLES, car, safe_id(car))
    assert stored is not None
    assert stored.document["driverLeft"]["userId"] == ALEX
    assert "handovers" not in stored.document, "the test needs a finished handover"

    async def no_graph(user: str, vehicle: str) -> None:
        return None

    links = DriverLinks(store, MemorySyncQueue(), lambda: NOW)
    await Eraser(store, MemoryIoTHubGateway(), links, no_graph, clock=lambda: NOW).erase_driver(ALEX)
    stored = await store.read(VEHICLES, car, safe_id(car))
    assert stored is not None
    assert "driverLeft" not in stored.document
    assert stored.document["driver"]["userId"] == MEGAN


async def test_the_new_drivers_export_holds_no_sample_of_the_former_from_a_chunk_spanning_the_handover() -> None:
    car = CARS[ALEX]
    store = await world(cars={ALEX: car})
    _, hers = await handover(store, car)
    manifest, *records, _ = await export(store, MEGAN)
    assert manifest["vehicles"] == [{"vehicleId": car, "since": iso(30 * 60)}]
    assert samples_of(records)
    assert min(samples_of(records)) >= iso(30 * 60), "the former driver's samples are in the new driver's export"
    spans = [r["record"]["from"] for r in records if r["source"] == "telemetry"]
    assert min(spans) >= iso(30 * 60), "the chunk's span tells her when the former driver drove"
    assert [r["record"]["commandId"] for r in records if r["source"] == "commands"] == [hers]
    # Alex's trouble code, still on when her time began (cleared by her first sample): the car's state in her time
    alerts = {r["record"]["code"]: r["record"]["status"] for r in records if r["source"] == "alerts"}
    assert alerts == {"P0300": "cleared", "P0420": "active"}
    assert ALEX not in orjson.dumps(records).decode()


async def test_a_driver_who_comes_back_gets_both_times_and_not_the_one_between() -> None:
    car = CARS[ALEX]
    store = await world(cars={ALEX: car})
    await handover(store, car)
    alex = {"userId": ALEX, "upn": "alex@contoso.example", "timeZone": "Europe/Berlin",
            "consent": {"calendar": False, "location": True}}  # fmt: skip
    back = T0 + dt.timedelta(hours=2)
    await DriverLinks(store, MemorySyncQueue(), lambda: back).link(car, parse_link(orjson.dumps(alex)))
    lines = await export(store, ALEX)
    manifest, *records, _ = lines
    assert manifest["vehicles"] == [
        {"vehicleId": car, "since": iso(-60), "until": iso(30 * 60)},
        {"vehicleId": car, "since": iso(2 * 3600)},
    ]
    assert samples_of(records)
    assert max(samples_of(records)) < iso(30 * 60)
    trips = [r["record"]["startTs"] for r in records if r["source"] == "trips" and r["category"] == "driving_behaviour"]
    assert trips == [iso(0)]
    # and Megan, replaced in turn, keeps her time and nothing of Alex's two
    manifest, *records, _ = await export(store, MEGAN)
    assert manifest["vehicles"] == [{"vehicleId": car, "since": iso(30 * 60), "until": iso(2 * 3600)}]
    assert samples_of(records)
    assert min(samples_of(records)) >= iso(30 * 60)


async def test_a_driver_unlinked_by_the_operator_keeps_the_car_from_accepting_the_invitation_to_the_unlink() -> None:
    """The period starts when they accepted the invitation (their Driver membership), not at their last re-link,
    and ends at the operator's unlink: recorded before the membership and the link that date it go. A trip the
    car drove across the change (never switched off) is left out: its end is the next driver's."""
    from shared.auth.access import Access, Grant, Resource
    from shared.auth.policy import Role
    from shared.auth.principal import Principal
    from shared.tenancy.service import TenancyService
    from tests.fleet_support import BRAND, FLEET, Fleet

    tenant, car = "5c1b2a4d-0b5c-4a6e-9d3f-7f0e9a553c1b", "car-001"
    fleet = Fleet()
    await fleet.register(BRAND, FLEET, [car])
    now = [T0 - dt.timedelta(hours=1)]
    links = DriverLinks(fleet.store, MemorySyncQueue(), lambda: now[0])
    tenancy = TenancyService(fleet.store, links, home_tenants=(tenant,), clock=lambda: now[0])

    def person(oid: str, *grants: Grant) -> Access:
        principal = Principal(oid, tenant, "client", frozenset(), frozenset(), False, username=f"{oid[:4]}@c.example")
        return Access(principal, grants, Resource(BRAND, FLEET, car))

    operator = person("9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b", Grant(Role.FLEET_OPERATOR, BRAND, FLEET))
    for driver, accepted in ((ALEX, now[0]), (MEGAN, T0 + dt.timedelta(minutes=35))):
        now[0] = accepted
        invitation = await tenancy.invite_driver(operator, car, driver, None)
        await tenancy.accept_invitation(person(driver), invitation["invitationId"], "Europe/Berlin", False, True)
        if driver == ALEX:
            now[0] = T0 + dt.timedelta(minutes=5)  # Alex changes his link: linkedAt moves, the membership stays
            await tenancy.link_self(person(ALEX), car, "Europe/Berlin", False, True)
            await fleet.drive(car, range(3), lv="ON", speed=40.0, lat=52.5, lon=13.4)
            now[0] = T0 + HANDOVER
            await tenancy.unlink(operator, car)
    await megan_drives(fleet.store, car)

    lines = await export(fleet.store, ALEX)
    manifest, *records, _ = lines
    assert manifest["vehicles"] == [{"vehicleId": car, "since": iso(-3600), "until": iso(30 * 60)}]
    assert samples_of(records)
    assert max(samples_of(records)) < iso(30 * 60)
    assert [r["record"]["code"] for r in records if r["source"] == "alerts"] == []  # Megan's DTC, not Alex's
    # the car was never switched off between them: one trip, from Alex's start to Megan's end, is neither's
    assert not [r for r in records if r["source"] == "trips"]
    assert_nothing_of_megan(lines, "no command")
    # the record of the time Alex drove it went to his partition before his membership and link went
    stored = await fleet.store.query("memberships", "SELECT * FROM c WHERE c.principalId = @u", {"@u": ALEX})
    assert [(d["kind"], d.get("role")) for d in stored] == [("drivingPeriod", None)]


async def test_the_cars_own_places_are_the_driver_whose_time_they_were_set_in_and_leave_with_them() -> None:
    """A car's home and work (geofences of the car) are set by or for its driver: each is the driver's whose
    period holds when it was set (`placedAt`, else `updatedAt`). The former driver's home is in their export while
    they drive, and leaves with them at the handover: never in the next driver's export, nor on the car for the
    next driver to see (shared/drivers/places.py). A place set before anyone drove the car is nobody's and stays."""
    from shared.containers import TENANCY
    from shared.geofences.store import KIND_VEHICLE_GEOFENCE

    car = CARS[ALEX]
    store = await world(cars={ALEX: car})
    shape = {"type": "Circle", "center": [13.4, 52.5], "radiusM": 100}

    async def place(name: str, at: str) -> None:
        await store.upsert(TENANCY, {"id": f"geofence@{car}:{name}", "brandId": "contoso", "geofenceId": name,
                                     "kind": KIND_VEHICLE_GEOFENCE, "vehicleId": car, "name": name, "shape": shape,
                                     "updatedAt": at})  # fmt: skip

    def places(lines: list[dict[str, Any]]) -> list[str]:
        return [r["record"]["geofenceId"] for r in lines if r.get("source") == TENANCY]

    await place("depot", iso(-7200))
    await place("alex-home", iso(5 * 60))
    assert places(await export(store, ALEX)) == ["alex-home"]
    await handover(store, car)
    await place("megan-home", iso(45 * 60))
    assert places(await export(store, ALEX)) == [], "the former driver's home outlived his time with the car"
    assert places(await export(store, MEGAN)) == ["megan-home"], "the former driver's home is in the next's export"
    on_car = await store.query(TENANCY, "SELECT * FROM c WHERE c.vehicleId = @v", {"@v": car})
    assert sorted(d["geofenceId"] for d in on_car if d.get("vehicleId") == car) == ["depot", "megan-home"]


# ---- a handover through the tenancy service: invitations accepted, a membership revoked, a handover that fails --

TENANT = "5c1b2a4d-0b5c-4a6e-9d3f-7f0e9a553c1b"
OPERATOR = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b"


class Brand:
    """car-001 of the fleet support's brand, its operator, and drivers who accept invitations to it, at `now`."""

    def __init__(self) -> None:
        from shared.tenancy.service import TenancyService
        from tests.fleet_support import Fleet

        self.car = "car-001"
        self.now = T0 - dt.timedelta(hours=1)
        self.fleet = Fleet()
        self.store = self.fleet.store
        self.links = DriverLinks(self.store, MemorySyncQueue(), lambda: self.now)
        self.tenancy = TenancyService(self.store, self.links, home_tenants=(TENANT,), clock=lambda: self.now)

    def person(self, oid: str, *grants: Any) -> Any:
        from shared.auth.access import Access, Resource
        from shared.auth.principal import Principal
        from tests.fleet_support import BRAND, FLEET

        principal = Principal(oid, TENANT, "client", frozenset(), frozenset(), False, username=f"{oid[:4]}@c.example")
        return Access(principal, grants, Resource(BRAND, FLEET, self.car))

    async def accept(self, driver: str, at: dt.datetime) -> None:
        from shared.auth.access import Grant
        from shared.auth.policy import Role
        from tests.fleet_support import BRAND, FLEET

        if not await self.store.read("vehicles", self.car, self.car):
            await self.fleet.register(BRAND, FLEET, [self.car])
        self.now = at
        operator = self.person(OPERATOR, Grant(Role.FLEET_OPERATOR, BRAND, FLEET))
        invitation = await self.tenancy.invite_driver(operator, self.car, driver, None)
        await self.tenancy.accept_invitation(self.person(driver), invitation["invitationId"], "UTC", False, True)

    async def memberships(self, user: str) -> list[tuple[str, Any]]:
        found = await self.store.query("memberships", "SELECT * FROM c WHERE c.principalId = @u", {"@u": user}, user)
        return sorted((d["kind"], d.get("role")) for d in found)


async def test_a_brand_admin_cannot_delete_the_record_of_the_time_a_driver_drove_a_car() -> None:
    """The record (kind drivingPeriod) sits in the driver's partition of memberships, with the brand and an id of
    the membership pattern: the route that revokes memberships must not take it (it would shrink the driver's
    export, their right of access); revoking a Driver membership there unlinks the driver: the handover records the time."""
    from shared.auth.policy import Role
    from shared.drivers.periods import former_periods, period_id
    from shared.errors import UnknownResourceError
    from shared.tenancy.documents import membership_id
    from tests.fleet_support import BRAND

    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    await brand.accept(MEGAN, T0 + HANDOVER)
    record = period_id(brand.car, iso(-3600))
    assert await brand.memberships(ALEX) == [("drivingPeriod", None)]
    with pytest.raises(UnknownResourceError):
        await brand.tenancy.delete_member(BRAND, ALEX, record)
    assert await brand.memberships(ALEX) == [("drivingPeriod", None)], "the period record was deleted"
    # the admin revokes Megan's Driver membership: her time so far is recorded before it goes
    brand.now = T0 + dt.timedelta(hours=2)
    await brand.tenancy.delete_member(BRAND, MEGAN, membership_id(Role.DRIVER, BRAND, None, brand.car))
    [period] = await former_periods(brand.store, MEGAN)
    assert (period.since, period.until) == (iso(30 * 60), iso(2 * 3600))


async def test_revoking_the_current_drivers_membership_unlinks_them_and_no_one_else() -> None:
    """Revoking a Driver membership through the members route ends the driving as unlinking does: the link goes
    (calendar sync stops), not only the membership. A membership a failed handover left to the former driver goes
    alone: the car's current driver stays linked."""
    from shared.auth.policy import Role
    from shared.containers import CALENDARS, MEMBERSHIPS
    from shared.tenancy.documents import membership_id
    from tests.fleet_support import BRAND

    brand = Brand()
    driver_membership = membership_id(Role.DRIVER, BRAND, None, brand.car)
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    await brand.accept(MEGAN, T0 + HANDOVER)
    # a handover cut short after the car named Megan leaves Alex his Driver membership (docs/identity.md)
    await brand.store.upsert(MEMBERSHIPS, {"id": driver_membership, "kind": "membership", "principalId": ALEX,
                                           "tenantId": TENANT, "role": Role.DRIVER.value, "brandId": BRAND,
                                           "fleetId": None, "vehicleId": brand.car})  # fmt: skip
    await brand.tenancy.delete_member(BRAND, ALEX, driver_membership)
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert car.document["driver"]["userId"] == MEGAN, "revoking the former driver unlinked the current one"
    # the admin revokes Megan's: she is unlinked, her calendar no longer goes to the car
    brand.now = T0 + dt.timedelta(hours=2)
    await brand.tenancy.delete_member(BRAND, MEGAN, driver_membership)
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert "driver" not in car.document, "a revoked driver is still the car's driver"
    assert await brand.store.read(CALENDARS, MEGAN, "driver") is None
    assert [j.reason for j, _ in brand.links.queue.jobs][-1] == "unlink"  # type: ignore[attr-defined]
    assert await brand.memberships(MEGAN) == [("drivingPeriod", None)]


async def megan_accepts_and_a_write_fails(
    brand: Brand, monkeypatch: pytest.MonkeyPatch, method: str, fails: Callable[..., bool]
) -> None:
    """Megan accepts an invitation to the car at the handover, and the store's `method` fails for the call whose
    arguments (after the container) `fails` picks: the acceptance raises, the store works again after."""
    from shared.errors import StoreError

    real = getattr(brand.store, method)

    async def failing(container: str, *args: Any) -> Any:
        if fails(*args):
            raise StoreError("the service is unavailable")
        return await real(container, *args)

    monkeypatch.setattr(brand.store, method, failing)
    with pytest.raises(StoreError):
        await brand.accept(MEGAN, T0 + HANDOVER)
    monkeypatch.setattr(brand.store, method, real)


async def test_a_handover_cut_short_is_finished_by_a_retry_and_meanwhile_the_former_driver_has_nothing_of_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The car names Megan, then recording Alex's time fails: the handover is in the car's document. Until it is
    finished Alex's leftover Driver membership reads nothing of the car and his export stops at the handover; the
    retry (Megan accepting again) finishes it: his period recorded at the handover, his membership gone."""
    from shared.auth.access import AccessControl
    from shared.auth.policy import Permission, requires
    from shared.drivers.handover import HANDOVERS
    from shared.drivers.periods import former_periods
    from shared.errors import AccessDeniedError
    from shared.privacy.export import DriverExport

    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    await megan_accepts_and_a_write_fails(brand, monkeypatch, "create", lambda doc: doc.get("kind") == "drivingPeriod")
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert car.document["driver"]["userId"] == MEGAN
    assert car.document[HANDOVERS] == [{"userId": ALEX, "profile": None, "at": iso(30 * 60), "since": iso(-3600)}]
    assert ("membership", "Driver") in await brand.memberships(ALEX), "the failure left Alex's membership"

    async def nobody(_: str | None) -> Any:
        raise AssertionError

    gate = AccessControl(brand.store, nobody)
    alex = brand.person(ALEX).principal
    with pytest.raises(AccessDeniedError):
        await gate.authorize(alex, requires(Permission.READ_VEHICLES, on="vehicle"), {"vehicleId": brand.car})
    with pytest.raises(AccessDeniedError):  # nor links himself back, taking the car from Megan
        await gate.authorize(alex, requires(Permission.LINK_SELF, on="vehicle"), {"vehicleId": brand.car})
    periods = await DriverExport(brand.store, default_categories().category_of, lambda: NOW).cars(ALEX)
    assert [(p.vehicle_id, p.since, p.until) for p in periods] == [(brand.car, iso(-3600), iso(30 * 60))]

    # the retry finishes it
    await brand.accept(MEGAN, T0 + HANDOVER + dt.timedelta(minutes=1))
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert HANDOVERS not in car.document
    assert await brand.memberships(ALEX) == [("drivingPeriod", None)]
    [period] = await former_periods(brand.store, ALEX)
    assert (period.since, period.until) == (iso(-3600), iso(30 * 60)), "his time ends at the handover, not the retry"
    await gate.authorize(
        brand.person(MEGAN).principal, requires(Permission.READ_VEHICLES, on="vehicle"), {"vehicleId": brand.car}
    )


async def test_erasing_a_former_driver_whose_handover_is_unfinished_takes_his_entry_from_the_car(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """His handover is cut short before his link went: erasing him takes his entry from the car, and unlinks him
    only, not the car's driver his driver document's car now has."""
    from shared.drivers.handover import HANDOVERS

    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    # his link (his calendar's driver document) cannot go: it still names the car
    await megan_accepts_and_a_write_fails(brand, monkeypatch, "delete", lambda partition, item: partition == ALEX)
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert [e["userId"] for e in car.document[HANDOVERS]] == [ALEX]
    await brand.fleet.service.erase_driver(ALEX)
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert HANDOVERS not in car.document, "the erased driver's id is still in the car's document"
    assert car.document["driver"]["userId"] == MEGAN, "erasing the former driver unlinked the car's driver"


async def test_a_place_renamed_in_a_drivers_time_stays_whose_it_was_and_a_new_shape_is_theirs() -> None:
    """The car's depot, set before anyone drove it, renamed by an admin while Alex drives: it stays nobody's
    (`placedAt` kept) and stays on the car after his handover. His home goes with him, and so does the depot's new
    shape set in his time: the next driver, Megan, finds only what is nobody's."""
    from shared.geofences.service import GeofenceService
    from tests.fleet_support import BRAND, FLEET

    brand = Brand()
    await brand.fleet.register(BRAND, FLEET, [brand.car])
    fences = GeofenceService(brand.store, lambda: brand.now)
    circle: dict[str, Any] = {"type": "Circle", "center": [13.4, 52.5], "radiusM": 100}
    depot: dict[str, Any] = {"name": "depot", "shape": circle}
    brand.now = T0 - dt.timedelta(hours=2)
    await fences.put_vehicle_geofence(brand.car, "depot", depot)
    await fences.put_vehicle_geofence(brand.car, "gate", {"name": "gate", "shape": circle})
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    brand.now = T0 - dt.timedelta(minutes=30)
    await fences.put_vehicle_geofence(brand.car, "home", {"name": "home", "shape": {**circle, "radiusM": 50}})
    await fences.put_vehicle_geofence(brand.car, "depot", {**depot, "name": "Depot (north gate)"})
    await fences.put_vehicle_geofence(brand.car, "gate", {"name": "gate", "shape": {**circle, "radiusM": 20}})

    async def places(user: str) -> list[str]:
        archive = DriverExport(brand.store, default_categories().category_of, lambda: NOW)
        lines = [orjson.loads(line) async for line in archive.lines(user)]
        return sorted(r["record"]["name"] for r in lines if r.get("source") == "tenancy")

    assert await places(ALEX) == ["gate", "home"]
    await brand.accept(MEGAN, T0 + HANDOVER)
    listed = await fences.list_vehicle_geofences(brand.car)
    assert [g["name"] for g in listed["items"]] == ["Depot (north gate)"], "the former driver's places are on the car"
    assert (await places(ALEX), await places(MEGAN)) == ([], [])


def is_period(doc: Any) -> bool:
    return bool(doc.get("kind") == "drivingPeriod")


async def test_revoking_a_departed_drivers_membership_ends_his_time_at_the_handover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An admin revokes the membership a cut-short handover left Alex, hours later: the handover is finished
    first, so his time ends when Megan took the car, not at the revocation, and his link goes with it."""
    from shared.auth.policy import Role
    from shared.drivers.handover import HANDOVERS
    from shared.drivers.periods import former_periods
    from shared.tenancy.documents import membership_id
    from tests.fleet_support import BRAND

    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    await megan_accepts_and_a_write_fails(brand, monkeypatch, "create", is_period)
    brand.now = T0 + dt.timedelta(hours=3)
    await brand.tenancy.delete_member(BRAND, ALEX, membership_id(Role.DRIVER, BRAND, None, brand.car))
    assert [(p.since, p.until) for p in await former_periods(brand.store, ALEX)] == [(iso(-3600), iso(30 * 60))]
    assert await brand.store.read(CALENDARS, ALEX, "driver") is None, "his calendar still goes to Megan's car"
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert HANDOVERS not in car.document
    assert car.document["driver"]["userId"] == MEGAN


async def test_a_departed_driver_does_not_list_the_car(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.auth.access import Access, grants_of
    from shared.auth.principal import Principal

    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))

    async def listed() -> list[str]:
        query = "SELECT * FROM c WHERE c.principalId = @u"
        found = await brand.store.query("memberships", query, {"@u": ALEX}, ALEX)
        principal = Principal(ALEX, TENANT, "client", frozenset(), frozenset(), False, username="alex@c.example")
        page = await brand.fleet.service.list_vehicles(
            Access(principal, grants_of(principal, found)).visibility(), 50, None
        )
        return [item["vehicleId"] for item in page["items"]]

    assert await listed() == [brand.car]
    await megan_accepts_and_a_write_fails(brand, monkeypatch, "create", is_period)
    assert await listed() == [], "the departed driver lists the car, with its new driver"


async def test_a_departed_driver_invited_back_keeps_the_time_he_drove_before(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.drivers.periods import former_periods

    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    await megan_accepts_and_a_write_fails(brand, monkeypatch, "create", is_period)
    await brand.accept(ALEX, T0 + dt.timedelta(hours=2))  # the operator invites him back; he accepts
    assert [(p.since, p.until) for p in await former_periods(brand.store, ALEX)] == [(iso(-3600), iso(30 * 60))]
    assert [(p.since, p.until) for p in await former_periods(brand.store, MEGAN)] == [(iso(30 * 60), iso(2 * 3600))]
    periods = await DriverExport(brand.store, default_categories().category_of, lambda: NOW).cars(ALEX)
    assert [(p.since, p.until) for p in periods] == [(iso(-3600), iso(30 * 60)), (iso(2 * 3600), None)]


async def test_a_departed_drivers_agenda_does_not_go_to_the_car_meanwhile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handover failed before Alex's link went: his link still names the car, but the calendar sync sends his
    agenda only to a car he drives (`drives`, what the sync asks of each car; the sync's own test is in
    test_calendar_review_fixes.py)."""
    from shared.drivers.driven import drives

    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    await megan_accepts_and_a_write_fails(brand, monkeypatch, "delete", lambda partition, item: partition == ALEX)
    link = await brand.store.read(CALENDARS, ALEX, "driver")
    assert link is not None
    assert link.document["vehicleId"] == brand.car, "the test needs his link left naming the car"
    assert not await drives(brand.store, brand.car, ALEX)
    assert await drives(brand.store, brand.car, MEGAN)


async def test_two_drivers_linked_to_a_car_at_once_leave_one_link_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The car names Megan, then Nina is linked (whole) before Megan's link finishes: Nina's write records Megan's
    leaving, which takes Megan's link; none is left naming a car that is not theirs (their agenda would go on
    being synced for it)."""
    import asyncio

    nina = "3c2b1a09-8f7e-4d6c-9b5a-4f3e2d1c0b03"
    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    replace, held, release = brand.store.replace, asyncio.Event(), asyncio.Event()

    async def holding(container: str, doc: dict[str, Any], etag: str) -> str:
        written = await replace(container, doc, etag)
        if container == "vehicles" and (doc.get("driver") or {}).get("userId") == MEGAN and not held.is_set():
            held.set()
            await release.wait()
        return written

    monkeypatch.setattr(brand.store, "replace", holding)
    megan = asyncio.create_task(brand.accept(MEGAN, T0 + HANDOVER))
    await asyncio.wait_for(held.wait(), 5)
    await brand.accept(nina, T0 + HANDOVER)
    release.set()
    await megan
    car = await brand.store.read("vehicles", brand.car, brand.car)
    assert car is not None
    assert car.document["driver"]["userId"] == nina
    assert "handovers" not in car.document
    links = {user: await brand.store.read(CALENDARS, user, "driver") for user in (ALEX, MEGAN, nina)}
    assert [user for user, link in links.items() if link is not None] == [nina], "a former driver's link is left"


async def test_a_link_to_a_car_that_is_not_registered_leaves_no_link_behind() -> None:
    from shared.drivers.link import DriverLink
    from shared.errors import UnknownResourceError

    brand = Brand()
    with pytest.raises(UnknownResourceError):
        await brand.links.link("car-nowhere", DriverLink(ALEX, "alex@c.example", "UTC", True, True))
    assert await brand.store.read(CALENDARS, ALEX, "driver") is None


async def test_an_unlink_cut_short_after_the_car_drops_its_driver_is_finished_by_the_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator unlinks Alex; the car drops him, then removing his calendar link fails. The retry (404: the
    car has no driver) still finishes his leaving: his link, his membership, his time ending at the first try."""
    from shared.auth.access import Access, Grant, Resource
    from shared.auth.policy import Role
    from shared.drivers.periods import former_periods
    from shared.errors import StoreError, UnknownResourceError
    from tests.fleet_support import BRAND, FLEET

    brand = Brand()
    await brand.accept(ALEX, T0 - dt.timedelta(hours=1))
    operator = Access(brand.person(OPERATOR).principal, (Grant(Role.FLEET_OPERATOR, BRAND, FLEET),),
                      Resource(BRAND, FLEET, brand.car))  # fmt: skip
    delete = brand.store.delete

    async def failing(container: str, partition: str, item: str) -> bool:
        if container == CALENDARS:
            raise StoreError("the service is unavailable")
        return await delete(container, partition, item)

    brand.now = T0
    monkeypatch.setattr(brand.store, "delete", failing)
    with pytest.raises(StoreError):
        await brand.tenancy.unlink(operator, brand.car)
    monkeypatch.setattr(brand.store, "delete", delete)
    brand.now = T0 + dt.timedelta(hours=1)
    with pytest.raises(UnknownResourceError):
        await brand.tenancy.unlink(operator, brand.car)
    assert await brand.store.read(CALENDARS, ALEX, "driver") is None, "his calendar still names the car"
    assert await brand.memberships(ALEX) == [("drivingPeriod", None)]
    assert [(p.since, p.until) for p in await former_periods(brand.store, ALEX)] == [(iso(-3600), iso(0))]
