"""Throughput on one core: the `orjson.loads` floor and the full CPU path with I/O replaced by a sink.

Messages are generated before the clock starts (the generator is not what is measured), the ingestor is
warmed up on a few batches first (vehicle documents created, catalogue loaded), and the best of a few rounds
is kept: the figure is what the code can do, not what a noisy neighbour allowed.
"""

from __future__ import annotations

import asyncio
import gc
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.generator import batches, take
from bench.sinks import NullDeadLetterSink, NullDocumentStore
from shared.containers import partition_keys
from shared.cost.meter import CostMeter
from shared.device_messages import DeviceMessage
from shared.geofences.index import GeofenceIndex, SpeedLimit, VehicleGeofences
from shared.geofences.model import FleetScope, Geofence, parse_geofence
from shared.geofences.store import StaticGeofences
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


def cpu_rate(
    scenario: Scenario, sink: str, messages: int, rounds: int = 3, warmup: int = 20, metered: bool = False
) -> float:
    """msgs/s of `TelemetryIngestor.ingest` (decode, validate, fold, derive, commit to the sink), one core;
    `metered`: with the cost meter on, as the function app runs it (shared/telemetry/runtime.py)."""
    prepare_process()
    count = max(1, messages // 100)
    source = batches(scenario.cars, scenario.repeats)
    warm = take(source, warmup)
    timed = take(source, count)
    loop = asyncio.new_event_loop()
    try:

        def run() -> int:
            store, letters = SINKS[sink]()
            ingestor = TelemetryIngestor(store, letters, cost=CostMeter() if metered else None)
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


# --- geofences (issue 14): the CPU path with 1,000 geofences in the car's fleet against the same run with none ---

GEOFENCE_COUNT = 1000
# Where the benchmark's cars drive (bench/generator.py: 52.42 ± 0.5, 10.78 ± 0.5) and the simulator's cities.
GEOFENCE_AREAS = ((52.42, 10.78, 0.5), (47.6205, -122.3493, 0.1), (48.1374, 11.5755, 0.1), (52.52, 13.405, 0.1),
                  (51.5072, -0.1276, 0.1))  # fmt: skip


def geofence_fleet(count: int = GEOFENCE_COUNT, seed: int = 7) -> VehicleGeofences:
    """A fleet's geofences: depots and customer sites as circles (50 m - 2 km), yards, zones and districts as
    polygons (5-40 vertices, 200 m - 3 km across), most where the fleet drives, some around the simulator's cities;
    a tenth with a curfew, a tenth restricted. Seeded: every run indexes the same geofences."""
    rng = random.Random(seed)
    scope = FleetScope("bench", "fleet")
    curfew = {"timeZone": "Europe/Berlin", "allowed": [{"days": ["mon", "tue", "wed", "thu", "fri"],
                                                        "start": "06:00", "end": "20:00"}]}  # fmt: skip
    fences: list[Geofence] = []
    for i in range(count):
        lat0, lon0, spread = GEOFENCE_AREAS[0] if rng.random() < 0.8 else rng.choice(GEOFENCE_AREAS[1:])
        lat, lon = lat0 + rng.uniform(-spread, spread), lon0 + rng.uniform(-spread, spread)
        raw: dict[str, object] = {"name": f"site {i}", "restricted": rng.random() < 0.1,
                                  "alerts": {"enter": rng.random() < 0.3, "exit": rng.random() < 0.3}}  # fmt: skip
        if rng.random() < 0.1:
            raw["curfew"] = curfew
        if rng.random() < 0.5:
            raw["shape"] = {"type": "Circle", "center": [lon, lat], "radiusM": rng.uniform(50, 2000)}
        else:
            n, size = rng.randint(5, 40), rng.uniform(0.001, 0.015)
            ring = [[lon + size * rng.uniform(0.5, 1) * math.cos(2 * math.pi * k / n) / 0.61,
                     lat + size * rng.uniform(0.5, 1) * math.sin(2 * math.pi * k / n)] for k in range(n)]  # fmt: skip
            raw["shape"] = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
        fences.append(parse_geofence(raw, geofence_id=f"g{i}", scope=scope))
    return VehicleGeofences(GeofenceIndex(fences), speed_limit=SpeedLimit(130.0, 30.0))


def geofence_rates(messages: int, rounds: int = 5, warmup: int = 20) -> tuple[float, float]:
    """msgs/s of the CPU path (steady state, null sink) without geofences and with GEOFENCE_COUNT in every car's
    fleet, rounds interleaved so both see the same machine; best of each."""
    prepare_process()
    count = max(1, messages // 100)
    source = batches(STEADY.cars, STEADY.repeats)
    warm = take(source, warmup)
    timed = take(source, count)
    fleet = geofence_fleet()
    loop = asyncio.new_event_loop()

    def run(geofences: StaticGeofences | None) -> float:
        store, letters = null_sinks()
        ingestor = TelemetryIngestor(store, letters, geofences=geofences)
        for batch in warm:
            loop.run_until_complete(ingestor.ingest(batch))
        gc.collect()
        started = time.perf_counter()
        for batch in timed:
            loop.run_until_complete(ingestor.ingest(batch))
        return sum(len(b) for b in timed) / (time.perf_counter() - started)

    try:
        none = with_fences = 0.0
        for _ in range(rounds):
            none = max(none, run(None))
            with_fences = max(with_fences, run(StaticGeofences(default=fleet)))
        return none, with_fences
    finally:
        loop.close()


INTERPRETED_SCRIPT = """
import json, sys
from bench.cpu import CATCH_UP, STEADY, cpu_rate
from shared import native
assert not native.active(), "the fold is compiled in the interpreted run"
count = int(sys.argv[1])
print(json.dumps([cpu_rate(STEADY, "null", count), cpu_rate(CATCH_UP, "null", count)]))
"""


def interpreted_rates(messages: int) -> tuple[float, float]:
    """Steady and catch-up msgs/s (null sink) of the same code interpreted, in another process with
    TELEMETRY_COMPILED=false: the baseline of the compiled fold (shared/native.py), measured in the same run."""
    import json
    import os
    import subprocess
    import sys

    from shared import native

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, native.SETTING: "false", "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", INTERPRETED_SCRIPT, str(messages)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    steady, catch_up = json.loads(done.stdout.strip().splitlines()[-1])
    return float(steady), float(catch_up)
