"""Writes and bytes per message to Cosmos DB, counted on `MemoryDocumentStore` (what each write would send).

The first batches create the vehicle documents and fill the history buffers, so counting starts after a
warm-up long enough for every car to have flushed at least one history chunk; the figure is steady state.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from bench.cpu import Scenario
from bench.generator import batches, take
from bench.naive import NaiveIngestor
from shared.containers import partition_keys
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.history import CHUNK_MAX_MESSAGES
from shared.telemetry.ingest import TelemetryIngestor

WARMUP_BATCHES = CHUNK_MAX_MESSAGES * 2


@dataclass(frozen=True, slots=True)
class WriteCost:
    writes_per_message: float
    bytes_per_message: float
    writes_by_container: dict[str, float]


def _cost(store: MemoryDocumentStore, before_w: Counter[str], before_b: Counter[str], messages: int) -> WriteCost:
    writes = store.writes - before_w
    written = store.bytes_written - before_b
    return WriteCost(
        writes_per_message=sum(writes.values()) / messages,
        bytes_per_message=sum(written.values()) / messages,
        writes_by_container={name: count / messages for name, count in sorted(writes.items())},
    )


def write_cost(scenario: Scenario, pipeline: str, measured_batches: int) -> WriteCost:
    """Run `pipeline` ("ours" or "naive") over warm-up + measured batches; count only the measured ones."""
    source = batches(scenario.cars, scenario.repeats)
    store = MemoryDocumentStore(partition_keys())
    letters = MemoryDeadLetterSink()
    ingest = (TelemetryIngestor(store, letters) if pipeline == "ours" else NaiveIngestor(store, letters)).ingest

    async def run() -> WriteCost:
        for batch in take(source, WARMUP_BATCHES):
            await ingest(batch)
        before_w, before_b = Counter(store.writes), Counter(store.bytes_written)
        messages = 0
        for batch in take(source, measured_batches):
            await ingest(batch)
            messages += len(batch)
        return _cost(store, before_w, before_b, messages)

    return asyncio.run(run())
