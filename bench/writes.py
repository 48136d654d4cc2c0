"""Writes, bytes and request units per message to Cosmos DB, counted on `MemoryDocumentStore` (what each write
would send; its request units modelled from the document's size with Microsoft's published table,
shared/cost/request_units.py).

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
    bytes_by_container: dict[str, float]
    request_units_per_message: float  # modelled, not measured: the local stores report no charge
    request_units_by_container: dict[str, float]


def _cost(
    store: MemoryDocumentStore, before: tuple[Counter[str], Counter[str], dict[str, float]], messages: int
) -> WriteCost:
    writes = store.writes - before[0]
    written = store.bytes_written - before[1]
    units = {name: ru - before[2].get(name, 0.0) for name, ru in store.request_units.items()}
    return WriteCost(
        writes_per_message=sum(writes.values()) / messages,
        bytes_per_message=sum(written.values()) / messages,
        writes_by_container={name: count / messages for name, count in sorted(writes.items())},
        bytes_by_container={name: size / messages for name, size in sorted(written.items())},
        request_units_per_message=sum(units.values()) / messages,
        request_units_by_container={name: ru / messages for name, ru in sorted(units.items())},
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
        before = Counter(store.writes), Counter(store.bytes_written), dict(store.request_units)
        messages = 0
        for batch in take(source, measured_batches):
            await ingest(batch)
            messages += len(batch)
        return _cost(store, before, messages)

    return asyncio.run(run())
