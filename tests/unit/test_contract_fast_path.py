"""The fast decode path (msgspec, `catalogue.plain_range`) gives exactly what the reference path gives (issue 19).

`decode_any` tries `contract._decode_fast` first and falls back to the reference (`decode_reference`, the code as
it was) for anything it is not sure of. Both are run on a fuzzed corpus (valid messages, broken envelopes, bad
and skewed timestamps, rejected and unknown signals, numbers written every way JSON allows, integers beyond 64
bits, bytes that are not UTF-8, unknown fields, flipped bytes): accepted messages must be equal down to their
serialised history (1 and 1.0 are equal in Python, not in a document), dead letters must have the same reason and
detail.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.containers import partition_keys
from shared.device_messages import DeadLetter, DeviceMessage, parse_time, shift_time
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry import contract, ingest
from shared.telemetry.catalogue import SignalRule, compile_check, default_catalogue, plain_range, plain_text
from shared.telemetry.contract import GapMessage, TelemetryMessage
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import iso

CATALOGUE = default_catalogue()
# One path of each kind of rule (datatype, array, bounds, allowed values), the DTC list, and an unknown path.
_KINDS: dict[tuple[object, ...], str] = {}
for _path, _rule in sorted(CATALOGUE.rules.items()):
    _KINDS.setdefault((_rule.base, _rule.is_array, _rule.low is None, _rule.high is None, _rule.allowed is None), _path)
PATHS = sorted({*_KINDS.values(), "Vehicle.Diagnostics.DTCList", "Vehicle.Speed", "Vehicle.LowVoltageSystemState"})
PATHS.append("Vehicle.Unknown.Thing")
ALLOWED = sorted({value for rule in CATALOGUE.rules.values() if rule.allowed for value in rule.allowed})[:20]
BIG_INTS = [2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -(10**30)]
# Number texts parsers disagree on if any do: overflow, underflow, exponents, integers beyond 64 bits, -0.
RAW_NUMBERS = ["1e400", "-1e400", "1.0", "1E2", "-0", "-0.0", "5e-324", "1e-400", "0.1e1", "2.5E+3", "100.0",
               "1.7976931348623157e308", "1.7976931348623159e308", "18446744073709551615", "18446744073709551616",
               "-9223372036854775809", "123456789012345678901234567890", "3.4028234663852886e38", "3.5e38"]  # fmt: skip
# Texts that are not JSON orjson accepts, for fields msgspec would skip.
GARBAGE = [b'"\\ud800"', b'"\xff"', b"NaN", b"1e400", b'"a\x01"', b"[1,]"]


def _raw(text: str) -> str:
    return f"\x00raw:{text}\x00"


def _dumps(value: Any) -> bytes:
    """JSON as a device may write it; the standard library's, which also writes integers beyond 64 bits."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _unraw(body: bytes) -> bytes:
    """Replace the `_raw` markers (serialised as JSON strings) by their text: numbers written as given."""
    for text in [*RAW_NUMBERS, *(g.decode("latin-1") for g in GARBAGE)]:
        body = body.replace(_dumps(_raw(text)), text.encode("latin-1"))
    return body


