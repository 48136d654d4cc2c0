"""Throughput on one core: the `orjson.loads` floor and the full CPU path with I/O replaced by a sink.

Messages are generated before the clock starts (the generator is not what is measured), the ingestor is
warmed up on a few batches first (vehicle documents created, catalogue loaded), and the best of a few rounds
is kept: the figure is what the code can do, not what a noisy neighbour allowed.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from bench.generator import batches, take
from bench.sinks import NullDeadLetterSink, NullDocumentStore
from shared.containers import partition_keys
from shared.device_messages import DeviceMessage
from shared.stores.base import DeadLetterSink, DocumentStore
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.catalogue import default_catalogue
from shared.telemetry.ingest import TelemetryIngestor
from shared.telemetry.tuning import tune_for_ingestion

Batches = list[list[DeviceMessage]]
SinkFactory = Callable[[], tuple[DocumentStore, DeadLetterSink]]


def memory_sinks() -> tuple[DocumentStore, DeadLetterSink]:
    return MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()


def null_sinks() -> tuple[DocumentStore, DeadLetterSink]:
    return NullDocumentStore(), NullDeadLetterSink()


SINKS: dict[str, SinkFactory] = {"memory": memory_sinks, "null": null_sinks}


@dataclass(frozen=True, slots=True)
class Scenario:
    """How the fleet maps onto batches: `repeats` messages per car per batch (1 steady, 10 catch-up)."""

    name: str
    cars: int
    repeats: int


STEADY = Scenario("steady", cars=100, repeats=1)
CATCH_UP = Scenario("catch-up", cars=10, repeats=10)
SCENARIOS = (STEADY, CATCH_UP)


def prepare_process() -> None:
    """What the service does once per process before its first batch (`shared/telemetry/runtime.py`): the
    ingestor loads the catalogue, then `tune_for_ingestion` freezes what exists and raises the GC threshold."""
    default_catalogue()
    tune_for_ingestion()


def _best_rate(run: Callable[[], int], rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        count = run()
        best = max(best, count / (time.perf_counter() - started))
    return best


def floor_rate(messages: int, rounds: int = 5) -> float:
    """msgs/s of `orjson.loads` alone over the bodies the pipeline ingests."""
    bodies = [m.body for batch in take(batches(STEADY.cars, 1), max(1, messages // 100)) for m in batch]
    loads = orjson.loads

    def run() -> int:
        for body in bodies:
            loads(body)
        return len(bodies)

    return _best_rate(run, rounds)


def cpu_rate(scenario: Scenario, sink: str, messages: int, rounds: int = 3, warmup: int = 20) -> float:
    """msgs/s of `TelemetryIngestor.ingest` (decode, validate, fold, derive, commit to the sink), one core."""
    prepare_process()
    count = max(1, messages // 100)
    source = batches(scenario.cars, scenario.repeats)
    warm = take(source, warmup)
    timed = take(source, count)
    loop = asyncio.new_event_loop()
    try:

        def run() -> int:
            store, letters = SINKS[sink]()
            ingestor = TelemetryIngestor(store, letters)
            # Warm with a copy of the first batches so each round starts from the same state.
            for batch in warm:
                loop.run_until_complete(ingestor.ingest(batch))
            started = time.perf_counter()
            for batch in timed:
                loop.run_until_complete(ingestor.ingest(batch))
            elapsed = time.perf_counter() - started
            run.elapsed = elapsed  # type: ignore[attr-defined]
            return sum(len(b) for b in timed)

        best = 0.0
        for _ in range(rounds):
            gc.collect()
            n = run()
            best = max(best, n / run.elapsed)  # type: ignore[attr-defined]
        return best
    finally:
        loop.close()
