"""What a cached vehicle document really takes in memory, by message shape: the measurement `estimated_size`
(shared/telemetry/vehicle_cache.py) is calibrated on and tested against (tests/unit/test_vehicle_cache.py).

Documents are built as ingestion builds them: messages of one shape (so many signals, numbers only or with string
values, one sample or several) through a `TelemetryIngestor` into its cache, so each document is what the cache
holds after a commit, its history buffer (`ingest.pending`) at a chosen fill. Their memory is a deep
`sys.getsizeof` walk of every cached car together, each object counted once, divided by the cars: what cars share
(interned keys, small ints, singletons) is spread over all of them instead of charged to each. The walk sees what
objects ask for, not what the allocator adds (pymalloc's rounding, free slots in its pools); `python -m
bench.doc_memory` sets it beside tracemalloc and the process's RSS for one shape.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

import orjson

from bench.generator import canonical
from shared.device_messages import DeviceMessage

# Signals a car may send, each with a value of its datatype (shared/telemetry/vss-6.0-signals.json): numbers and
# booleans first, then string signals (allowed values, a free string, a DTC list) that a "strings" shape mixes in.
Value = Callable[[random.Random, int], Any]
NUMBERS: Final[tuple[tuple[str, Value], ...]] = (
    ("Vehicle.Speed", lambda r, i: round(r.uniform(0, 130), 1)),
    ("Vehicle.CurrentLocation.Latitude", lambda r, i: round(52.4 + r.uniform(-0.5, 0.5), 6)),
    ("Vehicle.CurrentLocation.Longitude", lambda r, i: round(10.7 + r.uniform(-0.5, 0.5), 6)),
    ("Vehicle.CurrentLocation.Heading", lambda r, i: round(r.uniform(0, 360), 1)),
    ("Vehicle.IsMoving", lambda r, i: r.random() < 0.7),
    ("Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", lambda r, i: round(r.uniform(5, 95), 2)),
    ("Vehicle.TraveledDistance", lambda r, i: 12_345_678 + 15 * i),
    ("Vehicle.Exterior.AirTemperature", lambda r, i: round(r.uniform(-5, 25), 1)),
    ("Vehicle.Acceleration.Lateral", lambda r, i: round(r.gauss(0, 1), 3)),
    ("Vehicle.Acceleration.Longitudinal", lambda r, i: round(r.gauss(0, 1), 3)),
    ("Vehicle.Acceleration.Vertical", lambda r, i: round(r.gauss(0, 0.3), 3)),
    ("Vehicle.AngularVelocity.Pitch", lambda r, i: round(r.gauss(0, 2), 2)),
    ("Vehicle.AngularVelocity.Roll", lambda r, i: round(r.gauss(0, 2), 2)),
    ("Vehicle.AngularVelocity.Yaw", lambda r, i: round(r.gauss(0, 5), 2)),
    ("Vehicle.AverageSpeed", lambda r, i: round(r.uniform(20, 80), 1)),
    ("Vehicle.Powertrain.TractionBattery.CurrentCurrent", lambda r, i: round(r.uniform(-200, 300), 1)),
    ("Vehicle.Powertrain.TractionBattery.CurrentPower", lambda r, i: round(r.uniform(-50_000, 150_000), 0)),
    ("Vehicle.Powertrain.TractionBattery.CurrentVoltage", lambda r, i: round(r.uniform(350, 410), 1)),
    ("Vehicle.Powertrain.TractionBattery.Temperature.Average", lambda r, i: round(r.uniform(15, 40), 1)),
    ("Vehicle.Powertrain.TractionBattery.Temperature.Max", lambda r, i: round(r.uniform(20, 45), 1)),
    ("Vehicle.Powertrain.TractionBattery.Temperature.Min", lambda r, i: round(r.uniform(10, 35), 1)),
    ("Vehicle.Powertrain.TractionBattery.Range", lambda r, i: r.randrange(10_000, 500_000)),
    ("Vehicle.Powertrain.TractionBattery.TimeRemaining", lambda r, i: r.randrange(0, 30_000)),
    ("Vehicle.Powertrain.TractionBattery.Charging.IsCharging", lambda r, i: r.random() < 0.1),
    ("Vehicle.Powertrain.Transmission.CurrentGear", lambda r, i: r.randrange(-1, 8)),
    ("Vehicle.Powertrain.Transmission.Temperature", lambda r, i: round(r.uniform(20, 90), 1)),
    ("Vehicle.Service.DistanceToService", lambda r, i: round(r.uniform(0, 30_000), 1)),
    ("Vehicle.TripDuration", lambda r, i: float(i)),
    ("Vehicle.TripMeterReading", lambda r, i: 4_000 + 15 * i),
    ("Vehicle.Body.Hood.IsOpen", lambda r, i: False),
)
STRINGS: Final[tuple[tuple[str, Value], ...]] = (
    ("Vehicle.LowVoltageSystemState", lambda r, i: r.choice(("ON", "OFF", "ACC"))),
    ("Vehicle.Diagnostics.DTCList", lambda r, i: ["P0300", "U0100"][: r.randrange(0, 3)]),
    ("Vehicle.Powertrain.Transmission.PerformanceMode", lambda r, i: r.choice(("NORMAL", "SPORT", "ECONOMY"))),
    ("Vehicle.VehicleIdentification.VIN", lambda r, i: "WVWZZZ1JZXW000001"),
    ("Vehicle.Body.Lights.LightSwitch", lambda r, i: r.choice(("OFF", "AUTO", "DAYTIME_RUNNING_LIGHTS"))),
    ("Vehicle.VehicleIdentification.Model", lambda r, i: r.choice(("ID.4 Pro Performance", "Golf GTE"))),
    ("Vehicle.Powertrain.TractionBattery.Charging.Timer.Mode", lambda r, i: r.choice(("INACTIVE", "START_TIME"))),
    ("Vehicle.Body.Lights.Brake.IsActive", lambda r, i: r.choice(("INACTIVE", "ACTIVE"))),
    ("Vehicle.Powertrain.Transmission.GearChangeMode", lambda r, i: "AUTOMATIC"),
    ("Vehicle.Powertrain.TractionBattery.Charging.StartStopCharging", lambda r, i: r.choice(("START", "STOP"))),
)


@dataclass(frozen=True, slots=True)
class Shape:
    """A kind of message: `signals` per sample (every third a string signal when `strings`), `samples` each."""

    signals: int
    strings: bool = False
    samples: int = 1

    @property
    def name(self) -> str:
        kind = "strings" if self.strings else "numbers"
        return f"{self.signals} signals, {kind}" + (f", {self.samples} samples" if self.samples > 1 else "")

    def paths(self) -> list[tuple[str, Value]]:
        numbers, strings = iter(NUMBERS), iter(STRINGS)
        chosen: list[tuple[str, Value]] = []
        for i in range(self.signals):
            string = self.strings and (i % 3 == 2 or self.signals == 1)
            chosen.append(next(strings) if string else next(numbers))
        return chosen


# The shapes the estimate is held to: few to many signals, numbers only and with strings (which open trips and
# raise DTC alerts), one sample per message (what cars send live, the benchmark's among them: None) and several (the
# simulator's 4; a car's or its edge module's backlog, up to 200 samples of one signal each).
SHAPES: Final[tuple[Shape | None, ...]] = (
    None,
    *(Shape(n, strings) for n in (1, 3, 7, 10, 30) for strings in (False, True)),
    Shape(7, samples=4),
    Shape(3, True, samples=4),
    Shape(1, samples=20),
    Shape(1, samples=200),
    Shape(30, True, samples=10),
)
# A car whose messages differ: live ones of 10 signals, and between them a backlog's of 20 samples of one signal.
MIXED: Final = (Shape(10), Shape(1, samples=20))
FILLS: Final = (0, 1, 8, 15)  # buffered history entries (a chunk is written at 16: history.CHUNK_MAX_MESSAGES)
BATCH: Final = 100  # messages per batch, as the benchmark's (bench/generator.py)


def messages(rounds: Sequence[Shape], cars: int, seed: int = 7) -> Iterator[list[DeviceMessage]]:
    """One message per car per round, in that round's shape (event time one second per sample apart), in batches
    of `BATCH` messages."""
    rng = random.Random(seed)
    seqs = [rng.randrange(0, 10_000) for _ in range(cars)]
    ms = 0
    for i, shape in enumerate(rounds):
        paths = shape.paths()
        batch: list[DeviceMessage] = []
        for car in range(cars):
            if len(batch) == BATCH:
                yield batch
                batch = []
            samples = []
            for s in range(shape.samples):
                values = {path: value(rng, i) for path, value in paths}
                samples.append({"ts": canonical(ms + s * 1000 + car), "signals": values})
            body = orjson.dumps({"v": 1, "seq": seqs[car] + i, "samples": samples})
            enqueued = canonical(ms + shape.samples * 1000 + car + 300)
            batch.append(DeviceMessage(body, f"mem-{car:05d}", enqueued, i * cars + car))
        ms += shape.samples * 1000
        yield batch


def build(shape: Shape | Sequence[Shape] | None, fill: int, cars: int = 20) -> tuple[list[Any], int]:
    """The cached documents of `cars` cars whose buffers hold `fill` entries after a full cycle (a chunk already
    written, so every part of the document has been through a flush), and the bytes of the last message. Shape None:
    the benchmark's messages (bench/generator.py: 10 signals, ~460 bytes, trips and DTC alerts); a sequence: the
    shape of each round in turn, over and over (a car whose messages differ)."""
    from bench import generator
    from bench.sinks import NullDeadLetterSink, NullDocumentStore
    from shared.telemetry.history import CHUNK_MAX_MESSAGES
    from shared.telemetry.ingest import TelemetryIngestor
    from shared.telemetry.vehicle_cache import MIB, VehicleCache

    cache = VehicleCache(max_bytes=64 * MIB, max_hot_bytes=1024 * MIB)
    ingestor = TelemetryIngestor(NullDocumentStore(), NullDeadLetterSink(), cache=cache)
    size = 0

    rounds = CHUNK_MAX_MESSAGES + fill
    if shape is None:
        per_round = -(-cars // min(cars, BATCH))
        source: Iterable[list[DeviceMessage]] = islice(
            generator.batches(cars, 1, batch_size=min(cars, BATCH)), rounds * per_round
        )
        ids = [f"car-{car:06d}" for car in range(cars)]
    else:
        cycle = [shape] if isinstance(shape, Shape) else list(shape)
        source = messages([cycle[i % len(cycle)] for i in range(rounds)], cars)
        ids = [f"mem-{car:05d}" for car in range(cars)]

    async def run() -> None:
        nonlocal size
        for batch in source:
            size = len(batch[-1].body)
            await ingestor.ingest(batch)

    asyncio.run(run())
    docs = [cache.get(vehicle_id) for vehicle_id in ids]
    assert all(item is not None and item.doc is not None for item in docs), "every car hot"
    return [item.doc for item in docs if item is not None], size


def walked_size(objects: Iterable[Any], align: int = 1) -> int:
    """Deep `sys.getsizeof` of everything reachable through dicts, lists and tuples, each object once (by id);
    each size rounded up to `align` (16: what pymalloc hands out for a request, CPython 3.11 on 64 bits)."""
    seen: set[int] = set()
    total = 0
    stack = list(objects)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += -(-sys.getsizeof(obj) // align) * align
        if type(obj) is dict:
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif type(obj) in (list, tuple):
            stack.extend(obj)
    return total


def per_car(docs: Sequence[Any]) -> int:
    """Walked memory of the documents together, per car."""
    return walked_size(docs) // len(docs)


def name(shape: Shape | Sequence[Shape] | None) -> str:
    if shape is None:
        return "benchmark"
    return shape.name if isinstance(shape, Shape) else " / ".join(one.name for one in shape)


def table(
    shapes: Iterable[Shape | Sequence[Shape] | None] = (*SHAPES, MIXED), fills: Iterable[int] = FILLS
) -> list[dict[str, Any]]:
    """Per shape and fill: message bytes, bytes per car walked (plain and rounded to 16) and estimated (the mean of
    `estimated_size` over the cars), and the estimate's ratio to each walk."""
    from shared.telemetry.vehicle_cache import estimated_size

    rows = []
    for shape in shapes:
        for fill in fills:
            docs, size = build(shape, fill)
            walked, aligned = walked_size(docs) // len(docs), walked_size(docs, 16) // len(docs)
            estimate = sum(map(estimated_size, docs)) // len(docs)
            rows.append({"shape": name(shape), "messageBytes": size, "fill": fill, "walked": walked,
                         "aligned": aligned, "estimated": estimate, "ratio": round(estimate / walked, 2),
                         "alignedRatio": round(estimate / aligned, 2)})  # fmt: skip
    return rows


