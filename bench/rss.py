"""Peak RSS while streaming many messages through the ingestor, measured in a fresh child process.

The parent runs `python -m bench.rss`, which generates batches lazily, ingests them into `NullDocumentStore`
(a remote Cosmos account holds nothing in our process; the vehicle cache is the state we keep) and prints its
own peak RSS (VmHWM) and throughput as JSON. A child keeps the parent's memory out of the figure.
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


def measure(messages: int, cars: int, cache_mb: int | None) -> dict[str, Any]:
    """Run the child and return what it printed: peakRssMb, messages, seconds, cars, cacheMb."""
    argv = [sys.executable, "-m", "bench.rss", "--messages", str(messages), "--cars", str(cars)]
    if cache_mb is not None:
        argv += ["--cache-mb", str(cache_mb)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


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
    from shared.telemetry.vehicle_cache import VehicleCache

    cache = VehicleCache() if cache_mb is None else VehicleCache(max_bytes=cache_mb * 1024 * 1024)
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
        "cacheMb": cache.max_bytes // (1024 * 1024),
        "cacheUsedMb": round(cache._bytes / 1024 / 1024, 1),  # a benchmark may look inside: cold tier (JSON)
        "cacheHotMb": round(cache._hot_bytes / 1024 / 1024, 1),  # hot tier (dicts, estimated memory)
        "cacheHotMaxMb": cache.max_hot_bytes // (1024 * 1024),
        "cachedCars": len(cache),
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
