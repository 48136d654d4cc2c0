"""Issue 10, "No car can stop the fleet": whatever a car sends within IoT Hub's 256 KB, its documents stay bounded.

Hostile message sequences (deep nesting, huge strings, many unknown signals, long keys, many samples, DTC floods,
ignition flapping, numbers that serialise long, seq restarts, duplicates and redeliveries) are ingested through
`TelemetryIngestor` with the in-memory stores, which refuse what Cosmos DB refuses (shared/stores/limits.py).
The bounds asserted are the ones docs/data-model.md ("Bounds") states.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.containers import partition_keys
from shared.device_messages import DeviceMessage
from shared.stores.limits import MAX_ID_BYTES, nesting_depth
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry import history
from shared.telemetry.alerts import MAX_ALERTS_OPENED_PER_MESSAGE
from shared.telemetry.contract import MAX_MESSAGE_BYTES, TelemetryMessage, decode
from shared.telemetry.ingest import TelemetryIngestor
from shared.telemetry.trips import MAX_TRIPS_OPENED_PER_MESSAGE
from tests.factories import iso, message

MAX_DOCUMENT_BYTES = 1024 * 1024  # the bound docs/data-model.md states for every document (Cosmos: 2 MB)
MAX_DOCUMENT_NESTING = 32  # ours (Cosmos: 128)
SIDE = ("telemetry", "trips", "alerts")
VOLTS = "Vehicle.Powertrain.TractionBattery.CellVoltage.CellVoltages"
BUDGET = MAX_MESSAGE_BYTES - 4096  # what the samples of one message may take

KINDS = ("normal", "deep", "string", "unknown", "long_key", "dtc", "ignition", "exponent", "tiny")


def hostile_signals(kind: str, n: int, t: int) -> dict[str, Any]:
    """One sample's signals of the given kind; `n` scales it (sizes are clipped by the message budget)."""
    if kind == "deep":  # up to 240 levels here; `deep_sample` writes deeper ones as text
        value: Any = 1.0
        for _ in range(n % 240 + 1):
            value = [value] if n % 2 else {"a": value}
        return {"Vehicle.Speed": value, "Vehicle.IsMoving": True}
    if kind == "string":
        return {"Vehicle.VehicleIdentification.VIN": "\u0001" * (n * 97 % 40_000), "Vehicle.Speed": 10.0}
    if kind == "unknown":
        return {f"Vehicle.Unknown.S{t}x{i:05d}": "x" * 16 for i in range(n % 3000 + 1)}
    if kind == "long_key":
        return {"Vehicle." + "K" * (n * 131 % 60_000 + 1): [1, {"b": [2]}]}
    if kind == "dtc":
        codes = [f"P{(t + i) % 4096:04X}" if i % 5 else f"bad-{i}" for i in range(n % 2000 + 1)]
        return {"Vehicle.Diagnostics.DTCList": codes, "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": 5.0}
    if kind == "ignition":
        return {"Vehicle.LowVoltageSystemState": "ON" if (t + n) % 2 == 0 else "OFF", "Vehicle.Speed": float(n % 200)}
    if kind == "exponent":
        return {VOLTS: [1e15] * (n % 256 + 1), "Vehicle.Speed": 1e15}
    if kind == "tiny":
        return {"x": 1}
    return {"Vehicle.Speed": float(n % 250), "Vehicle.TraveledDistance": 1000 + t}


def encode(value: Any) -> bytes:
    # 1e15 as written by a hostile car (orjson would write 1000000000000000.0)
    return orjson.dumps(value).replace(b"1000000000000000.0", b"1e15")


def build_body(seq: int, base_s: int, specs: list[tuple[str, int, int]]) -> bytes:
    samples: list[bytes] = []
    used = 64
    for kind, n, gap in specs:
        t = base_s + gap
        if kind == "deep" and n % 3 == 0:  # deeper than orjson writes (254), as deep as it reads (1,024)
            depth = n % 1000 + 1
            nested = b'{"a":' * depth + b"1" + b"}" * depth if n % 2 else b"[" * depth + b"1" + b"]" * depth
            sample = b'{"ts":"%b","signals":{"Vehicle.Speed":%b}}' % (iso(t).encode(), nested)
        else:
            sample = encode({"ts": iso(t), "signals": hostile_signals(kind, n, t)})
        if used + len(sample) + 1 > BUDGET:
            continue
        samples.append(sample)
        used += len(sample) + 1
    if not samples:
        samples.append(encode({"ts": iso(base_s), "signals": {"Vehicle.Speed": 1.0}}))
    return b'{"v":1,"seq":%d,"samples":[%b]}' % (seq, b",".join(samples))


