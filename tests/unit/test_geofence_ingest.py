"""Geofences through the ingestor: the store-backed source (one read per fleet per refresh), events written through
the outbox into `geofenceEvents`, a replayed batch writing nothing new."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.containers import GEOFENCE_EVENTS, TENANCY, VEHICLES, partition_keys
from shared.geofences.model import FleetScope, VehicleScope, parse_geofence
from shared.geofences.store import (
    KIND_SETTINGS,
    CachedGeofenceSource,
    FleetGeofences,
    geofence_document,
    settings_id,
)
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import drive, message

LAT, LON = 52.42, 10.78


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def circle(name: str, radius: float = 300, **extra: Any) -> dict[str, Any]:
    return {"name": name, "shape": {"type": "Circle", "center": [LON, LAT], "radiusM": radius}, **extra}


class WaitingStore(MemoryDocumentStore):
    """Answers a write only after the event loop ran, as a remote store does."""

    async def upsert(self, container: str, document: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        return await super().upsert(container, document)


async def setup(
    store_type: type[MemoryDocumentStore] = MemoryDocumentStore,
) -> tuple[MemoryDocumentStore, TelemetryIngestor, CachedGeofenceSource, Clock]:
    store = store_type(partition_keys())
    await store.upsert(
        VEHICLES, {"id": "car-1", "vehicleId": "car-1", "type": "vehicle", "brandId": "acme", "fleetId": "north"}
    )
    depot = parse_geofence(
        circle("Depot", alerts={"exit": True}), geofence_id="depot", scope=FleetScope("acme", "north")
    )
    home = parse_geofence(circle("Home", 100), geofence_id="home", scope=VehicleScope("car-1"))
    await store.upsert(TENANCY, geofence_document(depot, "acme", "north", "2026-11-21T07:00:00.000Z"))
    await store.upsert(TENANCY, geofence_document(home, "acme", "north", "2026-11-21T07:00:00.000Z"))
    await store.upsert(
        TENANCY,
        {
            "id": settings_id("north"),
            "brandId": "acme",
            "fleetId": "north",
            "kind": KIND_SETTINGS,
            "speedLimitKmh": 90,
            "speedLimitSeconds": 0,
        },
    )
    clock = Clock()
    source = CachedGeofenceSource(store, refresh_seconds=60, clock=clock)
    return store, TelemetryIngestor(store, MemoryDeadLetterSink(), geofences=source), source, clock


async def test_events_and_alerts_are_written_through_the_outbox_once() -> None:
    store, ingestor, source, clock = await setup()
    first = [message("car-1", drive(1, 0, lat=LAT, lon=LON, speed=20.0), enqueued_s=1)]
    second = [message("car-1", drive(2, 10, lat=LAT + 0.01, lon=LON, speed=95.0), enqueued_s=11)]
    await ingestor.ingest(first)
    report = await ingestor.ingest(second)
    assert (report.geofence_events, report.geofence_retracted) == (2, 0)
    events = {d["id"]: d for d in store.documents(GEOFENCE_EVENTS)}
    assert set(events) == {"car-1:depot:exit:20261121T080010000Z", "car-1:v:home:exit:20261121T080010000Z"}
    kinds = {d["kind"] for d in store.documents("alerts")}
    assert kinds == {"geofence_exit", "speeding"}  # left the depot; 95 km/h over a 90 km/h limit (0 s)
    # a replay changes nothing; the fleet's documents were read once
    replay = await ingestor.ingest(second)
    assert (replay.duplicates, replay.geofence_events) == (1, 0)
    assert source.reads == 1
    clock.now = 61
    await ingestor.ingest([message("car-1", drive(3, 20, lat=LAT + 0.01, lon=LON, speed=20.0), enqueued_s=21)])
    assert source.reads == 2


@pytest.mark.parametrize("store_type", [MemoryDocumentStore, WaitingStore])
async def test_a_crossing_writes_its_whole_outbox_whether_the_store_waits_or_not(
    store_type: type[MemoryDocumentStore],
) -> None:
    """Several outbox documents go out one after the other while the store answers at once (no task), together
    once a write waited: the same documents either way."""
    store, ingestor, _, _ = await setup(store_type)
    await ingestor.ingest([message("car-1", drive(1, 0, lat=LAT, lon=LON, speed=20.0), enqueued_s=1)])
    await ingestor.ingest([message("car-1", drive(2, 10, lat=LAT + 0.01, lon=LON, speed=95.0), enqueued_s=11)])
    written = {(c, d["id"]) for c in (GEOFENCE_EVENTS, "alerts") for d in store.documents(c)}
    assert written == {
        (GEOFENCE_EVENTS, "car-1:depot:exit:20261121T080010000Z"),
        (GEOFENCE_EVENTS, "car-1:v:home:exit:20261121T080010000Z"),
        ("alerts", "car-1:geofence:depot:geofence_exit:20261121T080010000Z"),
        ("alerts", "car-1:speeding:20261121T080010000Z"),
    }
    assert ingestor._store_waits is (store_type is WaitingStore)


async def test_a_broken_document_is_skipped_not_fatal() -> None:
    compiled = FleetGeofences.compile(
        [
            {"kind": "geofence", "brandId": "acme", "fleetId": "north", "geofenceId": "x", "name": "X", "shape": {}},
            {
                **geofence_document(
                    parse_geofence(circle("Depot"), geofence_id="depot", scope=FleetScope("acme", "north")),
                    "acme",
                    "north",
                    "t",
                )
            },
        ]
    )
    assert [g.id for g in compiled.index.geofences] == ["depot"]
    assert compiled.speed_limit is None
