"""Targets, the printed table, latest.json and the comparison with bench/baseline.json.

Figures are kept flat (`name -> number`) so the baseline delta is a plain per-key comparison, and each
target names the figure it checks, its bound and its direction.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
LATEST = RESULTS / "latest.json"
BASELINE = BENCH / "baseline.json"


@dataclass(frozen=True, slots=True)
class Target:
    figure: str
    bound: float
    at_least: bool  # True: figure >= bound passes; False: figure <= bound passes
    label: str

    def passes(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound


TARGETS = (
    Target("cpu.steady.null.msgsPerS", 50_000, True, "CPU path steady >= 50,000 msgs/s"),
    Target("cpu.catch-up.null.msgsPerS", 50_000, True, "CPU path catch-up >= 50,000 msgs/s"),
    Target("rss.peakRssMb", 250, False, "peak RSS <= 250 MB streaming"),
    Target("writes.steady.ours.writesPerMsg", 1.1, False, "Cosmos writes/msg steady <= 1.1"),
    Target("writes.catch-up.ours.writesPerMsg", 0.25, False, "Cosmos writes/msg catch-up <= 0.25"),
    Target("e2e.steady.ratio", 1.5, True, "end to end steady >= 1.5x naive"),
    Target("e2e.catch-up.ratio", 5.0, True, "end to end catch-up >= 5x naive"),
    Target("coldstart.importS", 1.0, False, "cold start (import function_app) <= 1.0 s"),
    Target("coldstart.telemetryReadyS", 1.0, False, "cold start with telemetry on, distro on the path <= 1.0 s"),
    Target("cpu.geofences.ratio", 0.9, True, "CPU path with 1,000 geofences >= 0.9x without (issue 14)"),
    Target("ru.steady.ratio", 0.6, False, "modelled Cosmos RU/msg steady <= 0.6x naive (issue 19)"),
    Target("ru.catch-up.ratio", 0.15, False, "modelled Cosmos RU/msg catch-up <= 0.15x naive (issue 19)"),
    Target("scale.ratio", 0.75, True, "10,000-car stream >= 0.75x steady state (issue 19)"),
    Target("cpu.steady.null.ratioToFloor", 0.08, True, "CPU path steady >= 0.08x the orjson.loads floor (issue 19)"),
    Target("cpu.catch-up.null.ratioToFloor", 0.12, True, "CPU path catch-up >= 0.12x the floor (issue 19)"),
)

# (figure, label, format) rows of the table, in order; absent figures (e.g. --skip-e2e) are left out.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("floor.msgsPerS", "floor: orjson.loads alone, msgs/s", ",.0f"),
    ("cpu.steady.null.msgsPerS", "CPU path steady, null sink, msgs/s", ",.0f"),
    ("cpu.steady.memory.msgsPerS", "CPU path steady, MemoryDocumentStore, msgs/s", ",.0f"),
    ("cpu.catch-up.null.msgsPerS", "CPU path catch-up, null sink, msgs/s", ",.0f"),
    ("cpu.catch-up.memory.msgsPerS", "CPU path catch-up, MemoryDocumentStore, msgs/s", ",.0f"),
    ("cpu.steady.interpreted.msgsPerS", "CPU path steady, null sink, fold interpreted, msgs/s", ",.0f"),
    ("cpu.catch-up.interpreted.msgsPerS", "CPU path catch-up, null sink, fold interpreted, msgs/s", ",.0f"),
    ("cpu.steady.compiledSpeedup", "CPU path steady, compiled / interpreted fold", ".3f"),
    ("cpu.catch-up.compiledSpeedup", "CPU path catch-up, compiled / interpreted fold", ".3f"),
    ("cpu.steady.metered.msgsPerS", "CPU path steady, null sink, cost meter on, msgs/s", ",.0f"),
    ("cpu.steady.metered.ratio", "CPU path steady, cost meter on / off", ".3f"),
    ("cpu.steady.null.ratioToFloor", "CPU path steady / floor", ".3f"),
    ("cpu.catch-up.null.ratioToFloor", "CPU path catch-up / floor", ".3f"),
    ("cpu.geofences.none.msgsPerS", "CPU path steady, no geofences, msgs/s", ",.0f"),
    ("cpu.geofences.1000.msgsPerS", "CPU path steady, 1,000 geofences in the fleet, msgs/s", ",.0f"),
    ("cpu.geofences.ratio", "CPU path with 1,000 geofences / without", ".3f"),
    ("rss.peakRssMb", "peak RSS streaming (MB)", ".1f"),
    ("rss.msgsPerS", "streaming rate incl. generator, msgs/s", ",.0f"),
    ("scale.steady.msgsPerS", "CPU path steady (100 cars), same cache as RSS, msgs/s", ",.0f"),
    ("scale.cars.msgsPerS", "CPU path 10,000 cars, same cache as RSS, msgs/s", ",.0f"),
    ("scale.ratio", "CPU path 10,000 cars / steady", ".3f"),
    ("scale.hotCarsShare", "10,000 cars: share hot at the buffers' fullest", ".3f"),
    ("scale.allHot.msgsPerS", "CPU path 10,000 cars, all hot (cache 1 GB), msgs/s", ",.0f"),
    ("scale.allHot.ratio", "CPU path 10,000 cars all hot / steady", ".3f"),
    ("writes.steady.ours.writesPerMsg", "writes/msg steady, ours", ".4f"),
    ("writes.steady.naive.writesPerMsg", "writes/msg steady, naive", ".4f"),
    ("writes.steady.ours.bytesPerMsg", "bytes/msg steady, ours", ",.0f"),
    ("writes.steady.naive.bytesPerMsg", "bytes/msg steady, naive", ",.0f"),
    ("writes.catch-up.ours.writesPerMsg", "writes/msg catch-up, ours", ".4f"),
    ("writes.catch-up.naive.writesPerMsg", "writes/msg catch-up, naive", ".4f"),
    ("writes.catch-up.ours.bytesPerMsg", "bytes/msg catch-up, ours", ",.0f"),
    ("writes.catch-up.naive.bytesPerMsg", "bytes/msg catch-up, naive", ",.0f"),
    ("ru.steady.ours.perMsg", "modelled Cosmos RU/msg steady, ours", ".2f"),
    ("ru.steady.naive.perMsg", "modelled Cosmos RU/msg steady, naive", ".2f"),
    ("ru.steady.ratio", "modelled Cosmos RU/msg steady, ours/naive", ".3f"),
    ("ru.catch-up.ours.perMsg", "modelled Cosmos RU/msg catch-up, ours", ".2f"),
    ("ru.catch-up.naive.perMsg", "modelled Cosmos RU/msg catch-up, naive", ".2f"),
    ("ru.catch-up.ratio", "modelled Cosmos RU/msg catch-up, ours/naive", ".3f"),
    ("lake.cpuUsPerMsg", "lake feed: export CPU per message, us", ".1f"),
    ("lake.blobWritesPerMsg", "lake feed: blob writes per message", ".5f"),
    ("lake.bytesPerMsg", "lake feed: bytes written per message", ",.0f"),
    ("lake.cosmosRuPerMsg", "lake feed: modelled Cosmos RU read per message", ".2f"),
    ("e2e.steady.ours.msgsPerS", "end to end steady, ours, msgs/s", ",.1f"),
    ("e2e.steady.naive.msgsPerS", "end to end steady, naive, msgs/s", ",.1f"),
    ("e2e.steady.ratio", "end to end steady, ours/naive", ".2f"),
    ("e2e.catch-up.ours.msgsPerS", "end to end catch-up, ours, msgs/s", ",.1f"),
    ("e2e.catch-up.naive.msgsPerS", "end to end catch-up, naive, msgs/s", ",.1f"),
    ("e2e.catch-up.ratio", "end to end catch-up, ours/naive", ".2f"),
    ("coldstart.importS", "cold start: import function_app, median s", ".3f"),
    ("coldstart.processS", "cold start: whole process, median s", ".3f"),
    ("coldstart.telemetryImportS", "cold start, telemetry on: import function_app, s", ".3f"),
    ("coldstart.telemetryReadyS", "cold start, telemetry on: import + distro configured, s", ".3f"),
)


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def load_baseline() -> dict[str, float] | None:
    if not BASELINE.exists():
        return None
    data: dict[str, Any] = json.loads(BASELINE.read_text())
    figures: dict[str, float] = data.get("figures", {})
    return figures


def render(figures: dict[str, float], baseline: dict[str, float] | None) -> str:
    """The table (figure, value, baseline delta) followed by the targets with PASS/FAIL."""
    lines = [f"{'figure':<50} {'value':>14} {'vs baseline':>12}", "-" * 78]
    for key, label, fmt in ROWS:
        if key not in figures:
            continue
        value = figures[key]
        delta = ""
        if baseline and baseline.get(key):
            delta = f"{(value - baseline[key]) / baseline[key] * 100:+.1f}%"
        lines.append(f"{label:<50} {format(value, fmt):>14} {delta:>12}")
    lines += ["", "targets:"]
    for target in TARGETS:
        if target.figure not in figures:
            lines.append(f"  SKIP  {target.label}")
            continue
        verdict = "PASS" if target.passes(figures[target.figure]) else "FAIL"
        lines.append(f"  {verdict}  {target.label}  (measured {figures[target.figure]:,.3g})")
    return "\n".join(lines)


def write(figures: dict[str, float], details: dict[str, Any], path: Path = LATEST) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    verdicts = {t.label: t.passes(figures[t.figure]) for t in TARGETS if t.figure in figures}
    document = {"machine": machine(), "figures": figures, "targets": verdicts, "details": details}
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
