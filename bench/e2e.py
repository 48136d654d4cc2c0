"""End to end against the local Cosmos-compatible server: ours and the naive pattern, same messages, same run.

The server (`devstack.servers.cosmos_server`) is started once; each pipeline and scenario gets its own fresh
database, so neither sees the other's documents. Both use the same async azure-cosmos client settings through
`CosmosDocumentStore`. Batches are ingested one after another, as the Functions host delivers them to one
instance. The server is slow (~5 ms per sequential write, ~330 writes/s with 32 in flight on 2 cores), so the
ratio, not the absolute rate, is what carries over to Azure, where latency is similar and throughput is RU-bound.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench.cpu import Scenario
from bench.generator import batches, take
from bench.naive import NaiveIngestor
from devstack.cosmos_bootstrap import bootstrap
from devstack.servers import COSMOS_EMULATOR_KEY, cosmos_server
from shared.stores.cosmos import CosmosDocumentStore
from shared.stores.memory import MemoryDeadLetterSink
from shared.telemetry.ingest import TelemetryIngestor


@dataclass(frozen=True, slots=True)
class EndToEnd:
    ours_rate: float
    naive_rate: float
    messages: int

    @property
    def ratio(self) -> float:
        return self.ours_rate / self.naive_rate if self.naive_rate else 0.0


async def _rate(endpoint: str, database: str, pipeline: str, scenario: Scenario, messages: int) -> float:
    await bootstrap(endpoint, COSMOS_EMULATOR_KEY, database)
    store = CosmosDocumentStore.from_settings(endpoint, database, key=COSMOS_EMULATOR_KEY)
    letters = MemoryDeadLetterSink()
    ingest = (TelemetryIngestor(store, letters) if pipeline == "ours" else NaiveIngestor(store, letters)).ingest
    work = take(batches(scenario.cars, scenario.repeats), max(1, messages // 100))
    try:
        await store.read("vehicles", "warm-up", "warm-up")  # open the connection outside the clock
        started = time.perf_counter()
        for batch in work:
            await ingest(batch)
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    return sum(len(b) for b in work) / elapsed


def end_to_end(scenarios: tuple[Scenario, ...], messages: int) -> dict[str, EndToEnd]:
    """msgs/s for ours and naive in each scenario, against one server started for this call."""
    out: dict[str, EndToEnd] = {}
    with cosmos_server() as endpoint:
        for index, scenario in enumerate(scenarios):
            ours = asyncio.run(_rate(endpoint, f"bench-ours-{index}", "ours", scenario, messages))
            naive = asyncio.run(_rate(endpoint, f"bench-naive-{index}", "naive", scenario, messages))
            out[scenario.name] = EndToEnd(ours, naive, messages)
    return out
