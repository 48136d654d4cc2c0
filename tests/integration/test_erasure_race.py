"""Erasure during ingestion, against the real local servers (the Cosmos-compatible server and Azurite): the
tombstone is written first, so a batch in flight either committed before it (and its documents are deleted) or
reads the tombstone and drops its messages. Many rounds with random interleavings; after each, nothing of the car
is left in any container or in the dead-letter container, but its tombstone."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import orjson
import pytest

from shared.calendar.jobs import MemorySyncQueue
from shared.containers import partition_keys
from shared.drivers.link import DriverLinks, parse_link
from shared.fleet.service import FleetService
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.stores.blob_deadletters import BlobDeadLetterSink
from shared.stores.cosmos import CosmosDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import drive, message
from tests.fleet_support import BRAND, FLEET, add_fleet

pytestmark = pytest.mark.integration
ROUNDS = 30
BATCHES = 6  # per round, from two ingestion instances (two function hosts, each with its own cache)
SETTLE_SECONDS = 0.3


async def _forget(user: str, vehicle: str | None) -> None:
    return None


async def left_of(store: CosmosDocumentStore, car: str, user: str) -> list[dict[str, Any]]:
    """Every document of the car or its driver in any container (by the fields they are found by)."""
    out: list[dict[str, Any]] = []
    for container, key in partition_keys().items():
        out += await store.query(container, "SELECT * FROM c WHERE c.vehicleId = @v", {"@v": car})
        if key == "/userId":
            out += await store.query(container, "SELECT * FROM c WHERE c.userId = @u", {"@u": user})
    return out


async def test_erasure_during_ingestion_leaves_only_the_tombstone(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    await add_fleet(cosmos_store)
    rng = random.Random(12)
    queue = MemorySyncQueue()
    service = FleetService(
        cosmos_store,
        MemoryIoTHubGateway(),
        DriverLinks(cosmos_store, queue),
        _forget,
        dead_letters=lambda: dead_letters,
        erasure_settle_seconds=SETTLE_SECONDS,
    )
    committed_during = dropped_during = 0
    for round_ in range(ROUNDS):
        # GIVEN a registered car with history, a trip, an alert, a dead letter and a linked driver
        car, user = f"race-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
        await service.register(BRAND, FLEET, car, None)
        first = TelemetryIngestor(cosmos_store, dead_letters)
        seed = [message(car, drive(t + 1, t, lv="ON", speed=30.0, dtc=["P0300"]), t, t) for t in range(20)]
        await first.ingest([*seed, message(car, b"\xff not json", 20, 20)])
        link = {
            "userId": user,
            "upn": "d@contoso.com",
            "timeZone": "UTC",
            "consent": {"calendar": True, "location": True},
        }
        await DriverLinks(cosmos_store, queue).link(car, parse_link(orjson.dumps(link)))
        assert await dead_letters.list("telemetry", car)
        instances = [first, TelemetryIngestor(cosmos_store, dead_letters)]

        async def ingestion(car: str = car, instances: list[TelemetryIngestor] = instances) -> list[Any]:
            reports = []
            for b in range(BATCHES):
                await asyncio.sleep(rng.uniform(0, 0.03))
                t0 = 100 + b * 10
                ignition = "ON" if b % 3 else "OFF"  # trips open and close while the erasure runs
                batch = [message(car, drive(t + 1, t, lv=ignition, speed=40.0), t, t) for t in range(t0, t0 + 10)]
                reports.append(await instances[b % 2].ingest(batch))
            return reports

        async def erasure(car: str = car) -> dict[str, Any]:
            await asyncio.sleep(rng.uniform(0, 0.15))
            return await service.erase_vehicle(car)

        # WHEN the car is erased while batches of it are being ingested by two instances
        reports, receipt = await asyncio.gather(ingestion(), erasure())

        # THEN nothing of the car or its driver link is left anywhere but the tombstone
        left = await left_of(cosmos_store, car, user)
        assert [(d["type"], sorted(k for k in d if not k.startswith("_"))) for d in left] == [
            ("erased", ["erasedAt", "id", "ttl", "type", "vehicleId"])
        ], f"round {round_}: {[(d.get('type'), d.get('id')) for d in left]}"
        assert await dead_letters.list("telemetry", car) == []
        assert receipt["documents"]["vehicles"] == 1
        assert receipt["deadLetters"] >= 1
        committed_during += sum(1 for r in reports if r.accepted)
        dropped_during += sum(1 for r in reports if r.erased)
        # AND a batch that arrives afterwards is dropped, not ingested into a new car
        late = await instances[round_ % 2].ingest([message(car, drive(900, 900, speed=1.0), 900, 900)])
        assert (late.accepted, late.erased) == (0, 1)
    # The interleavings did happen: batches committed before the tombstone and were dropped after it.
    assert committed_during > 0
    assert dropped_during > 0
