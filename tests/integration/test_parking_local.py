"""Containment and redrive against the real local servers: the Cosmos proxy answers 413 as Cosmos DB does, the
real SDK raises, the message is parked in Azurite and redriven after the fix, exactly once."""

from __future__ import annotations

import uuid

import pytest

from shared.parking.redrive import RedriveFilter, redrive
from shared.stores.base import Document
from shared.stores.blob_deadletters import BlobDeadLetterSink
from shared.stores.cosmos import CosmosDocumentStore
from shared.telemetry.history import stored_entries
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import drive, message
from tests.store_support import DelegatingStore

pytestmark = pytest.mark.integration


class Bloating(DelegatingStore):
    """Passes everything to the real store, but pads the vehicle document of one car past Cosmos DB's 2 MB
    item limit while `bloat` is set: the real server (through the proxy) refuses it, as Azure would."""

    def __init__(self, inner: CosmosDocumentStore, vehicle: str) -> None:
        super().__init__(inner)
        self.vehicle, self.bloat = vehicle, True

    def _padded(self, container: str, document: Document) -> Document:
        if self.bloat and container == "vehicles" and document.get("vehicleId") == self.vehicle:
            return {**document, "padding": "x" * (2 * 1024 * 1024 + 1)}
        return document

    async def create(self, container: str, document: Document) -> str:
        return await self.inner.create(container, self._padded(container, document))

    async def replace(self, container: str, document: Document, etag: str) -> str:
        return await self.inner.replace(container, self._padded(container, document), etag)

    async def upsert(self, container: str, document: Document) -> str:
        return await self.inner.upsert(container, self._padded(container, document))


async def test_a_refused_car_is_parked_in_blob_storage_and_redriven_once_after_the_fix(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    poison, good = f"it-{uuid.uuid4().hex[:6]}-poison", f"it-{uuid.uuid4().hex[:6]}-good"
    store = Bloating(cosmos_store, poison)
    ingestor = TelemetryIngestor(store, dead_letters)
    batch = [
        message(poison, drive(1, 1, speed=1.0), sequence_number=1),
        message(good, drive(1, 1, speed=2.0), sequence_number=2),
        message(poison, drive(2, 2, speed=3.0), sequence_number=3),
    ]
    # WHEN a batch holds a car whose document Cosmos DB refuses (413 from the proxy, through the real SDK)
    report = await ingestor.ingest(batch)
    # THEN the batch completes: the good car is stored, the poison car's messages are parked with the reason
    assert report.accepted == 1
    assert report.parked == 2
    assert await cosmos_store.read("vehicles", good, good) is not None
    assert await cosmos_store.read("vehicles", poison, poison) is None
    listed = await dead_letters.list("telemetry", poison)
    assert [e.reason for e in listed] == ["store_rejected", "store_rejected"]
    assert {e.device_id for e in listed} == {poison}
    assert await dead_letters.list("telemetry", poison, reason="invalid_json") == []
    # WHEN the fault is fixed and the operator redrives that car twice
    store.bloat = False
    first = await redrive(dead_letters, ingestor, RedriveFilter(device_id=poison))
    second = await redrive(dead_letters, ingestor, RedriveFilter(device_id=poison))
    # THEN both messages are stored exactly once and nothing is left parked
    assert (first.listed, first.redriven, first.contained_again) == (2, 2, 0)
    assert second.listed == 0
    stored = await cosmos_store.read("vehicles", poison, poison)
    assert stored is not None
    assert [m["seq"] for m in stored_entries(stored.document["ingest"]["pending"])] == [1, 2]
    assert stored.document["state"]["signals"]["Vehicle.Speed"]["value"] == 3.0
    assert await dead_letters.list("telemetry", poison) == []