def allocator_check(shape: Shape | None = None, fill: int = 15, cars: int = 4_000) -> dict[str, float]:
    """The walk beside what the allocator really gives the same documents, per car: tracemalloc's traced bytes
    and the process's RSS growth while `cars` cars' documents are built and held (run in a fresh process)."""
    import tracemalloc
    from pathlib import Path

    def rss_kb() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    build(shape, 0, cars=2)  # imports, catalogue and decoder made before measuring
    gc.collect()
    rss_before = rss_kb()
    docs, _ = build(shape, fill, cars)
    gc.collect()
    rss = (rss_kb() - rss_before) * 1024
    walked, aligned = walked_size(docs), walked_size(docs, 16)
    del docs
    gc.collect()
    tracemalloc.start()  # a second build: tracemalloc's own tables would count in the RSS of the first
    kept = build(shape, fill, cars)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return {"cars": cars, "walkedPerCar": round(walked / cars), "alignedPerCar": round(aligned / cars),
            "tracedPerCar": round(traced / cars), "rssPerCar": round(rss / cars)}  # fmt: skip


CHECKS: Final = (None, Shape(1), Shape(7), Shape(7, True))  # the shapes `main` checks against the allocator


def main() -> None:
    """The table, then `allocator_check` of each of `CHECKS` at full and empty buffers, each in a fresh process."""
    if sys.argv[1:2] == ["--check"]:
        shape, fill = CHECKS[int(sys.argv[2])], int(sys.argv[3])
        print(json.dumps({"shape": name(shape), "fill": fill, **allocator_check(shape, fill)}))
        return
    for row in table():
        print(json.dumps(row))
    for index in range(len(CHECKS)):
        for fill in (15, 0):
            argv = [sys.executable, "-m", "bench.doc_memory", "--check", str(index), str(fill)]
            print(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip())


if __name__ == "__main__":
    main()