sample_specs = st.tuples(st.sampled_from(KINDS), st.integers(0, 100_000), st.integers(-600, 300))
message_specs = st.fixed_dictionaries(
    {
        "seq": st.sampled_from(["next", "next", "restart", "same", "old"]),
        "repeat": st.sampled_from(["one", "many", "flap"]),
        "specs": st.lists(sample_specs, min_size=1, max_size=4),
        "car": st.sampled_from(["car-1", "car-1", "car-2"]),
        "redeliver": st.booleans(),
    }
)


def expand(spec: dict[str, Any]) -> list[tuple[str, int, int]]:
    """A few sample kinds, or one kind repeated into many samples (ignition flapping, DTC floods, tiny samples)."""
    specs: list[tuple[str, int, int]] = spec["specs"]
    if spec["repeat"] == "many":
        kind, n, _ = specs[0]
        return [(kind, n + i, i) for i in range(min(2000, 60_000 // (1 + n % 500)))]
    if spec["repeat"] == "flap":
        return [("ignition", i, i * (1 + specs[0][1] % 90)) for i in range(500)]
    return specs


def check_document(container: str, doc: dict[str, Any]) -> None:
    raw = orjson.dumps(doc)
    assert len(raw) <= MAX_DOCUMENT_BYTES, (container, doc["id"][:80], len(raw))
    assert nesting_depth(doc) <= MAX_DOCUMENT_NESTING, (container, doc["id"][:80])
    assert len(doc["id"].encode()) <= MAX_ID_BYTES


async def ingest_all(batches: list[list[DeviceMessage]]) -> None:
    store, letters = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    ingestor = TelemetryIngestor(store, letters)
    for batch in batches:
        before = {c: {d["id"] for d in store.documents(c)} for c in ("trips", "alerts")}
        report = await ingestor.ingest(batch)  # an ItemRejectedError the ingestor did not contain would raise here
        assert report.parked == 0, report.as_log()
        assert report.dead_lettered == 0, report.as_log()
        assert not letters.letters
        for container in ("vehicles", *SIDE):
            for doc in store.documents(container):
                check_document(container, doc)
        for doc in store.documents("vehicles"):
            for entry in doc["ingest"]["outbox"]:
                check_document(entry["container"], entry["document"])
        new_trips = {d["id"] for d in store.documents("trips")} - before["trips"]
        new_alerts = {d["id"] for d in store.documents("alerts")} - before["alerts"]
        assert len(new_trips) <= MAX_TRIPS_OPENED_PER_MESSAGE * len(batch)
        assert len(new_alerts) <= MAX_ALERTS_OPENED_PER_MESSAGE * len(batch)


@given(st.lists(st.lists(message_specs, min_size=1, max_size=4), min_size=1, max_size=4))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
def test_hostile_message_sequences_never_make_a_document_the_store_refuses(batches: list[list[dict[str, Any]]]) -> None:
    seqs = {"car-1": 100, "car-2": 100}
    clock = 10_000
    sent: list[DeviceMessage] = []
    built: list[list[DeviceMessage]] = []
    for batch_specs in batches:
        batch: list[DeviceMessage] = []
        for spec in batch_specs:
            car = spec["car"]
            clock += 700
            if spec["seq"] == "restart":
                seqs[car] = seqs[car] // 3
            elif spec["seq"] == "next":
                seqs[car] += 1
            elif spec["seq"] == "old":
                seqs[car] = max(0, seqs[car] - 2)
            raw = build_body(seqs[car], clock, expand(spec))
            assert len(raw) <= MAX_MESSAGE_BYTES
            msg = message(car, raw, enqueued_s=clock, sequence_number=clock)
            batch.append(msg)
            if spec["redeliver"] and sent:
                batch.append(sent[-1])  # Event Hubs redelivers an earlier message, enqueued time and all
        sent.extend(batch)
        built.append(batch)
    asyncio.run(ingest_all(built))


def test_every_history_entry_stays_within_the_bound_the_fold_relies_on() -> None:
    # `history.entry_bound` decides whether a fold must measure its entries: it must hold for hostile messages.
    for kind in KINDS:
        for n in (0, 7, 255, 1999, 39_999, 59_999):
            raw = build_body(1, 10_000, [(kind, n + i, i) for i in range(1 if kind in ("unknown", "deep") else 300)])
            decoded = decode(message("car-1", raw, enqueued_s=10_000))
            assert isinstance(decoded, TelemetryMessage), (kind, n)
            entry = history.stored_size(history.encode_entry(decoded.to_history()))  # as the buffer stores it
            assert entry <= history.entry_bound([decoded]), (kind, n, len(raw), entry)
