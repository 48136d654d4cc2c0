"""Gap reports and named epochs against the real local servers: the Cosmos-compatible server and Azurite.

The container `gaps` comes from shared/cosmos_containers.json through the same bootstrap the local stack uses; the
same tests run against the official emulator or an Azure account when COSMOS_ENDPOINT/COSMOS_KEY are set.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from shared.containers import GAPS, VEHICLES
from shared.stores.blob_deadletters import BlobDeadLetterSink
from shared.stores.cosmos import CosmosDocumentStore
from shared.telemetry.history import stored_entries
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import body, iso, message

pytestmark = pytest.mark.integration
EPOCH_A, EPOCH_B = "a" * 32, "b" * 32


def gap(device: str, gap_id: int, enqueued_s: float, epoch: str = EPOCH_A, **fields: Any) -> Any:
    report = {"id": gap_id, "reason": "evicted", "from": iso(1), "to": iso(2), "samples": 25, "priority": 1} | fields
    return message(device, orjson.dumps({"v": 1, "epoch": epoch, "gap": report}), enqueued_s=enqueued_s)


def telemetry(device: str, seq: int, t: float, enqueued_s: float, epoch: str) -> Any:
    raw = orjson.loads(body(seq, (t, {"Vehicle.Speed": float(seq)})))
    return message(device, orjson.dumps({**raw, "epoch": epoch}), enqueued_s=enqueued_s)


async def contents(store: CosmosDocumentStore, device: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for container in (VEHICLES, GAPS):
        docs = await store.query(container, "SELECT * FROM c WHERE c.vehicleId = @v", {"@v": device})
        out[container] = sorted(({k: v for k, v in d.items() if not k.startswith("_")} for d in docs),
                                key=lambda d: d["id"])  # fmt: skip
    return out


async def test_gaps_are_stored_once_and_counted_once_on_the_local_cosmos_server(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    device = f"it-gap-{uuid.uuid4().hex[:6]}"
    batch = [
        telemetry(device, 1, 0, 1, EPOCH_A),
        gap(device, 1, 2),
        gap(device, 2, 3, samples=None, reason="store_reset", **{"from": None, "to": None}),
        gap(device, 3, 4, reason="nonsense"),
    ]
    report = await TelemetryIngestor(cosmos_store, dead_letters).ingest(batch)
    assert (report.accepted, report.gaps, report.dead_lettered) == (1, 2, 1)
    stored = await contents(cosmos_store, device)
    assert stored[VEHICLES][0]["gaps"] == {"count": 2, "samples": 25, "unknown": 1, "lastAt": iso(3)}
    assert [d["id"] for d in stored[GAPS]] == [f"{device}:{EPOCH_A}:1", f"{device}:{EPOCH_A}:2"]
    assert stored[GAPS][0]["ttl"] == 30 * 24 * 3600  # the item expires with the history it describes
    # WHEN the batch is redelivered, to a cold and to a warm ingestor
    warm = TelemetryIngestor(cosmos_store, dead_letters)
    for ingestor in (TelemetryIngestor(cosmos_store, dead_letters), warm, warm):
        again = await ingestor.ingest(batch)
        assert (again.accepted, again.gaps, again.gap_duplicates, again.duplicates) == (0, 0, 2, 1)
    # THEN Cosmos holds exactly what it held
    assert await contents(cosmos_store, device) == stored


async def test_a_reset_store_counting_from_lower_seqs_loses_nothing_on_the_local_cosmos_server(
    cosmos_store: CosmosDocumentStore, dead_letters: BlobDeadLetterSink
) -> None:
    device = f"it-epoch-{uuid.uuid4().hex[:6]}"
    ingestor = TelemetryIngestor(cosmos_store, dead_letters)
    old = [telemetry(device, seq, 100 + seq, 200 + seq, EPOCH_A) for seq in range(1, 6)]
    # the new epoch counts from 2 again and its samples are older than the newest seen (its backlog)
    new = [telemetry(device, seq, 50 + seq, 300 + seq, EPOCH_B) for seq in range(2, 5)]
    for msg in old + new:
        await ingestor.ingest([msg])
    # a cold ingestor (the document read back from Cosmos) still tells each epoch's replays
    replay = await TelemetryIngestor(cosmos_store, dead_letters).ingest([old[1], new[0], old[4]])
    assert (replay.accepted, replay.duplicates) == (0, 3)
    vehicle = (await contents(cosmos_store, device))[VEHICLES][0]
    ingest = vehicle["ingest"]
    assert (ingest["epoch"], ingest["seen"]) == (EPOCH_B, [[2, 4]])
    assert (ingest["epochs"][-1]["epoch"], ingest["epochs"][-1]["seen"]) == (EPOCH_A, [[1, 5]])
    history = stored_entries(ingest["pending"])
    assert [(m["epoch"], m["seq"]) for m in history] == [(EPOCH_A, s) for s in range(1, 6)] + [
        (EPOCH_B, s) for s in range(2, 5)
    ]
