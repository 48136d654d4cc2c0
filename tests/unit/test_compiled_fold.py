"""The compiled fold (shared/native.py) leaves exactly what the interpreted one leaves.

Two processes ingest the same traffic, one with `TELEMETRY_COMPILED=false`: the fuzzed corpus of the fast-path
test (a third damaged: dead letters, rejected values, odd numbers, broken envelopes; 12 cars) and the
benchmark's drive through its 1,000 geofences with every fifth batch delivered in reverse (late samples, the
window re-evaluated), and print a digest of every container's documents (serialised: types and key order
count), the dead letters and the batch reports. mypyc checks declared types at run time and compiles `float`
and `int` natively, so a difference would show here.

Without a build (no C compiler) the test is skipped, except in CI, where `make setup` builds it: the fold the
app ships must be the one tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared import native

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, hashlib, json, sys
import orjson
from shared import native
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from shared.geofences.store import StaticGeofences
from shared.containers import partition_keys
from bench.cpu import geofence_fleet
from bench.generator import batches
from tests.unit.test_contract_fast_path import _corpus, _warm
from tests.factories import drive as fdrive, message
from shared.geofences.index import SpeedLimit, VehicleGeofences
import random


async def ingest(traffic, geofences=None):
    store, letters = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    ingestor = TelemetryIngestor(store, letters, geofences=geofences)
    reports = [(await ingestor.ingest(batch)).as_log() for batch in traffic]
    documents = {name: sorted(store.documents(name), key=lambda d: str(d["id"])) for name in sorted(partition_keys())}
    dead = sorted((d.reason, d.detail, d.message.body.decode("latin-1")) for d in letters.letters.values())
    digest = hashlib.sha256(orjson.dumps([documents, dead, reports])).hexdigest()
    return digest, len(dead), len(documents["geofenceEvents"]), len(documents["alerts"])


async def main():
    _warm()
    corpus = _corpus(3_000, seed=7, cars=12)
    fuzzed = await ingest([corpus[at : at + 100] for at in range(0, len(corpus), 100)])
    source = batches(20, 1)
    drive = [next(source) for _ in range(120)]
    drive = [list(reversed(b)) if i % 5 == 4 else b for i, b in enumerate(drive)]
    fenced = await ingest(drive, StaticGeofences(default=geofence_fleet()))
    # Whole numbers where the catalogue takes floats (a compiled fold converts what it declares float): a car
    # crossing geofences at integer positions, speeding at an integer speed, with a whole-metre odometer.
    rng = random.Random(3)
    plain = []
    for s in range(400):
        car = f"int-{s % 4}"
        signals = dict(lat=52 + rng.randrange(2), lon=11 - rng.randrange(2), speed=rng.choice([0, 50, 140, 150]),
                       soc=80 - s // 10, odo=1000 * s, lv="ON" if s % 40 else "OFF", moving=True)  # fmt: skip
        plain.append(message(car, fdrive(s + 1, s, **signals), enqueued_s=s, sequence_number=s))
    fleet = geofence_fleet()
    limited = VehicleGeofences(fleet.fleet, speed_limit=SpeedLimit(130.0, 2.0))
    integers = await ingest([plain[at : at + 50] for at in range(0, len(plain), 50)], StaticGeofences(default=limited))
    print(json.dumps({"compiled": native.active(), "fuzzed": fuzzed, "fenced": fenced, "integers": integers}))


asyncio.run(main())
"""


def _run(compiled: bool) -> dict[str, Any]:
    env = {**os.environ, native.SETTING: "true" if compiled else "false", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(
    not native.usable() and os.environ.get("CI") != "true", reason="no compiled fold here (`make native` builds it)"
)
def test_the_compiled_fold_leaves_what_the_interpreted_one_leaves() -> None:
    assert native.usable(), "CI ships the compiled fold: `make setup` must have built it (see .native-build.log)"
    interpreted, compiled = _run(compiled=False), _run(compiled=True)
    assert interpreted["compiled"] is False
    assert compiled["compiled"] is True
    assert compiled["fuzzed"] == interpreted["fuzzed"]
    assert compiled["fenced"] == interpreted["fenced"]
    assert compiled["integers"] == interpreted["integers"]
    _, dead, _, _ = interpreted["fuzzed"]
    _, _, events, alerts = interpreted["fenced"]
    _, _, integer_events, integer_alerts = interpreted["integers"]
    assert integer_events > 0
    assert integer_alerts > 0
    # What the comparison covers, or it proves little: the damaged third dead-lettered, crossings and alerts.
    assert dead > 100
    assert events > 10
    assert alerts > 0
