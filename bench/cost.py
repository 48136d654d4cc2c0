"""Dollars per car per month from this run's measured figures (shared/cost/model.py), ours beside naive.

`python -m bench.cost` prints the table from bench/results/latest.json (the last `make bench`); `make bench`
prints it at the end of its run. Steady state is what a fleet does all day, so the table uses its figures.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from bench import report
from shared.containers import TELEMETRY
from shared.cost.model import (
    DEFAULT_ASSUMPTIONS,
    Assumptions,
    CarMonth,
    MessageCost,
    car_month,
    load_prices,
    serverless_cosmos,
)

INTERVALS = ((60.0, "1 message a minute"), (10.0, "1 message every 10 s"))
PIPELINES = ("ours", "naive")
MESSAGE_BYTES = 461.0  # the benchmark generator's mean message (bench/generator.py), measured


def message_cost(figures: dict[str, float], details: dict[str, Any], pipeline: str) -> MessageCost:
    """One steady-state message of `pipeline` as this run measured it. The CPU per message is ours for both
    pipelines (generous to naive: its two writes a message wait twice as long in Azure)."""
    by_container = details.get(f"writes.steady.{pipeline}.bytesByContainer", {})
    return MessageCost(
        request_units=figures[f"ru.steady.{pipeline}.perMsg"],
        history_bytes=float(by_container.get(TELEMETRY, 0.0)),
        cpu_seconds=1.0 / figures["cpu.steady.memory.msgsPerS"],
        message_bytes=MESSAGE_BYTES,
    )


def render(figures: dict[str, float], details: dict[str, Any], assume: Assumptions = DEFAULT_ASSUMPTIONS) -> str:
    prices = load_prices()
    out: list[str] = []
    for interval, label in INTERVALS:
        months: dict[str, CarMonth] = {
            p: car_month(message_cost(figures, details, p), interval, prices, assume) for p in PIPELINES
        }
        out.append(f"\nCost per car per month, {label}, fleet of {assume.cars:,} cars (USD, list prices)")
        out.append(f"| {'service':<14} | {'item':<26} | {'ours':>9} | {'naive':>9} | how (ours) |")
        out.append(f"|{'-' * 16}|{'-' * 28}|{'-' * 11}|{'-' * 11}|---|")
        for ours, naive in zip(months["ours"].lines, months["naive"].lines, strict=True):
            out.append(f"| {ours.service:<14} | {ours.item:<26} | {ours.usd:>9.4f} | {naive.usd:>9.4f} | {ours.how} |")
        telemetry = months["ours"].telemetry_total, months["naive"].telemetry_total
        out.append(
            f"| {'telemetry path':<14} | {'(all but Maps)':<26} | {telemetry[0]:>9.4f} | {telemetry[1]:>9.4f} "
            f"| ours/naive {telemetry[0] / telemetry[1]:.2f} |"
        )
        total = months["ours"].total, months["naive"].total
        out.append(
            f"| {'total':<14} | {'':<26} | {total[0]:>9.4f} | {total[1]:>9.4f} | ours/naive {total[0] / total[1]:.2f} |"
        )
        serverless = [serverless_cosmos(message_cost(figures, details, p), interval, prices) for p in PIPELINES]
        out.append(f"(Cosmos serverless instead: RU alone {serverless[0]:.4f} ours, {serverless[1]:.4f} naive)")
    return "\n".join(out)


def main() -> int:
    if not report.LATEST.exists():
        print("no bench/results/latest.json: run `make bench` first", file=sys.stderr)
        return 1
    latest = orjson.loads(report.LATEST.read_bytes())
    print(render(latest["figures"], latest["details"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
