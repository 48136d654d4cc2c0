"""Peak RSS while streaming many messages through the ingestor, measured in a fresh child process; and the
throughput of a large fleet against steady state (issue 19, "scale check").

The parent runs `python -m bench.rss`, which generates batches lazily, ingests them into `NullDocumentStore`
(a remote Cosmos account holds nothing in our process; the vehicle cache is the state we keep) and prints its
own peak RSS (VmHWM) and throughput as JSON. A child keeps the parent's memory out of the figure.

`scale_rates` streams the 10,000-car fleet and the steady-state fleet (100 cars) through ingestors whose caches
are sized as the RSS run's (`CACHE_MB`, `VehicleCache.for_instance`), rounds interleaved, and times the ingestion
of each batch only (not the generator): what a large working set costs against one that stays in the CPU's caches.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The memory the benchmark's process gives its vehicle cache (`VehicleCache.for_instance`): the 250 MB peak RSS
# target less the process itself (~27-40 MB: interpreter, imports, catalogue) and the allocator's fragmentation
# (~50 MB when documents move between the tiers every history cycle: 180 MB measured 260 MB, 150 MB 242 MB).
CACHE_MB = 150
# A cache that holds the 10,000-car fleet hot (`tier_sizes`: 10,000 x 28 KB), for the figure without the RSS target.
ALL_HOT_MB = 1024


def measure(messages: int, cars: int, cache_mb: int | None) -> dict[str, Any]:
    """Run the child and return what it printed: peakRssMb, messages, seconds, cars, cacheMb."""
    argv = [sys.executable, "-m", "bench.rss", "--messages", str(messages), "--cars", str(cars)]
    if cache_mb is not None:
        argv += ["--cache-mb", str(cache_mb)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def scale_rates(
    cars: int = 10_000, rounds: int = 3, cache_mb: int = CACHE_MB, all_hot_mb: int | None = ALL_HOT_MB
) -> dict[str, float]:
    """msgs/s of the CPU path (steady state: each car once per batch of 100, null sink) for `cars` cars and for
    the steady benchmark's 100, each cache sized by `VehicleCache.for_instance(cache_mb, cars)` as the RSS run's
    (and, unless `all_hot_mb` is None, for `cars` with a cache of `all_hot_mb` that holds them all hot); rounds
    interleaved, best of each. A round warms a fresh ingestor with one history cycle per car (16 messages: every
    car cached, buffers as full as they get) and times one more, so the large fleet is timed over its buffers'
    whole cycle, chunk flushes and fullest documents included; only `ingest` is timed, not the generator."""
    import gc

    from bench.cpu import STEADY, prepare_process
    from bench.generator import batches
    from bench.sinks import NullDeadLetterSink, NullDocumentStore
    from shared.telemetry.history import CHUNK_MAX_MESSAGES
    from shared.telemetry.ingest import TelemetryIngestor
    from shared.telemetry.vehicle_cache import MIB, VehicleCache

    prepare_process()
    loop = asyncio.new_event_loop()

    def run(fleet: int, memory_mb: int) -> tuple[float, int]:
        """(msgs/s, fewest cars hot after a timed batch)."""
        cache = VehicleCache.for_instance(memory_mb * MIB, working_set_cars=fleet)
        ingestor = TelemetryIngestor(NullDocumentStore(), NullDeadLetterSink(), cache=cache)
        per_cycle = max(fleet * CHUNK_MAX_MESSAGES // STEADY.cars, 250)  # batches of 100: 16 messages per car
        source = batches(fleet, STEADY.repeats)
        for _ in range(per_cycle):
            loop.run_until_complete(ingestor.ingest(next(source)))
        gc.collect()
        count, seconds, fewest_hot, clock = 0, 0.0, fleet, time.perf_counter
        for _ in range(per_cycle):
            batch = next(source)
            started = clock()
            loop.run_until_complete(ingestor.ingest(batch))
            seconds += clock() - started
            count += len(batch)
            fewest_hot = min(fewest_hot, cache.hot_cars)
        return count / seconds, fewest_hot

    try:
        steady = large = all_hot = 0.0
        fewest_hot = cars
        for _ in range(rounds):
            steady = max(steady, run(STEADY.cars, cache_mb)[0])
            rate, hot = run(cars, cache_mb)
            large, fewest_hot = max(large, rate), min(fewest_hot, hot)
            if all_hot_mb is not None:
                all_hot = max(all_hot, run(cars, all_hot_mb)[0])
    finally:
        loop.close()
    figures = {"steady.msgsPerS": steady, "cars.msgsPerS": large, "ratio": large / steady,
               "hotCarsShare": fewest_hot / cars}  # fmt: skip
    if all_hot_mb is not None:
        figures |= {"allHot.msgsPerS": all_hot, "allHot.ratio": all_hot / steady}
    return figures


def _peak_rss_kb() -> int:
    """This process's peak RSS in KB: VmHWM, which exec resets. Not ru_maxrss: Linux carries that over from
    the forking parent across exec, so a child of a bench that already holds 400 MB would report 400 MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux


def _child(messages: int, cars: int, cache_mb: int | None) -> dict[str, Any]:
    from bench.generator import batches
    from bench.sinks import NullDeadLetterSink, NullDocumentStore
    from shared.telemetry.ingest import TelemetryIngestor
    from shared.telemetry.tuning import tune_for_ingestion
    from shared.telemetry.vehicle_cache import MIB, VehicleCache

    cache = VehicleCache.for_instance((cache_mb or CACHE_MB) * MIB, working_set_cars=cars)
    ingestor = TelemetryIngestor(NullDocumentStore(), NullDeadLetterSink(), cache=cache)
    tune_for_ingestion()  # as the service's runtime does once its ingestor exists
    source = batches(cars, 1)

    async def run() -> int:
        done = 0
        while done < messages:
            batch = next(source)
            await ingestor.ingest(batch)
            done += len(batch)
        return done

    started = time.perf_counter()
    count = asyncio.run(run())
    seconds = time.perf_counter() - started
    peak_kb = _peak_rss_kb()
    return {
        "peakRssMb": round(peak_kb / 1024, 1),
        "messages": count,
        "seconds": round(seconds, 1),
        "cars": cars,
        "cacheMb": cache.max_bytes // MIB,
        "cacheUsedMb": round(cache.cold_bytes / MIB, 1),  # cold tier (JSON)
        "cacheHotMb": round(cache.hot_bytes / MIB, 1),  # hot tier (dicts, estimated memory)
        "cacheHotMaxMb": cache.max_hot_bytes // MIB,
        "cachedCars": len(cache),
        "hotCars": cache.hot_cars,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--cars", type=int, default=10_000)
    parser.add_argument("--cache-mb", type=int, default=None)
    args = parser.parse_args()
    print(json.dumps(_child(args.messages, args.cars, args.cache_mb)))


if __name__ == "__main__":
    main()