scalars = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-300, max_value=300),
    st.integers(min_value=-(2**16), max_value=2**33),
    st.sampled_from(BIG_INTS),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.text(min_size=250, max_size=300),
    st.sampled_from([*ALLOWED, "P0300", "p0300", "P0300\n"]),
    st.sampled_from(RAW_NUMBERS).map(_raw),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.lists(st.sampled_from(["P0300", "U0100", "B1234"]), max_size=3),
    st.dictionaries(st.text(max_size=4), scalars, max_size=2),
)
# Enqueued at T0 + 0 s (tests.factories.message): samples before it, at the skew limit, after it, in other forms.
timestamps = st.one_of(
    st.integers(min_value=-10**6, max_value=400).map(lambda ms: iso(ms / 1000)),
    st.sampled_from([iso(300), iso(300.001), iso(-1).replace("Z", "+00:00"), "2026-11-21T09:00:00+02:00",
                     "2026-11-21T08:00:00Z", "2026-11-21 08:00:00Z", "2026-11-21T08:00:00", "x", ""]),
    st.integers(),
)  # fmt: skip
samples = st.fixed_dictionaries(
    {"ts": timestamps, "signals": st.dictionaries(st.sampled_from(PATHS), values, max_size=6)},
    optional={"extra": st.just(1)},
)
envelopes = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 1, 1.0, 2, True, "1", None, _raw("1.0"), _raw("1E0")]),
        "seq": st.one_of(
            st.integers(min_value=0, max_value=10**6),
            st.sampled_from([-1, 2**63 - 1, 2**63, 2**64, 5.0, 5.5, "5", None, _raw("1e400"), _raw("7.0")]),
        ),
        "samples": st.one_of(st.lists(samples, min_size=1, max_size=3), st.sampled_from([[], None, {}, [1]])),
    },
    optional={
        "epoch": st.one_of(st.from_regex(r"\A[0-9a-f]{1,64}\Z"), st.sampled_from(["", "A1", "x" * 65, 7, None])),
        "gap": st.just({"id": 1, "reason": "evicted"}),
        "other": st.one_of(values, st.sampled_from(GARBAGE).map(lambda g: _raw(g.decode("latin-1")))),
    },
)


def _body(envelope: Any, mutation: tuple[int, int] | None) -> bytes:
    body = _unraw(_dumps(envelope))
    if mutation is not None:  # one byte replaced: a corrupt message
        at, byte = mutation
        at %= len(body)
        body = body[:at] + bytes([byte]) + body[at + 1 :]
    return body


def reference(message: DeviceMessage) -> TelemetryMessage | GapMessage | DeadLetter:
    return contract.decode_reference(message, max_clock_skew_ms=300_000, catalogue=CATALOGUE)


def assert_same(got: object, want: object) -> None:
    if isinstance(want, DeadLetter):
        assert isinstance(got, DeadLetter), (got, want)
        assert (got.stream, got.reason, got.detail, got.message) == (
            want.stream,
            want.reason,
            want.detail,
            want.message,
        )
        return
    assert got == want
    if isinstance(want, TelemetryMessage):
        assert isinstance(got, TelemetryMessage)
        # Serialised: 1 == 1.0 and dict order do not count in ==, they do in a stored document.
        assert orjson.dumps(got.to_history()) == orjson.dumps(want.to_history())
        assert [type(v) for s in got.samples for v in s.signals.values()] == [
            type(v) for s in want.samples for v in s.signals.values()
        ]


def _warm() -> None:
    """Compile every path's rule, as the first message of each path does in production (the fast path uses only
    compiled rules)."""
    for path in PATHS:
        CATALOGUE.validate(path, None)


@given(envelopes, st.one_of(st.none(), st.tuples(st.integers(min_value=0), st.integers(0, 255))))
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_fast_path_decodes_fuzzed_messages_as_the_reference_does(
    envelope: Any, mutation: tuple[int, int] | None
) -> None:
    _warm()
    message = DeviceMessage(_body(envelope, mutation), "car-1", iso(0), 7)
    assert_same(contract.decode_any(message, catalogue=CATALOGUE), reference(message))


