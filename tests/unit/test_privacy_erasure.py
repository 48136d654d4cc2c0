"""Erasure (shared/privacy/erasure.py) on in-memory stores fed by real ingestion: the order that keeps ingestion
in flight out, dead letters by prefix, the driver's Teams meetings, the receipt and the sweep after the window."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from shared.containers import MEETINGS, TRIPS, VEHICLES, partition_keys
from shared.device_messages import DeadLetter, DeviceMessage, canonical_time
from shared.stores.base import Document
from shared.stores.memory import MemoryDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import drive, message
from tests.fleet_support import USER, Fleet


class RecordingStore(MemoryDocumentStore):
    """Records every write and delete in order, as (operation, container, id or type)."""

    def __init__(self) -> None:
        super().__init__(partition_keys())
        self.log: list[tuple[str, str, str]] = []

    async def replace(self, container: str, document: Document, etag: str) -> str:
        self.log.append(("replace", container, str(document.get("type") or document["id"])))
        return await super().replace(container, document, etag)

    async def upsert(self, container: str, document: Document) -> str:
        self.log.append(("upsert", container, str(document.get("type") or document["id"])))
        return await super().upsert(container, document)

    async def delete(self, container: str, partition_key: str, item_id: str) -> bool:
        self.log.append(("delete", container, item_id))
        return await super().delete(container, partition_key, item_id)

    async def query(
        self, container: str, query: str, parameters: Mapping[str, Any] | None = None, partition_key: str | None = None
    ) -> Sequence[Document]:
        return await super().query(container, query, parameters, partition_key)


@pytest.fixture
async def fleet() -> Fleet:
    fleet = Fleet()
    await fleet.add_fleet()
    await fleet.call("POST", "/api/brands/contoso/fleets/berlin/vehicles", body={"vehicleId": "car-001"})
    return fleet


def of(fleet: Fleet, car: str) -> list[dict[str, Any]]:
    store = fleet.store
    assert isinstance(store, MemoryDocumentStore)
    return [d for c in partition_keys() for d in store.documents(c) if car in str(d)]


async def test_the_tombstone_is_written_first_then_the_identity_then_the_documents() -> None:
    # GIVEN a car with history, trips and alerts
    fleet = Fleet(store=RecordingStore())
    await fleet.add_fleet()
    await fleet.call("POST", "/api/brands/contoso/fleets/berlin/vehicles", body={"vehicleId": "car-001"})
    await fleet.drive("car-001", range(20), lv="ON", speed=30.0, dtc=["P0300"])
    store = fleet.store
    assert isinstance(store, RecordingStore)
    store.log.clear()
    # WHEN it is erased
    assert (await fleet.call("DELETE", "/api/vehicles/car-001")).status == 200
    # THEN the first write is the tombstone, a conditional replace of the vehicle document, before any delete
    assert store.log[0] == ("replace", VEHICLES, "erased")
    assert [op for op in store.log if op[0] == "delete"]
    assert not [op for op in store.log[1:] if op[1] == VEHICLES]
    assert "car-001" in fleet.gateway.deleted


async def test_a_batch_that_read_the_car_before_the_tombstone_cannot_commit_after_it(fleet: Fleet) -> None:
    # GIVEN an ingestion instance that has the car's document cached (with its etag) from an earlier batch
    ingestor = TelemetryIngestor(fleet.store, fleet.dead_letters)
    await ingestor.ingest([message("car-001", drive(t + 1, t, lv="ON", speed=20.0), t, t) for t in range(5)])
    assert "car-001" in ingestor.cache
    # WHEN the car is erased and that instance then commits its next batch
    await fleet.call("DELETE", "/api/vehicles/car-001")
    report = await ingestor.ingest([message("car-001", drive(t + 1, t, speed=25.0), t, t) for t in range(5, 9)])
    # THEN its etag-conditional write fails on the tombstone, it reads it and drops the messages
    assert (report.accepted, report.erased, report.conflicts) == (0, 4, 1)
    assert [d["type"] for d in of(fleet, "car-001")] == ["erased"]


async def test_dead_letters_and_parked_messages_of_the_car_are_deleted_and_counted(fleet: Fleet) -> None:
    # GIVEN dead letters of two cars (not JSON), a parked outbox document and a contained request of car-001
    await fleet.drive("car-002", range(1), speed=1.0)
    ingestor = TelemetryIngestor(fleet.store, fleet.dead_letters)
    await ingestor.ingest([message(car, b"\xff not json", 1, n) for n, car in enumerate(["car-001", "car-002"] * 2)])
    for stream in ("outbox", "requests"):
        source = DeviceMessage(b'{"container": "trips"}', "car-001", None, None)
        await fleet.dead_letters.put(DeadLetter(stream, "store_rejected", "413", source))
    assert len([n for n in fleet.dead_letters.records if "/car-001/" in n]) == 4
    # WHEN car-001 is erased
    receipt = (await fleet.call("DELETE", "/api/vehicles/car-001")).json
    # THEN its records are gone (found by the name prefix of each stream), car-002's stay
    assert receipt["deadLetters"] == 4
    assert sorted(fleet.dead_letters.records) == [n for n in sorted(fleet.dead_letters.records) if "/car-002/" in n]
    assert len(fleet.dead_letters.records) == 2
    assert len(await fleet.dead_letters.list("telemetry", "car-002")) == 2  # listing by car still works


async def test_the_drivers_teams_meetings_are_deleted_in_graph_with_the_car_and_with_the_driver(fleet: Fleet) -> None:
    # GIVEN a linked driver with two meetings the app created (one for an event, one ad hoc from the car),
    # and one whose Graph meeting is already gone
    await fleet.drive("car-001", range(2), speed=1.0)
    await fleet.link_driver("car-001")
    for n, origin in enumerate([{"eventId": "e1"}, {"vehicleId": "car-001"}, {"vehicleId": "car-001"}]):
        doc = {
            "id": f"car-now-{n}",
            "userId": USER,
            "meetingId": f"MSo{n}",
            "joinWebUrl": "https://t",
            "origin": origin,
        }
        await fleet.store.upsert(MEETINGS, doc)
    fleet.graph.meetings |= {(USER, "MSo0"), (USER, "MSo1")}
    # WHEN the car is erased
    receipt = (await fleet.call("DELETE", "/api/vehicles/car-001")).json
    # THEN every meeting of its driver is deleted in Graph (404 counts as gone) and from the store
    assert sorted(fleet.graph.deleted) == [(USER, "MSo0"), (USER, "MSo1")]
    assert receipt["graph"] == {"onlineMeetings": 2, "subscriptions": 0}
    assert receipt["documents"]["meetings"] == 3
    assert [d for d in of(fleet, USER) if d.get("meetingId")] == []


async def test_erasing_the_driver_deletes_their_meetings_in_graph_and_their_consent_records(fleet: Fleet) -> None:
    await fleet.link_driver("car-001")
    record = {"id": f"{USER}:position:000001", "vehicleId": "car-001", "userId": USER, "kind": "consentRecord"}
    await fleet.store.upsert("consents", record)
    await fleet.store.upsert(MEETINGS, {"id": "m", "userId": USER, "meetingId": "MSo9", "joinWebUrl": "https://t"})
    fleet.graph.meetings.add((USER, "MSo9"))
    receipt = (await fleet.call("DELETE", f"/api/drivers/{USER}")).json
    assert fleet.graph.deleted == [(USER, "MSo9")]
    assert receipt["subject"] == "driver"
    assert receipt["graph"]["onlineMeetings"] == 1
    assert receipt["documents"]["consents"] == 1
    assert [d for d in of(fleet, USER)] == []
    assert (await fleet.call("DELETE", f"/api/drivers/{USER}")).json["graph"]["onlineMeetings"] == 0


async def _replaced(fleet: Fleet) -> str:
    """USER drove car-001 and was replaced by another driver: the time they drove it is recorded (their export
    keeps it, shared/drivers/periods.py). Returns the other driver."""
    import orjson

    from shared.drivers.link import DriverLinks, parse_link

    other = "0f9b8e2d-6c1a-4f57-8d3e-5a7b9c1d2e02"
    await fleet.link_driver("car-001")
    link = {
        "userId": other,
        "upn": "o@contoso.com",
        "timeZone": "UTC",
        "consent": {"calendar": False, "location": True},
    }
    later = fleet.now + dt.timedelta(hours=1)
    await DriverLinks(fleet.store, fleet.queue, lambda: later).link("car-001", parse_link(orjson.dumps(link)))
    assert [d for d in of(fleet, USER) if d.get("kind") == "drivingPeriod"]
    return other


async def test_erasing_a_former_driver_deletes_the_record_of_the_time_they_drove_the_car(fleet: Fleet) -> None:
    await _replaced(fleet)
    receipt = (await fleet.call("DELETE", f"/api/drivers/{USER}")).json
    assert receipt["documents"]["memberships"] == 1
    assert of(fleet, USER) == []


async def test_erasing_the_car_deletes_the_record_of_the_time_a_former_driver_drove_it(fleet: Fleet) -> None:
    await _replaced(fleet)
    assert (await fleet.call("DELETE", "/api/vehicles/car-001")).status == 200
    assert [d for d in of(fleet, USER) if d.get("kind") == "drivingPeriod"] == []


async def test_the_sweep_after_the_in_flight_window_deletes_what_arrived_late_once(fleet: Fleet) -> None:
    # GIVEN an erased car, then a trip and a dead letter of it that arrived late (a stalled instance)
    await fleet.call("DELETE", "/api/vehicles/car-001")
    await fleet.store.upsert(TRIPS, {"id": "late", "vehicleId": "car-001", "type": "trip"})
    source = DeviceMessage(b"\xff", "car-001", "2026-11-21T08:00:00.000Z", 7)
    await fleet.dead_letters.put(DeadLetter("telemetry", "invalid_json", "late", source))
    eraser = fleet.service.eraser
    # WHEN the timer runs before the window has passed THEN it leaves the car for later
    fleet.now += dt.timedelta(days=1)
    assert await eraser.sweep_erased() == {}
    # WHEN it runs once the window has passed THEN the late trip and record go and the tombstone is marked
    fleet.now += dt.timedelta(days=6, minutes=1)
    swept = await eraser.sweep_erased()
    assert list(swept) == ["car-001"]
    assert (dict(swept["car-001"].documents), swept["car-001"].dead_letters) == ({"trips": 1}, 1)
    [tombstone] = of(fleet, "car-001")
    assert (tombstone["type"], "sweptAt" in tombstone) == ("erased", True)
    assert fleet.dead_letters.records == {}
    # AND running it again sweeps nothing again
    assert await eraser.sweep_erased() == {}


async def test_the_sweep_leaves_a_car_registered_again_alone(fleet: Fleet) -> None:
    await fleet.call("DELETE", "/api/vehicles/car-001")
    fleet.now += dt.timedelta(days=8)
    await fleet.call("POST", "/api/brands/contoso/fleets/berlin/vehicles", body={"vehicleId": "car-001"})
    await fleet.drive("car-001", range(3), lv="ON", speed=10.0)
    before = of(fleet, "car-001")
    assert await fleet.service.eraser.sweep_erased() == {}
    assert of(fleet, "car-001") == before


async def test_the_cars_own_geofences_and_events_go_with_it_and_the_fleets_stay(fleet: Fleet) -> None:
    home = {"name": "Home", "shape": {"type": "Circle", "center": [13.4, 52.5], "radiusM": 100}}
    for path in ("/api/vehicles/car-001/geofences/home", "/api/brands/contoso/fleets/berlin/geofences/depot"):
        assert (await fleet.call("PUT", path, body=home)).status == 201
    await fleet.drive("car-001", range(2), speed=20.0, lat=52.5, lon=13.4)
    receipt = await fleet.call("DELETE", "/api/vehicles/car-001")
    assert receipt.status == 200
    assert receipt.json["documents"].get("tenancy") == 1
    assert of(fleet, "car-001") == [d for d in of(fleet, "car-001") if d.get("type") == "erased"]
    depot = await fleet.call("GET", "/api/brands/contoso/fleets/berlin/geofences/depot")
    assert depot.status == 200  # the fleet's geofence is not the car's


async def test_erasing_the_car_unlinks_a_former_driver_whose_handover_was_cut_short(fleet: Fleet) -> None:
    """A handover a failure cut short leaves the former driver's link naming the car (shared/drivers/handover.py);
    erasing the car ends it too, or their calendar would go on syncing for a car that no longer exists."""
    from shared.containers import CALENDARS
    from shared.drivers.link import DRIVER_ID

    # GIVEN USER drove car-001, and the write that named the next driver recorded them leaving, then stopped
    await fleet.link_driver("car-001")
    stored = await fleet.store.read(VEHICLES, "car-001", "car-001")
    assert stored is not None
    nxt = {"userId": "0f9b8e2d-6c1a-4f57-8d3e-5a7b9c1d2e02", "upn": "o@contoso.com"}
    handed = {
        **stored.document,
        "driver": nxt,
        "handovers": [{"userId": USER, "profile": None, "at": canonical_time(fleet.now)}],
    }
    await fleet.store.replace(VEHICLES, handed, stored.etag)
    assert await fleet.store.read(CALENDARS, USER, DRIVER_ID) is not None
    # WHEN the car is erased (twice: a retry finds the tombstone, not the handover)
    for _ in range(2):
        assert (await fleet.call("DELETE", "/api/vehicles/car-001")).status == 200
    # THEN the former driver's link is gone, with their calendar's sync (an unlink job)
    assert await fleet.store.read(CALENDARS, USER, DRIVER_ID) is None
    assert [d for d in of(fleet, USER) if d.get("vehicleId") == "car-001"] == []
    assert [job.reason for job, _ in fleet.queue.jobs if job.user_id == USER][-1] == "unlink"


async def test_erasing_a_driver_deletes_the_cars_places_set_in_their_time_and_keeps_the_others(fleet: Fleet) -> None:
    """Their home on the car they drive is theirs (in their export: shared/drivers/places.py), so it goes with
    them; the car's place set before they drove it stays."""
    shape = {"type": "Circle", "center": [13.4, 52.5], "radiusM": 100}
    assert (
        await fleet.call("PUT", "/api/vehicles/car-001/geofences/depot", body={"name": "D", "shape": shape})
    ).status == 201
    fleet.now += dt.timedelta(minutes=1)
    await fleet.link_driver("car-001")
    fleet.now += dt.timedelta(minutes=1)
    assert (
        await fleet.call("PUT", "/api/vehicles/car-001/geofences/home", body={"name": "H", "shape": shape})
    ).status == 201
    receipt = (await fleet.call("DELETE", f"/api/drivers/{USER}")).json
    assert receipt["documents"].get("tenancy") == 1
    listed = (await fleet.call("GET", "/api/vehicles/car-001/geofences")).json
    assert [g["geofenceId"] for g in listed["items"]] == ["depot"]
