"""The hostile cars of issue 10 against the real local servers (Cosmos DB through the limits proxy, Azurite):
whatever one car sends, the batch completes, the good car beside it is stored, and the hostile car's documents
stay bounded (docs/data-model.md, "Bounds")."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from shared.stores.blob_deadletters import BlobDeadLetterSink
from shared.stores.cosmos import CosmosDocumentStore
from shared.stores.limits import nesting_depth
from shared.telemetry.history import stored_entries
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import body, drive, iso, message

pytestmark = pytest.mark.integration
DTC = "Vehicle.Diagnostics.DTCList"
IGNITION = "Vehicle.LowVoltageSystemState"


def car(kind: str) -> str:
    return f"it-{uuid.uuid4().hex[:6]}-{kind}"


async def vehicle(store: CosmosDocumentStore, device: str) -> dict[str, Any]:
    stored = await store.read("vehicles", device, device)
    assert stored is not None
    return stored.document


async def documents(store: CosmosDocumentStore, container: str, device: str) -> list[dict[str, Any]]:
    query = "SELECT * FROM c WHERE c.vehicleId = @v"
    return list(await store.query(container, query, {"@v": device}, partition_key=device))


async def history(store: CosmosDocumentStore, device: str) -> list[dict[str, Any]]:
    chunks = await documents(store, "telemetry", device)
    pending = stored_entries((await vehicle(store, device))["ingest"]["pending"])
    return [m for c in chunks for m in stored_entries(c["messages"])] + list(pending)


async def test_a_speed_nested_200_levels_deep_is_stored_bounded_beside_a_good_car(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    hostile, good = car("deep"), car("good")
    deep: Any = 1.0
    for _ in range(200):
        deep = [deep]
    raw = orjson.dumps({"v": 1, "seq": 1, "samples": [{"ts": iso(1), "signals": {"Vehicle.Speed": deep}}]})
    assert len(raw) < 600
    report = await TelemetryIngestor(cosmos_store, dead_letters).ingest(
        [message(hostile, raw), message(good, drive(1, 1, speed=2.0))]
    )
    assert (report.accepted, report.parked) == (2, 0)
    assert nesting_depth(await vehicle(cosmos_store, hostile)) <= 32
    assert (await vehicle(cosmos_store, good))["state"]["signals"]["Vehicle.Speed"]["value"] == 2.0


async def test_two_quarter_megabyte_messages_of_unknown_signals_keep_the_document_small(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    hostile = car("wide")
    batch = []
    for seq in (1, 2, 3):
        signals = {f"Vehicle.Unknown.S{seq}x{n:05d}": "x" * 16 for n in range(5_500)}
        raw = body(seq, (seq, signals))
        assert 200_000 < len(raw) <= 256 * 1024
        batch.append(message(hostile, raw, enqueued_s=seq, sequence_number=seq))
    report = await TelemetryIngestor(cosmos_store, dead_letters).ingest(batch)
    assert (report.accepted, report.parked) == (3, 0)
    assert len(orjson.dumps(await vehicle(cosmos_store, hostile))) < 256 * 1024
    assert sorted(m["seq"] for m in await history(cosmos_store, hostile)) == [1, 2, 3]


async def test_ignition_and_dtc_flapping_in_one_message_creates_a_handful_of_documents(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    hostile = car("flap")
    samples = [
        (t, {IGNITION: "ON" if t % 2 == 0 else "OFF", DTC: [f"P{t % 1000:04d}"] if t % 2 == 0 else []})
        for t in range(500)
    ]
    report = await TelemetryIngestor(cosmos_store, dead_letters).ingest([message(hostile, body(1, *samples))])
    assert (report.accepted, report.parked) == (1, 0)
    assert len(await documents(cosmos_store, "trips", hostile)) <= 10  # today: 250
    assert len(await documents(cosmos_store, "alerts", hostile)) <= 50  # today: 500


async def test_a_seq_restart_then_a_redelivery_stores_nothing_twice(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    device = car("restart")
    ingestor = TelemetryIngestor(cosmos_store, dead_letters)
    before = [message(device, drive(seq, seq, speed=float(seq)), enqueued_s=seq) for seq in range(1, 6)]
    await ingestor.ingest(before)
    # the car restarts its counter: seq 1, 2 again, with newer samples
    await ingestor.ingest([message(device, drive(seq, 100 + seq, speed=1.0), enqueued_s=100 + seq) for seq in (1, 2)])
    # then Event Hubs redelivers the batch from before the restart
    report = await ingestor.ingest(before)
    assert report.accepted == 0
    assert report.duplicates == 5
    assert len(await history(cosmos_store, device)) == 7


async def test_one_malformed_dtc_does_not_hide_the_valid_ones_beside_it(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    device = car("dtc")
    await TelemetryIngestor(cosmos_store, dead_letters).ingest(
        [message(device, drive(1, 1, dtc=["P0300", "not a code", "C1234"]))]
    )
    alerts = await documents(cosmos_store, "alerts", device)
    assert sorted(a["code"] for a in alerts) == ["C1234", "P0300"]