def _corpus(count: int, seed: int, cars: int = 1) -> list[DeviceMessage]:
    """A seeded corpus like the benchmark's traffic (bench/generator.py) with a third of it damaged one way."""
    rng = random.Random(seed)
    messages = []
    for n in range(count):
        signals: dict[str, Any] = {
            "Vehicle.Speed": round(rng.uniform(0, 180), 1),
            "Vehicle.CurrentLocation.Latitude": round(rng.uniform(-90, 90), 6),
            "Vehicle.CurrentLocation.Longitude": round(rng.uniform(-180, 180), 6),
            "Vehicle.IsMoving": rng.random() < 0.5,
            "Vehicle.TraveledDistance": rng.randrange(0, 2**32),
            "Vehicle.LowVoltageSystemState": rng.choice(["ON", "OFF", "LOCK", "START", "ACC"]),
            "Vehicle.Diagnostics.DTCList": rng.choice([[], [], ["P0300"]]),
        }
        envelope: dict[str, Any] = {"v": 1, "seq": n, "samples": [{"ts": iso(-rng.random() * 5), "signals": signals}]}
        damage = rng.randrange(30)
        path = rng.choice(PATHS)
        if damage == 0:
            signals[path] = rng.choice(BIG_INTS)
        elif damage == 1:
            signals[path] = _raw(rng.choice(RAW_NUMBERS))
        elif damage == 2:
            signals[path] = rng.choice([True, "x", [1, 2], {"a": 1}, None, -1, 1e300, "Z" * 300])
        elif damage == 3:
            envelope["samples"][0]["ts"] = rng.choice([iso(301), "2026-11-21T08:00:00+01:00", "later"])
        elif damage == 4:
            envelope[rng.choice(["v", "seq", "epoch", "other"])] = rng.choice([2, -1, 1.5, "1", None, 2**64])
        elif damage == 5:
            envelope["samples"].append({"ts": iso(-1), "signals": {path: rng.uniform(-1e6, 1e6)}})
        elif damage == 6:
            envelope["epoch"] = rng.choice(["00ff", "x", ""])
        elif damage == 10:  # an unknown field orjson refuses to parse
            envelope["other"] = _raw(rng.choice(GARBAGE).decode("latin-1"))
        elif damage == 11:
            envelope["samples"][0]["other"] = _raw(rng.choice(GARBAGE).decode("latin-1"))
        body = _unraw(_dumps(envelope))
        if damage == 7:
            at = rng.randrange(len(body))
            body = body[:at] + bytes([rng.randrange(256)]) + body[at + 1 :]
        elif damage == 8:
            body = body[: rng.randrange(len(body))]
        messages.append(DeviceMessage(body, f"car-{n % cars + 1}" if damage != 9 else "", iso(n / 1000), n))
    return messages


def test_fast_path_decodes_a_seeded_corpus_as_the_reference_does() -> None:
    _warm()
    corpus = _corpus(20_000, seed=19)
    fast = 0
    for message in corpus:
        assert_same(contract.decode_any(message, catalogue=CATALOGUE), reference(message))
        fast += contract._decode_fast(message, 300_000, CATALOGUE) is not None
    # Most of the corpus is valid and takes the fast path; a third is damaged and takes the reference.
    assert 0.5 * len(corpus) < fast < 0.9 * len(corpus)


async def _ingest(corpus: list[DeviceMessage]) -> tuple[bytes, list[tuple[str, str, bytes]], list[Any]]:
    store, letters = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    ingestor = TelemetryIngestor(store, letters)
    reports = [(await ingestor.ingest(corpus[at : at + 100])).as_log() for at in range(0, len(corpus), 100)]
    documents = {name: sorted(store.documents(name), key=lambda d: str(d["id"])) for name in sorted(partition_keys())}
    dead = sorted((d.reason, d.detail, d.message.body) for d in letters.letters.values())
    return orjson.dumps(documents), dead, reports


@pytest.mark.interpreted  # monkeypatches / subclasses what the compiled fold reads natively
async def test_ingestion_with_the_fast_path_leaves_what_the_reference_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    # The whole pipeline on the damaged corpus, 12 cars, batches of 100: every container's documents (serialised,
    # so types and key order count), the dead letters and the batch reports are the same with either decoder.
    _warm()
    corpus = _corpus(3_000, seed=7, cars=12)
    fast = await _ingest(corpus)
    monkeypatch.setattr(ingest, "decode_any", contract.decode_reference)
    assert await _ingest(corpus) == fast
    assert fast[1]  # the damaged third was dead-lettered (or the comparison proves little)


def _edge_values(rule: SignalRule) -> list[Any]:
    found: list[Any] = [True, False, 0, 1, -1, 0.0, -0.0, 0.5, 1.5, 1e300, -1e300, 3.4e38, 3.5e38, math.inf, math.nan]
    found += BIG_INTS + [float(v) for v in BIG_INTS]
    for bound in (rule.low, rule.high):
        if bound is not None:
            found += [bound, bound - 1, bound + 1, float(bound), math.nextafter(float(bound), math.inf),
                      math.nextafter(float(bound), -math.inf), int(bound)]  # fmt: skip
    return found


