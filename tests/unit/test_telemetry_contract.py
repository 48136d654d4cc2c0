"""Contract v1 decoding: what is accepted, what is kept as rejected, what is dead-lettered whole."""

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

from shared.device_messages import DeadLetter, DeviceMessage
from shared.telemetry import contract
from shared.telemetry.contract import TelemetryMessage, decode
from tests.factories import body, iso, message, sample_event

SCHEMA = json.loads((Path(__file__).parents[2] / "docs/schemas/telemetry-v1.schema.json").read_text())


def test_decode_example_accepts_every_signal() -> None:
    # GIVEN the example message of docs/messages.md, sent by car-001
    raw = orjson.dumps(sample_event("telemetry-v1-example.json"))
    # WHEN it is decoded
    decoded = decode(message("car-001", raw, enqueued_s=1))
    # THEN it is accepted with its eight signals, device id from IoT Hub, nothing rejected
    assert isinstance(decoded, TelemetryMessage)
    assert decoded.device_id == "car-001"
    assert decoded.seq == 1042
    assert len(decoded.samples[0].signals) == 8
    assert decoded.rejected_count == 0
    assert decoded.samples[0].ts == "2026-11-21T08:00:00.000Z"


def test_decode_keeps_rejected_signals_with_their_reason() -> None:
    raw = orjson.dumps(sample_event("telemetry-v1-rejected-signals.json"))
    decoded = decode(message("car-001", raw, enqueued_s=1))
    assert isinstance(decoded, TelemetryMessage)
    sample = decoded.samples[0]
    # issue 10: the DTC list is checked code by code, so the valid "P0300" is used beside the malformed one
    assert sample.signals == {"Vehicle.Speed": 48.0, "Vehicle.Diagnostics.DTCList": ["P0300"]}
    assert {path: reason for path, (_, reason) in sample.rejected.items()} == {
        "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": "out_of_range",
        "Vehicle.LowVoltageSystemState": "not_allowed",
        "Vehicle.IsMoving": "wrong_type",
        "Vehicle.Diagnostics.DTCList[1]": "invalid_dtc",
        "Vehicle.Flux.Capacitor": "unknown_signal",
    }
    history = decoded.to_history()["samples"][0]["rejected"]
    assert history["Vehicle.Flux.Capacitor"] == {"value": 1.21, "reason": "unknown_signal"}


def test_decode_ignores_device_id_in_the_body() -> None:
    raw = orjson.dumps(
        {"v": 1, "seq": 1, "deviceId": "car-999", "samples": [{"ts": iso(0), "signals": {"Vehicle.Speed": 1}}]}
    )
    decoded = decode(message("car-001", raw, enqueued_s=1))
    assert isinstance(decoded, TelemetryMessage)
    assert decoded.device_id == "car-001"


def test_decode_rejects_samples_stamped_after_enqueued_plus_skew() -> None:
    raw = body(1, (0, {"Vehicle.Speed": 10.0}), (301, {"Vehicle.Speed": 99.0}))
    decoded = decode(message("car-001", raw, enqueued_s=0))
    assert isinstance(decoded, TelemetryMessage)
    on_time, skewed = decoded.samples
    assert on_time.signals == {"Vehicle.Speed": 10.0}
    assert skewed.skewed
    assert skewed.signals == {}
    assert skewed.rejected == {"Vehicle.Speed": (99.0, "clock_skew")}
    assert decoded.newest_ts == on_time.ts


def test_decode_accepts_a_sample_exactly_at_the_skew_limit() -> None:
    decoded = decode(message("car-001", body(1, (300, {"Vehicle.Speed": 1.0})), enqueued_s=0))
    assert isinstance(decoded, TelemetryMessage)
    assert not decoded.samples[0].skewed


@pytest.mark.parametrize(
    ("device", "raw", "reason"),
    [
        (None, body(1, (0, {"Vehicle.Speed": 1})), "missing_device_id"),
        ("car-1", b"\xff\xfe not json", "invalid_json"),
        ("car-1", b'{"v": 1, "seq": 1, "samples": [', "invalid_json"),
        ("car-1", b"[1, 2, 3]", "invalid_envelope"),
        ("car-1", b'{"v": 2, "seq": 1, "samples": []}', "unsupported_version"),
        ("car-1", b'{"v": true, "seq": 1, "samples": []}', "unsupported_version"),
        (
            "car-1",
            b'{"v": 1, "seq": -1, "samples": [{"ts": "2026-11-21T08:00:00Z", "signals": {"a": 1}}]}',
            "invalid_envelope",
        ),
        ("car-1", b'{"v": 1, "seq": 1.5, "samples": []}', "invalid_envelope"),
        ("car-1", b'{"v": 1, "seq": 1, "samples": []}', "invalid_envelope"),
        ("car-1", b'{"v": 1, "seq": 1, "samples": [{"ts": "yesterday", "signals": {"a": 1}}]}', "invalid_envelope"),
        (
            "car-1",
            b'{"v": 1, "seq": 1, "samples": [{"ts": "2026-11-21T08:00:00", "signals": {"a": 1}}]}',
            "invalid_envelope",
        ),
        (
            "car-1",
            b'{"v": 1, "seq": 1, "samples": [{"ts": "2026-11-21T08:00:00Z", "signals": {}}]}',
            "invalid_envelope",
        ),
        ("car-1", b'{"v": 1, "seq": 1, "samples": [{"ts": "2026-11-21T08:00:00Z"}]}', "invalid_envelope"),
        ("car-1", b'{"v": 1, "seq": 1, "samples": ["x"]}', "invalid_envelope"),
    ],
)
def test_decode_dead_letters_broken_messages_whole(device: str | None, raw: bytes, reason: str) -> None:
    decoded = decode(message(device, raw))
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason == reason
    assert decoded.message.body == raw


