"""`python -m bench` (`make bench`): every figure of issue 6 in one run, ours beside the naive pattern.

Flags: --quick (small counts, for a smoke run), --skip-e2e (no local Cosmos server), --messages N (size of
the streamed RSS run), --save-baseline (also write bench/baseline.json from this run).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench import coldstart, cpu, report, rss, writes
from bench import cost as cost_table


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run in well under a minute")
    parser.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end run on the local Cosmos server")
    parser.add_argument("--messages", type=int, default=None, help="messages streamed for peak RSS (1,000,000)")
    parser.add_argument("--cars", type=int, default=10_000, help="fleet size of the streamed RSS run")
    parser.add_argument("--cache-mb", type=int, default=None, help="vehicle cache MB, RSS and scale runs (150)")
    parser.add_argument("--e2e-messages", type=int, default=None, help="messages per scenario end to end (3,000)")
    parser.add_argument("--save-baseline", action="store_true", help="write bench/baseline.json from this run")
    return parser.parse_args(argv)


def _step(name: str) -> None:
    print(f"... {name}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    quick = args.quick
    cpu_messages = 10_000 if quick else 50_000
    streamed = args.messages or (50_000 if quick else 1_000_000)
    e2e_messages = args.e2e_messages or (500 if quick else 3_000)
    figures: dict[str, float] = {}
    details: dict[str, Any] = {"quick": quick}
    started = time.perf_counter()

    _step("floor")
    floor = figures["floor.msgsPerS"] = cpu.floor_rate(cpu_messages * 2)
    for scenario in cpu.SCENARIOS:
        for sink in cpu.SINKS:
            _step(f"CPU path {scenario.name} ({sink} sink)")
            rate = cpu.cpu_rate(scenario, sink, cpu_messages)
            figures[f"cpu.{scenario.name}.{sink}.msgsPerS"] = rate
            if sink == "null":
                figures[f"cpu.{scenario.name}.null.ratioToFloor"] = rate / floor

    from shared import native

    details["fold"] = "compiled" if native.active() else "interpreted"
    if native.active():
        _step("CPU path steady and catch-up with the same fold interpreted (another process, null sink)")
        steady, catch_up = cpu.interpreted_rates(cpu_messages)
        figures["cpu.steady.interpreted.msgsPerS"], figures["cpu.catch-up.interpreted.msgsPerS"] = steady, catch_up
        figures["cpu.steady.compiledSpeedup"] = figures["cpu.steady.null.msgsPerS"] / steady
        figures["cpu.catch-up.compiledSpeedup"] = figures["cpu.catch-up.null.msgsPerS"] / catch_up

    _step("CPU path steady with the cost meter on, as the function app runs it (null sink)")
    metered = cpu.cpu_rate(cpu.SCENARIOS[0], "null", cpu_messages, metered=True)
    figures["cpu.steady.metered.msgsPerS"] = metered
    figures["cpu.steady.metered.ratio"] = metered / figures["cpu.steady.null.msgsPerS"]

    _step("CPU path with 1,000 geofences in the fleet against none (null sink, steady)")
    none, fenced = cpu.geofence_rates(cpu_messages)
    figures["cpu.geofences.none.msgsPerS"], figures["cpu.geofences.1000.msgsPerS"] = none, fenced
    figures["cpu.geofences.ratio"] = fenced / none

    _step(f"peak RSS over {streamed:,} streamed messages ({args.cars:,} cars)")
    streamed_run = rss.measure(streamed, args.cars, args.cache_mb)
    figures["rss.peakRssMb"] = streamed_run["peakRssMb"]
    figures["rss.msgsPerS"] = streamed_run["messages"] / streamed_run["seconds"]
    details["rss"] = streamed_run

    _step(f"CPU path {args.cars:,} cars against steady state, caches sized as the RSS run's (issue 19)")
    all_hot = None if quick else rss.ALL_HOT_MB  # --quick: one round, without the all-hot figure
    scale = rss.scale_rates(args.cars, 1 if quick else 3, args.cache_mb or rss.CACHE_MB, all_hot)
    figures |= {f"scale.{key}": value for key, value in scale.items()}

    for scenario in cpu.SCENARIOS:
        for pipeline in ("ours", "naive"):
            _step(f"writes per message {scenario.name} ({pipeline})")
            cost = writes.write_cost(scenario, pipeline, 16 if quick else 64)
            figures[f"writes.{scenario.name}.{pipeline}.writesPerMsg"] = cost.writes_per_message
            figures[f"writes.{scenario.name}.{pipeline}.bytesPerMsg"] = cost.bytes_per_message
            details[f"writes.{scenario.name}.{pipeline}.byContainer"] = cost.writes_by_container
            figures[f"ru.{scenario.name}.{pipeline}.perMsg"] = cost.request_units_per_message
            details[f"ru.{scenario.name}.{pipeline}.byContainer"] = cost.request_units_by_container
            details[f"writes.{scenario.name}.{pipeline}.bytesByContainer"] = cost.bytes_by_container
        figures[f"ru.{scenario.name}.ratio"] = (
            figures[f"ru.{scenario.name}.ours.perMsg"] / figures[f"ru.{scenario.name}.naive.perMsg"]
        )

    _step("lake feed per message (steady, one export per minute of fleet time; docs/analytics.md)")
    from bench import lake  # pyarrow only when used

    lake_run = lake.lake_cost(cpu.STEADY, 2 if quick else 5)
    figures["lake.cpuUsPerMsg"] = lake_run.cpu_us_per_message
    figures["lake.blobWritesPerMsg"] = lake_run.blob_writes_per_message
    figures["lake.bytesPerMsg"] = lake_run.bytes_per_message
    figures["lake.cosmosRuPerMsg"] = lake_run.cosmos_ru_per_message
    details["lake"] = lake_run.as_dict()

    if not args.skip_e2e:
        from bench import e2e  # imports the Cosmos SDK and devstack only when used

        _step(f"end to end on the local Cosmos server ({e2e_messages:,} messages per scenario and pipeline)")
        for name, result in e2e.end_to_end(cpu.SCENARIOS, e2e_messages).items():
            figures[f"e2e.{name}.ours.msgsPerS"] = result.ours_rate
            figures[f"e2e.{name}.naive.msgsPerS"] = result.naive_rate
            figures[f"e2e.{name}.ratio"] = result.ratio
        details["e2eMessagesPerScenario"] = e2e_messages

    _step("cold start")
    cold = coldstart.cold_start(3 if quick else 7)
    figures["coldstart.importS"] = cold["importS"]
    figures["coldstart.processS"] = cold["processS"]
    figures["coldstart.telemetryImportS"] = cold["telemetryImportS"]
    figures["coldstart.telemetryReadyS"] = cold["telemetryReadyS"]
    details["coldstartRuns"] = cold["runs"]
    details["seconds"] = round(time.perf_counter() - started, 1)

    baseline = report.load_baseline()
    print(f"telemetry fold: {details['fold']} (shared/native.py)")
    print(report.render(figures, baseline))
    print(cost_table.render(figures, details))
    report.write(figures, details)
    print(f"\nwritten {report.LATEST.relative_to(report.BENCH.parent)}", end="")
    if args.save_baseline:
        report.write(figures, details, report.BASELINE)
        print(f" and {report.BASELINE.relative_to(report.BENCH.parent)}", end="")
    print(f" ({details['seconds']} s)" + ("" if baseline else "; no bench/baseline.json to compare with"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