def test_plain_range_accepts_only_what_the_rule_accepts_unchanged() -> None:
    checked = 0
    for rule in CATALOGUE.rules.values():
        plain = plain_range(rule)
        if plain is None:
            continue
        check = compile_check(rule)
        kind, low, high = plain
        for value in _edge_values(rule):
            if type(value) is kind and low <= value <= high:
                norm, reason = check(value)
                assert reason is None, (rule.path, value)
                assert norm is value, (rule.path, value)
                checked += 1
            elif type(value) is kind and value == value:  # NaN fails every comparison
                assert check(value)[1] is not None, (rule.path, value)
    assert checked > 5_000


def test_a_float_rules_plain_range_is_float_bounds_or_none() -> None:
    # The compiled fast path compares a float with a float rule's bounds as C doubles: they must be float objects.
    floats = [plain for rule in CATALOGUE.rules.values() if (plain := plain_range(rule)) and plain[0] is float]
    assert floats
    assert all(type(low) is float and type(high) is float for _, low, high in floats)
    assert plain_range(SignalRule("Vehicle.X", "double", False, 0, 100, None, None)) == (float, 0.0, 100.0)
    # An integer bound no float holds exactly: not plain (the rule decides), never a rounded range.
    assert plain_range(SignalRule("Vehicle.X", "double", False, 2**53 + 1, None, None, None)) is None


@given(st.sampled_from(sorted(CATALOGUE.rules)), st.one_of(st.floats(), st.integers(), st.booleans()))
@settings(max_examples=500)
def test_plain_range_agrees_with_the_rule_on_any_number(path: str, value: float | int | bool) -> None:
    rule = CATALOGUE.rules[path]
    plain = plain_range(rule)
    if plain is None or type(value) is not plain[0]:
        return
    norm, reason = compile_check(rule)(value)
    if plain[1] <= value <= plain[2]:
        assert reason is None
        assert norm is value
    else:
        assert reason is not None


@given(
    st.sampled_from(sorted(CATALOGUE.rules)),
    st.one_of(
        st.text(max_size=300),
        st.sampled_from(["", "x" * 256, "x" * 257, "ON", "OFF", "on", "P0301", "\u0661"]),
        st.sampled_from(sorted({v for r in CATALOGUE.rules.values() for v in r.allowed or ()})),
        st.just([]),
    ),
)
@settings(max_examples=1000)
def test_plain_text_and_empty_lists_agree_with_the_rule(path: str, value: str | list[Any]) -> None:
    rule = CATALOGUE.rules[path]
    norm, reason = compile_check(rule)(value)
    text = plain_text(rule)
    if type(value) is str and text is not None:
        if len(value) <= 256 and (not text or value in text):
            assert (norm, reason) == (value, None)
        else:
            assert reason is not None
    if value == [] and rule.is_array:
        assert (norm, reason) == ([], None)


def test_a_string_rule_allowing_nothing_is_left_to_the_rule() -> None:
    # from_json never builds one (an empty list is None there), but a rule allowing nothing accepts nothing.
    rule = SignalRule("Vehicle.X", "string", False, None, None, frozenset(), None)
    assert plain_text(rule) is None
    assert compile_check(rule)("x")[1] is not None
    assert plain_text(SignalRule("Vehicle.X", "string", False, None, None, None, None)) == frozenset()


