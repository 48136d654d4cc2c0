"""A driver's export: every category of data they have, by category, and nothing of anyone else.

Two drivers, each linked to their own car; both cars drive (positions, speed, charge, a diagnostic code, trips),
both drivers have calendar events and a Teams meeting. The export of one must hold each of their categories and
not one id, event or signal of the other driver or their car.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from shared.calendar.documents import KIND_EVENT, event_doc_id
from shared.calendar.jobs import MemorySyncQueue
from shared.containers import AUDIT, CALENDARS, MEETINGS, partition_keys
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
            "name": "Home", "shape": {"type": "Circle", "center": [13.4, 52.5], "radiusM": 100}}  # fmt: skip
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
