"""Privacy controls: consent changes and the right to erasure, on in-memory stores fed by real ingestion."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.calendar.documents import DRIVER_ID
from shared.calendar.jobs import SyncJob
from shared.containers import CALENDARS, COMMANDS, MEETINGS, TENANCY, TRAVEL, VEHICLES, partition_keys
from shared.privacy.erasure import RECHECK_DRIVER_SECONDS
from shared.stores.memory import MemoryDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from shared.tenancy.documents import BRAND_DOC_ID
from shared.travel.stores import TRAVEL_DOC_ID
from tests.factories import T0, drive, iso, message
from tests.fleet_support import BRAND, FLEET, USER, Fleet

LAT = "Vehicle.CurrentLocation.Latitude"


@pytest.fixture
async def fleet() -> Fleet:
    fleet = Fleet()
    await fleet.add_fleet()
    return fleet


def everything(fleet: Fleet) -> list[dict[str, object]]:
    store = fleet.store
    assert isinstance(store, MemoryDocumentStore)
    return [d for c in partition_keys() for d in store.documents(c)]


async def test_location_consent_off_removes_stored_positions_and_ingestion_drops_new_ones(fleet: Fleet) -> None:
    # GIVEN a car on a trip that reported positions
    await fleet.drive("car-001", range(3), lv="ON", speed=30.0, lat=52.0, lon=10.0)
    await fleet.link_driver("car-001")
    # WHEN the driver withdraws location consent
    answer = await fleet.call("PATCH", "/api/vehicles/car-001/consent", body={"location": False})
    # THEN the positions are gone from the state and the open trip
    assert answer.status == 200
    assert answer.json == {
        "vehicleId": "car-001",
        "consent": {"location": False, "calendar": True},
        "positionsRemoved": 4,  # latitude, longitude, the trip's start and last position
    }
    stored = await fleet.store.read(VEHICLES, "car-001", "car-001")
    assert stored is not None
    assert not [p for p in stored.document["state"]["signals"] if p.startswith("Vehicle.CurrentLocation.")]
    assert stored.document["trip"]["startPosition"] is None
    vehicle = (await fleet.call("GET", "/api/vehicles/car-001")).json
    assert vehicle["position"] is None
    # AND the driver link carries the new consent (the sync job reads it there)
    driver = await fleet.store.read(CALENDARS, USER, DRIVER_ID)
    assert driver is not None
    assert driver.document["consent"] == {"calendar": True, "location": False}
    # AND positions sent afterwards never reach the state or the history
    await fleet.drive("car-001", range(3, 5), speed=31.0, lat=52.1, lon=10.1)
    stored = await fleet.store.read(VEHICLES, "car-001", "car-001")
    assert stored is not None
    assert LAT not in stored.document["state"]["signals"]
    history = await fleet.call("GET", "/api/vehicles/car-001/telemetry", {"from": iso(0), "to": iso(5)})
    assert [m["seq"] for m in history.json["items"]] == [1, 2, 3, 4, 5]
    assert all(LAT not in s["signals"] for m in history.json["items"] for s in m["samples"])
    trips = (await fleet.call("GET", "/api/vehicles/car-001/trips")).json["items"]
    assert all(t["startPosition"] is None and t["lastPosition"] is None for t in trips)


async def test_positions_stored_before_a_brand_made_them_consent_based_are_hidden_in_every_read(fleet: Fleet) -> None:
    # GIVEN a car without a driver whose positions were collected (contract basis) and partly flushed to history
    await fleet.service.register(BRAND, FLEET, "car-001", None)
    await fleet.drive("car-001", range(40), lv="ON", speed=30.0, lat=52.0, lon=10.0)
    assert (await fleet.call("GET", "/api/vehicles/car-001")).json["position"] == {"lat": 52.0, "lon": 10.0}
    # WHEN its brand makes position consent-based (no driver: no record, so withheld)
    brand = await fleet.store.read(TENANCY, BRAND, BRAND_DOC_ID)
    assert brand is not None
    settings = {"dataCategoryBases": {"position": "consent"}}
    await fleet.store.upsert(TENANCY, {**brand.document, "settings": settings})
    reads = Fleet(store=fleet.store)  # a fresh instance: brand settings are cached for minutes per instance
    # THEN no read shows a position, though the flushed history chunks still hold them until scrubbed
    vehicle = (await reads.call("GET", "/api/vehicles/car-001")).json
    assert vehicle["position"] is None
    assert LAT not in vehicle["signals"]
    history = (await reads.call("GET", "/api/vehicles/car-001/telemetry", {"from": iso(0), "to": iso(40)})).json
    assert len(history["items"]) == 40
    assert all(LAT not in s["signals"] for m in history["items"] for s in m["samples"])
    assert all(s["rejected"][LAT]["value"] is None for m in history["items"] for s in m["samples"])
    trips = (await reads.call("GET", "/api/vehicles/car-001/trips")).json["items"]
    assert all(t["startPosition"] is None for t in trips)
    listed = (await reads.call("GET", "/api/vehicles")).json["items"]
    assert [v["position"] for v in listed] == [None]


async def test_calendar_consent_off_goes_through_the_driver_link_which_queues_the_clean_up(fleet: Fleet) -> None:
    await fleet.drive("car-001", range(1), speed=1.0)
    await fleet.link_driver("car-001")
    fleet.queue.jobs.clear()
    answer = await fleet.call("PATCH", "/api/vehicles/car-001/consent", body={"calendar": False})
    assert answer.status == 200
    assert answer.json["consent"] == {"calendar": False, "location": True}
    # The job sees consent.calendar false: it removes the subscription, the calendar and the car's agenda
    assert [(job.user_id, job.reason) for job, _ in fleet.queue.jobs] == [(USER, "link")]
    driver = await fleet.store.read(CALENDARS, USER, DRIVER_ID)
    assert driver is not None
    assert driver.document["consent"]["calendar"] is False


async def test_a_car_registered_again_after_its_erasure_takes_none_of_the_erased_cars_messages(fleet: Fleet) -> None:
    """Erased, then registered again (for another owner, say) while the erased car's messages are still in flight
    (Event Hubs keeps them up to 7 days): those are dropped, not folded into the new car's document; what it sends
    after its registration is ingested."""
    register = "/api/brands/contoso/fleets/berlin/vehicles"
    await fleet.call("POST", register, body={"vehicleId": "car-001"})
    await fleet.drive("car-001", range(3), speed=30.0, lat=52.0, lon=10.0)
    assert (await fleet.call("DELETE", "/api/vehicles/car-001")).status == 200
    fleet.now = T0 + dt.timedelta(seconds=100)
    assert (await fleet.call("POST", register, body={"vehicleId": "car-001"})).status == 201
    batch = [message("car-001", drive(s + 1, s, speed=float(s), lat=52.0, lon=10.0), enqueued_s=s, sequence_number=s)
             for s in (50, 150)]  # fmt: skip
    report = await TelemetryIngestor(fleet.store, fleet.dead_letters).ingest(batch)
    assert (report.accepted, report.erased) == (1, 1)
    state = (await fleet.call("GET", "/api/vehicles/car-001")).json
    assert state["signals"]["Vehicle.Speed"]["value"] == 150.0
    assert report.accepted == 1


async def test_consent_of_an_unknown_vehicle_is_404(fleet: Fleet) -> None:
    answer = await fleet.call("PATCH", "/api/vehicles/car-404/consent", body={"location": False})
    assert answer.status == 404


async def test_erasing_a_vehicle_leaves_no_document_and_no_identity(fleet: Fleet) -> None:
    # GIVEN a registered car with history, trips, alerts, an ack, a driver and a meeting made from the car
    await fleet.call("POST", "/api/brands/contoso/fleets/berlin/vehicles", body={"vehicleId": "car-001"})
    await fleet.drive("car-001", range(40), lv="ON", speed=30.0, dtc=["P0300"], lat=52.0, lon=10.0)
    alert = (await fleet.call("GET", "/api/vehicles/car-001/alerts")).json["items"][0]
    await fleet.call("POST", f"/api/vehicles/car-001/alerts/{alert['id']}/ack")
    await fleet.link_driver("car-001")
    await fleet.store.upsert(
        MEETINGS,
        {"id": "m1", "userId": USER, "joinWebUrl": "https://teams", "origin": {"vehicleId": "car-001"}},
    )
    await fleet.store.upsert("requests", {"id": "r1", "vehicleId": "car-001", "action": "meeting.now"})
    await fleet.drive("car-002", range(2), speed=1.0)  # another car, which must stay
    # WHEN the car is erased, twice
    first = await fleet.call("DELETE", "/api/vehicles/car-001")
    second = await fleet.call("DELETE", "/api/vehicles/car-001")
    # THEN nothing of it is left in any container but a tombstone without personal data, IoT Hub forgot it,
    # and the other car is untouched; the receipt says what went where, the second one that nothing was left
    assert first.status == second.status == 200
    assert first.json["documents"] == {
        "alerts": 2, "calendars": 1, "meetings": 1, "requests": 1, "telemetry": 2, "trips": 1, "vehicles": 1,
    }  # fmt: skip
    assert first.json["deviceIdentityDeleted"] is True
    assert (second.json["documents"], second.json["deviceIdentityDeleted"]) == ({}, False)
    assert second.json["erasedAt"] == first.json["erasedAt"]  # the first erasure's time stands
    left = [d for d in everything(fleet) if "car-001" in str(d)]
    assert [sorted(d) for d in left] == [["erasedAt", "id", "ttl", "type", "vehicleId"]]
    assert left[0]["type"] == "erased"
    # AND messages still in flight for the car are dropped, not ingested into a new document
    await fleet.drive("car-001", range(5, 7), speed=9.0)
    assert [d for d in everything(fleet) if "car-001" in str(d)] == left
    assert (await fleet.call("GET", "/api/vehicles/car-001")).status == 404
    assert "car-001" not in fleet.gateway.devices
    assert [d["vehicleId"] for d in everything(fleet) if d.get("type") == "vehicle"] == ["car-002"]
    # AND the driver's calendar is cleaned up by the unlink job
    assert [(job.user_id, job.reason, job.vehicle_id) for job, _ in fleet.queue.jobs][-1] == (USER, "unlink", None)


async def test_erasing_a_driver_removes_their_calendar_meetings_and_link(fleet: Fleet) -> None:
    # GIVEN a driver with a linked car, calendar documents, meetings and a meeting request record
    await fleet.drive("car-001", range(2), speed=1.0)
    await fleet.link_driver("car-001")
    for doc in (
        {"id": "sync", "userId": USER, "kind": "syncState"},
        {"id": "subscription", "userId": USER, "kind": "subscription", "subscriptionId": "s"},
        {"id": "event-1", "userId": USER, "kind": "event", "subject": "Dentist"},
    ):
        await fleet.store.upsert(CALENDARS, doc)
    await fleet.store.upsert(MEETINGS, {"id": "m1", "userId": USER, "joinWebUrl": "https://teams"})
    await fleet.store.upsert("requests", {"id": "r1", "vehicleId": "car-001", "action": "meeting.join"})
    await fleet.store.upsert("requests", {"id": "r2", "vehicleId": "car-001", "action": "calendar.refresh"})
    await fleet.store.upsert("requests", {"id": "r3", "vehicleId": "car-001", "action": "profile.select"})
    await fleet.store.upsert(TRAVEL, {"id": TRAVEL_DOC_ID, "vehicleId": "car-001", "kind": "travel", "state": {}})
    command = {"id": "c1", "vehicleId": "car-001", "kind": "command", "issuedBy": {"id": USER, "role": "Driver"}}
    await fleet.store.upsert(COMMANDS, command)
    # WHEN the driver is erased, twice
    first = await fleet.call("DELETE", f"/api/drivers/{USER}")
    second = await fleet.call("DELETE", f"/api/drivers/{USER}")
    # THEN no document of theirs is left, the car has no driver, and the calendar clean-up ran for the car
    assert first.status == second.status == 200
    assert first.json["documents"] == {"calendars": 4, "meetings": 1, "requests": 2, "travel": 1}
    assert (first.json["commandsAnonymised"], second.json["commandsAnonymised"]) == (1, 0)
    assert second.json["documents"] == {}
    assert [d for d in everything(fleet) if USER in str(d)] == []
    assert [d["id"] for d in everything(fleet) if d.get("vehicleId") == "car-001" and "action" in d] == ["r2"]
    vehicle = (await fleet.call("GET", "/api/vehicles/car-001")).json
    assert vehicle["driver"] is None
    assert fleet.forgotten[0] == (USER, "car-001")
    # AND a calendar job for them runs again later: a sync that read the link before it went forgets what it wrote
    assert (SyncJob(USER, "unlink"), RECHECK_DRIVER_SECONDS) in fleet.queue.jobs