def test_fast_path_takes_the_usual_message_and_leaves_the_rest() -> None:
    _warm()
    signals = {"Vehicle.Speed": 50.5, "Vehicle.IsMoving": True, "Vehicle.Diagnostics.DTCList": []}
    good = DeviceMessage(orjson.dumps({"v": 1, "seq": 3, "samples": [{"ts": iso(-1), "signals": signals}]}), "car-1",
                         iso(0), 1)  # fmt: skip
    decoded = contract._decode_fast(good, 300_000, CATALOGUE)
    assert isinstance(decoded, TelemetryMessage), contract.decode_any(good, catalogue=CATALOGUE)
    assert decoded.samples[0].signals == signals
    for changed in ({"Vehicle.Speed": 2**64}, {"Vehicle.Speed": "fast"}, {"Vehicle.Unknown.Thing": 1}):
        bad = DeviceMessage(good.body.replace(b'"Vehicle.Speed":50.5', _dumps(changed)[1:-1]), "car-1", iso(0), 1)
        assert contract._decode_fast(bad, 300_000, CATALOGUE) is None
        assert_same(contract.decode_any(bad, catalogue=CATALOGUE), reference(bad))
    # An integer beyond 64 bits is a float to orjson: the reference stores 1.8446744073709552e+19.
    wide = DeviceMessage(good.body.replace(b"50.5", b"18446744073709551616"), "car-1", iso(0), 1)
    widened = contract.decode_any(wide, catalogue=CATALOGUE)
    assert isinstance(widened, TelemetryMessage)
    assert type(widened.samples[0].signals["Vehicle.Speed"]) is float
    assert contract._decode_fast(wide, 300_000, CATALOGUE) is None


@given(
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9998, 12, 30), timezones=st.just(dt.UTC)),
    st.sampled_from(["", ":60", ":5", "60.000Z", ".1234Z", "+00:00", " ", "\u0661", "Z"]),
    st.integers(min_value=0, max_value=30),
)
@settings(max_examples=500)
def test_canonical_time_is_parse_time(value: dt.datetime, damage: str, at: int) -> None:
    text = iso(0, value)
    assert contract._canonical_time(text) == parse_time(text)
    assert contract._canonical_time(text) == parse_time(text)  # its minute now known
    broken = text[:at] + damage + text[at + len(damage) :]
    assert contract._canonical_time(broken) == parse_time(broken)


def test_the_remembered_minutes_start_as_none() -> None:
    # Before any minute is remembered (and after), a text shaped like a canonical time is parsed, not taken.
    for text in ("\0" * 16 + ":00.000Z", "2026-13-01T00:00:00.000Z", "2026-12-06T24:00:00.000Z"):
        assert contract._canonical_time(text) is None
    assert contract._Recent().ts_minute not in {"", "\0"}
    assert contract._Recent().shift[0] not in {"", "\0"}


@given(
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9998, 12, 30), timezones=st.just(dt.UTC)),
    st.sampled_from([300_000, 60_000, 3_600_000, 86_400_000, 90_000, 1_000, 0, 1_500, 59_999]),
    st.integers(min_value=-120_000, max_value=120_000),
)
@settings(max_examples=500)
def test_the_latest_allowed_time_is_the_enqueued_time_shifted(value: dt.datetime, skew_ms: int, later_ms: int) -> None:
    # Memoised per minute (whole-minute skews) or second (whole seconds): the first call fills the memo, the
    # second reads it, the third is another time of the same minute or the next ones (across days and years).
    enqueued = iso(0, value)
    assert contract._latest_allowed(enqueued, skew_ms) == shift_time(enqueued, skew_ms)
    assert contract._latest_allowed(enqueued, skew_ms) == shift_time(enqueued, skew_ms)
    other = shift_time(enqueued, later_ms)
    assert contract._latest_allowed(other, skew_ms) == shift_time(other, skew_ms)


@pytest.mark.interpreted  # monkeypatches / subclasses what the compiled fold reads natively
def test_a_fast_path_that_raises_costs_speed_not_the_message_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.factories import drive, message

    def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(contract, "_decode_fast", broken)
    contract._fast_path_raised.cache_clear()
    sent = [message("car-1", drive(s + 1, s, speed=50.0), enqueued_s=s) for s in range(3)]
    with caplog.at_level("WARNING", logger=contract.__name__):
        decoded = [contract.decode_any(m) for m in sent]
    assert decoded == [contract.decode_reference(m) for m in sent]
    assert all(isinstance(d, TelemetryMessage) for d in decoded)
    warnings = [r for r in caplog.records if "fast decode raised RuntimeError" in r.getMessage()]
    assert len(warnings) == 1
    assert "car-1" not in caplog.text
