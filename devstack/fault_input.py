"""The fault suite's input: the same messages for every scenario, so stored results can be compared.

A fault-free run and a run under faults must see identical input, or "the documents are identical" means
nothing. The simulator stamps samples with the wall clock; here every car's messages are computed up front
from the simulator's car model (simulator/drive.py, seeded) with sample times counted from one base time
chosen once per suite run. Only the device ids differ between scenarios (a prefix per scenario).

The poison car sends, between ordinary messages, what a broken or hostile car might: a `Vehicle.Speed` that
is an array nested 200 levels deep (a valid envelope, so it reaches the vehicle document, which Cosmos DB then
refuses: more than 128 levels), and messages of ~250 KB full of signals no catalogue knows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

import orjson

from simulator.drive import CarModel
from simulator.messages import iso

HOSTILE_DEPTH: Final = 200
BULKY_MESSAGE_BYTES: Final = 250 * 1024  # below IoT Hub's 256 KB per message


@dataclass(frozen=True)
class CarScript:
    """What one car sends, in order: bodies, and the seq of each valid one (None: hostile, not counted)."""

    index: int
    bodies: tuple[bytes, ...]
    seqs: tuple[int | None, ...]

    @property
    def valid_seqs(self) -> list[int]:
        return [s for s in self.seqs if s is not None]


def _telemetry(seq: int, samples: list[tuple[dt.datetime, dict[str, Any]]]) -> bytes:
    return orjson.dumps({"v": 1, "seq": seq, "samples": [{"ts": iso(ts), "signals": sig} for ts, sig in samples]})


def good_car(
    index: int,
    messages: int,
    base: dt.datetime,
    seed: int = 7,
    samples_per_message: int = 2,
    sample_seconds: float = 1.0,
) -> CarScript:
    """`messages` contract-v1 messages of a plausible drive (trips open and close within the run)."""
    model = CarModel.create(index, seed)
    bodies: list[bytes] = []
    at = base
    for seq in range(1, messages + 1):
        samples = []
        for _ in range(samples_per_message):
            samples.append((at, model.step(sample_seconds, trip_seconds=12.0, parked_seconds=4.0)))
            at += dt.timedelta(seconds=sample_seconds)
        bodies.append(_telemetry(seq, samples))
    return CarScript(index, tuple(bodies), tuple(range(1, messages + 1)))


def hostile_nesting(depth: int = HOSTILE_DEPTH) -> bytes:
    """Built as text: too deep for a serialiser's recursion limit, yet small."""
    return b"[" * depth + b"1" + b"]" * depth


def poison_car(index: int, messages: int, base: dt.datetime, seed: int = 7) -> CarScript:
    """Ordinary messages with hostile ones in between (their seqs are taken, as a real car's would be)."""
    normal = good_car(index, messages, base, seed)
    bodies: list[bytes] = []
    seqs: list[int | None] = []
    seq = 0
    for n, body in enumerate(normal.bodies):
        seq += 1
        message = orjson.loads(body)
        message["seq"] = seq
        bodies.append(orjson.dumps(message))
        seqs.append(seq)
        if n == 1:  # early, so good cars sharing its partition are still sending afterwards
            seq += 1
            ts = message["samples"][-1]["ts"]
            deep = b'{"v":1,"seq":%d,"samples":[{"ts":"%s","signals":{"Vehicle.Speed":%s}}]}' % (
                seq,
                ts.encode(),
                hostile_nesting(),
            )
            bodies.append(deep)
            seqs.append(None)
        if n in (2, 3, 4):
            seq += 1
            bodies.append(bulky(seq, message["samples"][-1]["ts"]))
            seqs.append(None)
    return CarScript(index, tuple(bodies), tuple(seqs))


def bulky(seq: int, ts: str, size: int = BULKY_MESSAGE_BYTES) -> bytes:
    """A valid envelope carrying ~`size` bytes of signals no catalogue knows."""
    signals: dict[str, Any] = {}
    n = 0
    filler = "x" * 200
    while len(signals) * 240 < size - 1024:
        signals[f"Vehicle.Private.Unknown{n:05d}"] = filler
        n += 1
    return orjson.dumps({"v": 1, "seq": seq, "samples": [{"ts": ts, "signals": signals}]})
