"""Telemetry ingestion against the real local servers: the Cosmos-compatible server and Azurite.

The same tests run against the official emulator or an Azure account when COSMOS_ENDPOINT/COSMOS_KEY are set
(see tests/conftest.py).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from shared.settings import DEADLETTER_CONTAINER
from shared.stores.blob_deadletters import BlobDeadLetterSink
from shared.stores.cosmos import CosmosDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import drive, message

pytestmark = pytest.mark.integration
CONTAINERS = ["vehicles", "telemetry", "trips", "alerts"]


async def contents(store: CosmosDocumentStore, prefix: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for container in CONTAINERS:
        docs = await store.query(container, "SELECT * FROM c WHERE STARTSWITH(c.vehicleId, @p)", {"@p": prefix})
        out[container] = sorted(docs, key=lambda d: d["id"])
    return out


async def dead_letter_blobs(sink: BlobDeadLetterSink, prefix: str) -> dict[str, dict[str, Any]]:
    container = sink._service.get_container_client(DEADLETTER_CONTAINER)
    out = {}
    async for blob in container.list_blobs():
        if f"/{prefix}" in blob.name:
            data = await (await container.download_blob(blob.name)).readall()
            out[blob.name] = orjson.loads(data)
    return out


def batch(prefix: str, cars: int, seq: int, bad_every: int = 0) -> list[Any]:
    out = []
    for n in range(cars):
        device = f"{prefix}{n}"
        if bad_every and n % bad_every == 0:
            out.append(message(device, b"\xff\xfe garbage", enqueued_s=seq * 10, sequence_number=seq * 1000 + n))
        else:
            raw = drive(seq, seq * 10, speed=float(seq), lv="ON" if seq < 5 else "OFF", odo=1000 + seq * 100)
            out.append(message(device, raw, enqueued_s=seq * 10, sequence_number=seq * 1000 + n))
    return out


async def test_batch_with_ten_percent_bad_messages(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    prefix = f"it-{uuid.uuid4().hex[:6]}-"
    report = await TelemetryIngestor(cosmos_store, dead_letters).ingest(batch(prefix, 20, seq=1, bad_every=10))
    assert report.accepted == 18
    assert report.dead_lettered == 2
    stored = await contents(cosmos_store, prefix)
    assert len(stored["vehicles"]) == 18
    assert all(d["state"]["signals"]["Vehicle.Speed"]["value"] == 1.0 for d in stored["vehicles"])
    assert len(stored["trips"]) == 18
    letters = await dead_letter_blobs(dead_letters, prefix)
    assert sorted(r["deviceId"] for r in letters.values()) == [f"{prefix}0", f"{prefix}10"]
    assert {r["reason"] for r in letters.values()} == {"invalid_json"}
    assert all(r["bodyBase64"] for r in letters.values())  # the raw bytes were not UTF-8: kept as base64


async def test_replayed_batches_give_identical_contents(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    prefix = f"it-{uuid.uuid4().hex[:6]}-"
    batches = [batch(prefix, 5, seq=s, bad_every=4) for s in range(1, 21)]
    for b in batches:
        await TelemetryIngestor(cosmos_store, dead_letters).ingest(b)
    before = await contents(cosmos_store, prefix)
    letters_before = await dead_letter_blobs(dead_letters, prefix)
    assert len(before["telemetry"]) == 3  # 20 messages per car: one chunk of 16, 4 buffered
    assert [t["status"] for t in before["trips"]] == ["closed"] * 3
    for b in batches[-4:]:
        report = await TelemetryIngestor(cosmos_store, dead_letters).ingest(b)
        assert report.accepted == 0
        assert report.duplicates == 3
    assert await contents(cosmos_store, prefix) == before
    assert await dead_letter_blobs(dead_letters, prefix) == letters_before


async def test_late_message_leaves_state_unchanged(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    device = f"it-{uuid.uuid4().hex[:6]}"
    ingestor = TelemetryIngestor(cosmos_store, dead_letters)
    await ingestor.ingest([message(device, drive(2, 20, speed=80.0), enqueued_s=30)])
    before = await cosmos_store.read("vehicles", device, device)
    await ingestor.ingest([message(device, drive(1, 10, speed=10.0), enqueued_s=31)])
    after = await cosmos_store.read("vehicles", device, device)
    assert before is not None
    assert after is not None
    assert after.document["state"] == before.document["state"]
    assert [m["seq"] for m in after.document["ingest"]["pending"]] == [2, 1]


async def test_etag_race_with_another_writer_on_the_real_server(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    device = f"it-{uuid.uuid4().hex[:6]}"
    ingestor = TelemetryIngestor(cosmos_store, dead_letters)
    await ingestor.ingest([message(device, drive(1, 1, speed=1.0))])
    stored = await cosmos_store.read("vehicles", device, device)
    assert stored is not None
    await cosmos_store.replace("vehicles", {**stored.document, "consent": {"location": False}}, stored.etag)
    report = await ingestor.ingest([message(device, drive(2, 2, speed=2.0))])
    assert report.conflicts == 1
    after = await cosmos_store.read("vehicles", device, device)
    assert after is not None
    assert after.document["consent"] == {"location": False}
    assert after.document["state"]["signals"]["Vehicle.Speed"]["value"] == 2.0
