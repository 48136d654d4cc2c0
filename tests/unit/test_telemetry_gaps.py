"""The edge module's contract additions (docs/messages.md "Gaps", telemetry `epoch`): decoding, ingestion of gap
reports through the in-memory store, their idempotency, duplicate detection per epoch, and the API's `gaps`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.containers import GAPS, VEHICLES, partition_keys
from shared.device_messages import DeadLetter, DeviceMessage
from shared.fleet.models import VehicleDetail
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.contract import GapMessage, TelemetryMessage, decode, decode_any
from shared.telemetry.gaps import gap_document_id
from shared.telemetry.ingest import TelemetryIngestor
from shared.telemetry.vehicle import tombstone
from tests.factories import body, drive, iso, message
from tests.fleet_support import Fleet

ROOT = Path(__file__).parents[2]
GAP_SCHEMA = json.loads((ROOT / "docs/schemas/gap-v1.schema.json").read_text())
TELEMETRY_SCHEMA = json.loads((ROOT / "docs/schemas/telemetry-v1.schema.json").read_text())
EPOCH_A = "a" * 32
EPOCH_B = "0123456789abcdef0123456789abcdef"
TYPED_REASONS = {"missing_device_id", "missing_enqueued_time", "too_large", "invalid_json", "unsupported_version",
                 "invalid_envelope"}  # fmt: skip


def gap_raw(gap_id: int, epoch: str | None = EPOCH_A, **fields: Any) -> bytes:
    gap = {"id": gap_id, "reason": "evicted", "from": iso(10), "to": iso(20), "samples": 50, "priority": 0,
           "detail": None} | fields  # fmt: skip
    data: dict[str, Any] = {"v": 1, "gap": gap}
    if epoch is not None:
        data["epoch"] = epoch
    return orjson.dumps(data)


def with_epoch(raw: bytes, epoch: str) -> bytes:
    return orjson.dumps({**orjson.loads(raw), "epoch": epoch})


def new_store() -> MemoryDocumentStore:
    return MemoryDocumentStore(partition_keys())


# --- decoding ------------------------------------------------------------------------------------------------


def test_a_gap_report_decodes_with_every_field() -> None:
    decoded = decode_any(message("car-1", gap_raw(7, detail="evicted over budget"), enqueued_s=30))
    assert isinstance(decoded, GapMessage)
    assert (decoded.device_id, decoded.epoch, decoded.gap_id, decoded.reason) == ("car-1", EPOCH_A, 7, "evicted")
    assert (decoded.first_ts, decoded.last_ts, decoded.samples, decoded.priority) == (iso(10), iso(20), 50, 0)
    assert decoded.detail == "evicted over budget"
    assert decoded.enqueued_time == iso(30)


def test_a_reset_store_reports_what_it_cannot_know_as_null() -> None:
    raw = orjson.dumps({"v": 1, "epoch": EPOCH_B, "gap": {"id": 1, "reason": "store_reset", "from": None,
                                                          "to": None, "samples": None, "priority": None,
                                                          "detail": "x" * 500}})  # fmt: skip
    decoded = decode_any(message("car-1", raw))
    assert isinstance(decoded, GapMessage)
    assert (decoded.first_ts, decoded.last_ts, decoded.samples, decoded.priority) == (None, None, None, None)
    assert decoded.detail is not None
    assert len(decoded.detail) == 201  # 200 characters kept, and the cut says so
    assert decoded.detail.endswith("\u2026")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (gap_raw(-1), "invalid_envelope"),
        (gap_raw(1, reason="lost"), "invalid_envelope"),
        (gap_raw(1, **{"from": iso(30), "to": iso(20)}), "invalid_envelope"),
        (gap_raw(1, **{"from": "yesterday"}), "invalid_envelope"),
        (gap_raw(1, samples=-3), "invalid_envelope"),
        (gap_raw(1, samples="many"), "invalid_envelope"),
        (gap_raw(1, priority=2**31), "invalid_envelope"),
        (gap_raw(1, detail=["no"]), "invalid_envelope"),
        (gap_raw(1, epoch="NOT-HEX"), "invalid_envelope"),
        (orjson.dumps({"v": 1, "gap": "evicted"}), "invalid_envelope"),
        (orjson.dumps({"v": 2, "gap": {"id": 1, "reason": "evicted"}}), "unsupported_version"),
    ],
)
def test_a_bad_gap_report_is_dead_lettered_with_its_reason(raw: bytes, reason: str) -> None:
    decoded = decode_any(message("car-1", raw))
    assert isinstance(decoded, DeadLetter)
    assert (decoded.stream, decoded.reason) == ("telemetry", reason)


@pytest.mark.parametrize("epoch", ["", "A" * 4, "g1", "a" * 65, 42, ["a"], "a\u0660"])
def test_telemetry_with_an_epoch_that_breaks_the_rule_is_dead_lettered(epoch: Any) -> None:
    raw = orjson.dumps({"v": 1, "seq": 1, "epoch": epoch, "samples": [{"ts": iso(0), "signals": {"Vehicle.Speed": 1}}]})
    decoded = decode(message("car-1", raw))
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason == "invalid_envelope"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(orjson.loads(raw), TELEMETRY_SCHEMA)


@pytest.mark.parametrize("epoch", ["0", "a" * 64, EPOCH_B])
def test_telemetry_keeps_a_valid_epoch_and_the_history_names_it(epoch: str) -> None:
    decoded = decode(message("car-1", with_epoch(drive(3, 0, speed=5.0), epoch)))
    assert isinstance(decoded, TelemetryMessage)
    assert decoded.epoch == epoch
    assert decoded.to_history()["epoch"] == epoch
    plain = decode(message("car-1", drive(3, 0, speed=5.0)))
    assert isinstance(plain, TelemetryMessage)
    assert plain.epoch is None
    assert "epoch" not in plain.to_history()


def test_telemetry_decode_refuses_a_gap_report_it_was_not_asked_for() -> None:
    decoded = decode(message("car-1", gap_raw(1)))
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason == "invalid_envelope"


@given(st.binary(max_size=1024), st.one_of(st.none(), st.text(min_size=1, max_size=10)))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_bytes_are_a_gap_telemetry_or_a_typed_dead_letter(raw: bytes, device: str | None) -> None:
    decoded = decode_any(message(device, raw))
    assert isinstance(decoded, GapMessage | TelemetryMessage | DeadLetter)
    if isinstance(decoded, DeadLetter):
        assert decoded.reason in TYPED_REASONS, decoded.detail


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
times = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2030, 1, 1)).map(
    lambda d: d.isoformat() + "Z"
)
gap_fields = st.fixed_dictionaries(
    {
        "id": st.one_of(st.integers(min_value=-3, max_value=2**64), json_scalars),
        "reason": st.one_of(st.sampled_from(["evicted", "store_reset", "lost"]), json_scalars),
    },
    optional={
        "from": st.one_of(st.none(), times, json_scalars),
        "to": st.one_of(st.none(), times, json_scalars),
        "samples": st.one_of(st.none(), st.integers(min_value=-2, max_value=2**64), json_scalars),
        "priority": st.one_of(st.none(), st.integers(min_value=-(2**32), max_value=2**32), json_scalars),
        "detail": st.one_of(st.none(), st.text(max_size=300), json_scalars),
    },
)
gap_envelopes = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 2, "1"]), "gap": st.one_of(gap_fields, json_scalars)},
    optional={"epoch": st.one_of(st.from_regex(r"\A[0-9a-f]{1,64}\Z"), st.text(max_size=70), json_scalars)},
)


@given(gap_envelopes)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_the_decoder_accepts_exactly_the_gaps_the_published_schema_accepts(envelope: dict[str, Any]) -> None:
    # Property: schema-valid reports decode (bar the one rule JSON Schema cannot say: `from` not after `to`), and
    # every dead-lettered one breaks the schema or that rule; nothing crashes the decoder.
    decoded = decode_any(message("car-1", json.dumps(envelope).encode(), enqueued_s=0))  # big ints too
    try:
        jsonschema.validate(envelope, GAP_SCHEMA)
        schema_ok = True
    except jsonschema.ValidationError:
        schema_ok = False
    gap = envelope.get("gap")
    backwards = schema_ok and isinstance(gap, dict) and gap.get("from") and gap.get("to") and gap["from"] > gap["to"]
    if schema_ok and not backwards:
        assert isinstance(decoded, GapMessage), decoded
    if isinstance(decoded, DeadLetter):
        assert decoded.reason in TYPED_REASONS
        assert not schema_ok or backwards


def test_the_gap_schema_examples_are_valid_and_decode() -> None:
    for example in GAP_SCHEMA["examples"]:
        jsonschema.validate(example, GAP_SCHEMA)
        assert isinstance(decode_any(message("car-1", orjson.dumps(example))), GapMessage)


# --- ingestion -----------------------------------------------------------------------------------------------


async def test_a_gap_is_stored_and_counted_in_the_write_the_batch_makes_anyway() -> None:
    store, letters = new_store(), MemoryDeadLetterSink()
    ingestor = TelemetryIngestor(store, letters)
    await ingestor.ingest([message("car-1", with_epoch(drive(1, 0, speed=10.0), EPOCH_A), enqueued_s=1)])
    writes = store.writes[VEHICLES]
    # WHEN a batch carries telemetry and two gap reports of the car
    batch = [
        message("car-1", with_epoch(drive(2, 1, speed=11.0), EPOCH_A), enqueued_s=2),
        message("car-1", gap_raw(1, samples=40), enqueued_s=3),
        message("car-1", gap_raw(2, samples=None, reason="store_reset"), enqueued_s=4),
    ]
    report = await ingestor.ingest(batch)
    # THEN one vehicle write holds the telemetry and the summary, and each gap is a document of its own
    assert (report.accepted, report.gaps, report.dead_lettered) == (1, 2, 0)
    assert store.writes[VEHICLES] == writes + 1
    vehicle = store.documents(VEHICLES)[0]
    assert vehicle["gaps"] == {"count": 2, "samples": 40, "unknown": 1, "lastAt": iso(4)}
    assert vehicle["state"]["signals"]["Vehicle.Speed"]["value"] == 11.0
    gaps = sorted(store.documents(GAPS), key=lambda d: d["gapId"])
    assert [g["id"] for g in gaps] == [gap_document_id("car-1", EPOCH_A, 1), gap_document_id("car-1", EPOCH_A, 2)]
    assert gaps[0]["id"] == f"car-1:{EPOCH_A}:1"
    assert (gaps[0]["reason"], gaps[0]["fromTs"], gaps[0]["toTs"], gaps[0]["samples"]) == ("evicted", iso(10),
                                                                                           iso(20), 40)  # fmt: skip
    assert gaps[0]["ttl"] == 30 * 24 * 3600
    assert gaps[1]["reason"] == "store_reset"


async def test_a_redelivered_gap_is_the_same_gap_counted_once() -> None:
    store, letters = new_store(), MemoryDeadLetterSink()
    batch = [message("car-1", gap_raw(n, samples=10), enqueued_s=n) for n in range(1, 4)]
    first = await TelemetryIngestor(store, letters).ingest(batch)
    assert first.gaps == 3
    before = {c: sorted(store.documents(c), key=lambda d: d["id"]) for c in (VEHICLES, GAPS)}
    # redelivered to a fresh ingestor (cold cache) and to a warm one, whole and in part
    warm = TelemetryIngestor(store, letters)
    for ingestor, again in ((TelemetryIngestor(store, letters), batch), (warm, batch), (warm, batch[1:2])):
        report = await ingestor.ingest(again)
        assert (report.gaps, report.gap_duplicates) == (0, len(again))
    assert {c: sorted(store.documents(c), key=lambda d: d["id"]) for c in (VEHICLES, GAPS)} == before
    assert before[VEHICLES][0]["gaps"]["count"] == 3
    assert before[VEHICLES][0]["gaps"]["samples"] == 30


async def test_the_same_gap_id_in_another_epoch_is_another_gap() -> None:
    store = new_store()
    batch = [message("car-1", gap_raw(1, EPOCH_A), enqueued_s=1), message("car-1", gap_raw(1, EPOCH_B), enqueued_s=2),
             message("car-1", gap_raw(1, None), enqueued_s=3)]  # fmt: skip
    report = await TelemetryIngestor(store, MemoryDeadLetterSink()).ingest(batch)
    assert report.gaps == 3
    assert sorted(d["id"] for d in store.documents(GAPS)) == sorted(
        [f"car-1:{EPOCH_A}:1", f"car-1:{EPOCH_B}:1", "car-1:-:1"]
    )
    assert store.documents(VEHICLES)[0]["gaps"]["count"] == 3


async def test_a_bad_gap_is_dead_lettered_and_the_rest_of_the_batch_commits() -> None:
    store, letters = new_store(), MemoryDeadLetterSink()
    batch = [
        message("car-1", gap_raw(1, reason="vanished"), enqueued_s=1, sequence_number=1),
        message("car-1", gap_raw(2), enqueued_s=2, sequence_number=2),
        message("car-2", drive(1, 2, speed=3.0), enqueued_s=2, sequence_number=3),
    ]
    report = await TelemetryIngestor(store, letters).ingest(batch)
    assert (report.dead_lettered, report.gaps, report.accepted) == (1, 1, 1)
    assert report.dead_letter_reasons == {"invalid_envelope": 1}
    (letter,) = letters.letters.values()
    assert letter.message.body == batch[0].body
    assert "gap.reason" in letter.detail


async def test_gaps_of_an_erased_car_are_dropped() -> None:
    store = new_store()
    await store.create(VEHICLES, dict(tombstone("car-1", iso(0))))
    report = await TelemetryIngestor(store, MemoryDeadLetterSink()).ingest([message("car-1", gap_raw(1))])
    assert (report.gaps, report.erased) == (0, 1)
    assert store.documents(GAPS) == []


# --- duplicate detection per epoch ----------------------------------------------------------------------------


async def ingest_all(store: MemoryDocumentStore, messages: list[DeviceMessage]) -> tuple[int, int]:
    """Each message in a batch of its own, through one warm ingestor: (accepted, duplicates)."""
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink())
    accepted = duplicates = 0
    for msg in messages:
        report = await ingestor.ingest([msg])
        accepted, duplicates = accepted + report.accepted, duplicates + report.duplicates
    return accepted, duplicates


def car_messages(epoch: str | None, seqs: range, t0: float, enqueued0: float) -> list[DeviceMessage]:
    out = []
    for n, seq in enumerate(seqs):
        raw = body(seq, (t0 + n, {"Vehicle.Speed": float(seq % 200)}))
        out.append(message("car-1", raw if epoch is None else with_epoch(raw, epoch), enqueued_s=enqueued0 + n))
    return out


async def test_a_new_epoch_reusing_lower_seqs_with_older_samples_loses_nothing() -> None:
    # GIVEN a car that sent seq 1..10 (samples t=100..109) in epoch A
    old = car_messages(EPOCH_A, range(1, 11), t0=100, enqueued0=200)
    # WHEN its store is reset: epoch B counts from 3 again, and its first messages carry samples older than the
    # newest seen (its backlog), which no restart heuristic can tell from replays
    new = car_messages(EPOCH_B, range(3, 9), t0=50, enqueued0=300)
    store = new_store()
    assert await ingest_all(store, old + new) == (16, 0)
    # THEN every message is in the history under its epoch
    ingest = store.documents(VEHICLES)[0]["ingest"]
    assert ingest["epoch"] == EPOCH_B
    assert ingest["seen"] == [[3, 8]]
    assert ingest["epochs"][-1]["epoch"] == EPOCH_A
    assert ingest["epochs"][-1]["seen"] == [[1, 10]]
    # AND the same messages without an epoch are what the heuristic drops: the case the epoch exists for
    control = new_store()
    assert await ingest_all(control, car_messages(None, range(1, 11), 100, 200) + car_messages(None, range(3, 9), 50, 300)) == (10, 6)  # fmt: skip


async def test_redeliveries_are_recognised_in_their_own_epoch_after_a_reset() -> None:
    old = car_messages(EPOCH_A, range(1, 6), t0=100, enqueued0=200)
    new = car_messages(EPOCH_B, range(1, 6), t0=150, enqueued0=300)
    store = new_store()
    assert await ingest_all(store, old + new) == (10, 0)
    before = store.documents(VEHICLES)[0]["state"]
    # an old epoch's message redelivered after the reset, and the new epoch's again
    assert await ingest_all(store, old[2:4] + new[1:3] + old[:1]) == (0, 5)
    assert store.documents(VEHICLES)[0]["state"] == before


async def test_a_car_that_starts_naming_epochs_keeps_its_unnamed_history_for_replays() -> None:
    legacy = car_messages(None, range(1, 6), t0=100, enqueued0=200)
    named = car_messages(EPOCH_A, range(1_795_000_000_000_000, 1_795_000_000_000_003), t0=110, enqueued0=300)
    store = new_store()
    assert await ingest_all(store, legacy + named) == (8, 0)
    ingest = store.documents(VEHICLES)[0]["ingest"]
    assert ingest["epoch"] == EPOCH_A
    assert "epoch" not in ingest["epochs"][-1]  # the unnamed one, archived
    # the unnamed messages redelivered (enqueued before the switch) are still replays; the named ones too
    assert await ingest_all(store, legacy[1:3] + named[:1]) == (0, 3)


async def test_a_car_that_names_its_first_epoch_just_takes_the_name() -> None:
    store = new_store()
    assert await ingest_all(store, car_messages(EPOCH_A, range(7, 10), t0=0, enqueued0=1)) == (3, 0)
    ingest = store.documents(VEHICLES)[0]["ingest"]
    assert (ingest["epoch"], ingest["seen"], ingest["epochs"]) == (EPOCH_A, [[7, 9]], [])


# --- the API -------------------------------------------------------------------------------------------------


async def test_the_vehicle_answer_shows_the_gap_summary() -> None:
    fleet = Fleet()
    await fleet.add_fleet()
    await fleet.drive("car-001", range(3), speed=40.0)
    quiet = await fleet.call("GET", "/api/vehicles/car-001")
    assert quiet.status == 200
    assert quiet.json["gaps"] == {"count": 0, "samples": 0, "unknown": 0, "lastAt": None}
    # WHEN the car reports two gaps (one redelivered)
    batch = [message("car-001", gap_raw(1, samples=120), enqueued_s=5), message("car-001", gap_raw(1), enqueued_s=6),
             message("car-001", gap_raw(2, samples=None, reason="store_reset"), enqueued_s=7)]  # fmt: skip
    await TelemetryIngestor(fleet.store, fleet.dead_letters).ingest(batch)
    answer = await fleet.call("GET", "/api/vehicles/car-001")
    # THEN the API counts each once, and the answer is the documented model
    assert answer.json["gaps"] == {"count": 2, "samples": 120, "unknown": 1, "lastAt": iso(7)}
    assert VehicleDetail.model_validate(answer.json).gaps.count == 2
    assert "gapsSeen" not in answer.body.decode()