def test_decode_reads_integral_numbers_as_integers_as_json_schema_does() -> None:
    # found by the schema property test: {"v": 1.0, "seq": 0.0} is valid v1 JSON (2020-12: 0.0 is an integer)
    raw = b'{"v": 1.0, "seq": 7.0, "samples": [{"ts": "2026-11-21T08:00:00Z", "signals": {"Vehicle.Speed": 1}}]}'
    decoded = decode(message("car-1", raw, enqueued_s=1))
    assert isinstance(decoded, TelemetryMessage)
    assert decoded.seq == 7
    assert type(decoded.seq) is int


def test_decode_dead_letters_oversized_messages() -> None:
    padding = "x" * contract.MAX_MESSAGE_BYTES
    raw = orjson.dumps({"v": 1, "seq": 1, "pad": padding, "samples": [{"ts": iso(0), "signals": {"Vehicle.Speed": 1}}]})
    decoded = decode(message("car-1", raw))
    assert isinstance(decoded, DeadLetter)
    assert decoded.reason == "too_large"


def test_dead_letter_record_holds_reason_device_time_sequence_and_bounded_body() -> None:
    # Every body IoT Hub can deliver (<= 256 KB) is kept whole, so it can be redriven; a larger one is cut.
    raw = b"\x00" * 300_000
    letter = decode(DeviceMessage(raw, "car/1?", "2026-11-21T08:00:00.000Z", 42))
    assert isinstance(letter, DeadLetter)
    record = orjson.loads(letter.to_json())
    assert record["reason"] == "too_large"
    assert record["deviceId"] == "car/1?"
    assert record["enqueuedTime"] == "2026-11-21T08:00:00.000Z"
    assert record["sequenceNumber"] == 42
    assert record["bodyBytes"] == 300_000
    assert record["bodyTruncated"] is True
    assert len(record["body"]) == 256 * 1024
    assert DeadLetter.from_json(letter.to_json()).truncated is True
    # device first, so one car's records are listed (and erased) by prefix
    assert letter.blob_name.startswith("telemetry/car%2F1%3F/2026/11/21/")


# --- property-based: outside input never breaks the decoder -------------------------------------------------


@given(st.binary(max_size=2048), st.one_of(st.none(), st.text(min_size=1, max_size=20)))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_decode_never_raises_on_arbitrary_bytes(raw: bytes, device: str | None) -> None:
    decoded = decode(message(device, raw))
    assert isinstance(decoded, TelemetryMessage | DeadLetter)
    if isinstance(decoded, DeadLetter):
        assert decoded.reason != "decoder_error", decoded.detail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
signal_names = st.sampled_from(
    ["Vehicle.Speed", "Vehicle.IsMoving", "Vehicle.LowVoltageSystemState", "Vehicle.Diagnostics.DTCList",
     "Vehicle.TraveledDistance", "Vehicle.CurrentLocation.Latitude", "Vehicle.Unknown.Thing"]
)  # fmt: skip
timestamps = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2026, 11, 21, 8)).map(
    lambda d: d.isoformat() + "Z"
)
envelopes = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 2, "1", True]),
        "seq": st.one_of(st.integers(min_value=-5, max_value=2**64), st.floats(), st.text(max_size=3)),
        "samples": st.lists(
            st.fixed_dictionaries(
                {
                    "ts": st.one_of(timestamps, st.text(max_size=5)),
                    "signals": st.dictionaries(signal_names, json_values),
                }
            ),
            max_size=3,
        ),
    },
    optional={"epoch": st.one_of(st.from_regex(r"\A[0-9a-f]{1,64}\Z"), st.text(max_size=70), st.integers())},
)


@given(envelopes)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_schema_valid_messages_are_always_accepted(envelope: dict[str, Any]) -> None:
    # Property: the decoder accepts everything the published JSON Schema accepts (it may accept more, never less),
    # and everything it dead-letters breaks the schema.
    decoded = decode(message("car-1", json.dumps(envelope).encode(), enqueued_s=0))
    try:
        jsonschema.validate(envelope, SCHEMA)
        schema_ok = True
    except jsonschema.ValidationError:
        schema_ok = False
    if schema_ok:
        assert isinstance(decoded, TelemetryMessage), decoded
    if isinstance(decoded, DeadLetter):
        assert not schema_ok


def test_schema_example_is_valid_against_the_schema() -> None:
    for example in SCHEMA["examples"]:
        jsonschema.validate(example, SCHEMA)


@given(st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9998, 12, 30), timezones=st.just(dt.UTC)))
def test_canonical_times_compare_as_strings_in_time_order(value: dt.datetime) -> None:
    # The per-signal merge compares canonical timestamps as strings: that must order them in time.
    from shared.device_messages import parse_time

    text = parse_time(value.isoformat())
    assert text is not None
    assert len(text) == 24
    later = parse_time((value + dt.timedelta(milliseconds=1)).isoformat())
    assert later is not None
    assert text < later
