"""Telemetry message contract v1 (docs/messages.md, docs/schemas/telemetry-v1.schema.json): decode and validate.

`decode` never raises: a message is either a `TelemetryMessage` (possibly with rejected signals, which are kept
with their reason) or a `DeadLetter` (not JSON, broken envelope, no device id, too large) that is stored whole.
`decode_any` also knows the car's gap reports (docs/messages.md "Gaps"): IoT Hub routes `type=gap` with
telemetry, and the trigger does not see application properties (shared/device_messages.py), so the body tells
them apart: an object with `gap` and no `samples` is a gap report, decoded by the same rules into a `GapMessage`.

`epoch` (optional, 1-64 characters of [0-9a-f]) names the car's seq counter: a car whose storage was reset starts
a new epoch, and duplicate detection is per (epoch, seq) (vehicle.fold).

Rejected values come from the car, so they are kept *bounded* (docs/data-model.md, "Bounds"): scalars as they
are, strings cut to `MAX_REJECTED_CHARS`, arrays and objects replaced by a summary (type, items, bytes) so no
car-chosen nesting reaches a document; unknown paths cut to `MAX_PATH_CHARS`; and at most
`MAX_REJECTED_PER_MESSAGE` rejected values per message are kept, the rest only counted (`rejectedOmitted`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, cast

import orjson

from shared.device_messages import DeadLetter, DeviceMessage, parse_time, shift_time
from shared.telemetry.catalogue import (
    CLOCK_SKEW,
    MAX_STRING_LENGTH,
    PARTIAL,
    BadItem,
    Catalogue,
    Rejection,
    default_catalogue,
)
from shared.telemetry.documents import HistoryEntry, HistorySample, RejectedValue

STREAM: Final = "telemetry"
CONTRACT_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 256 * 1024
MAX_SEQ: Final = 2**63 - 1
MAX_EPOCH_CHARS: Final = 64
HEX: Final = "0123456789abcdef"
GAP_REASONS: Final = frozenset({"evicted", "store_reset"})
MAX_GAP_DETAIL_CHARS: Final = 200
MAX_PRIORITY: Final = 2**31 - 1

# Dead-letter reason codes (stable: dashboards and alerts match on them).
MISSING_DEVICE_ID: Final = "missing_device_id"
MISSING_ENQUEUED_TIME: Final = "missing_enqueued_time"
TOO_LARGE: Final = "too_large"
INVALID_JSON: Final = "invalid_json"
UNSUPPORTED_VERSION: Final = "unsupported_version"
INVALID_ENVELOPE: Final = "invalid_envelope"

# Bounds of what is kept of rejected values (docs/data-model.md, "Bounds").
MAX_REJECTED_PER_MESSAGE: Final = 32  # rejected values kept per message; the rest only counted
MAX_REJECTED_CHARS: Final = 64  # characters kept of a rejected string
MAX_PATH_CHARS: Final = 128  # characters kept of a rejected signal's path (VSS 6.0's longest: 93)
PATH_CUT: Final = "\u2026"  # appended to a cut path, so it cannot be mistaken for a real one


@dataclass(frozen=True, slots=True)
class Cut:
    """What is kept of a rejected value too large to keep: a prefix of a string, or a summary of a container."""

    value: str | None  # the first MAX_REJECTED_CHARS characters of a string; None for arrays and objects
    kind: str  # "string" | "array" | "object"
    size: int  # characters of a string, items of an array or object
    bytes: int  # serialised size of the original value

    def history(self, reason: str) -> RejectedValue:
        return {
            "value": self.value,
            "reason": reason,
            "truncated": True,
            "type": self.kind,
            "size": self.size,
            "bytes": self.bytes,
        }


def json_size(value: Any) -> int:
    """Serialised size of a decoded JSON value, also for one nested deeper than orjson serialises (254 levels)."""
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        pass
    size = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            size += 2 + max(0, len(item) - 1) + sum(len(orjson.dumps(key)) + 1 for key in item)
            stack.extend(item.values())
        elif type(item) is list:
            size += 2 + max(0, len(item) - 1)
            stack.extend(item)
        else:
            size += len(orjson.dumps(item))
    return size


def bounded(value: Any) -> Any:
    """A rejected value as it may be stored: scalars as they are, long strings and containers as a `Cut`."""
    kind = type(value)
    if kind is str:
        if len(value) <= MAX_REJECTED_CHARS:
            return value
        return Cut(value[:MAX_REJECTED_CHARS], "string", len(value), json_size(value))
    if kind is list:
        return Cut(None, "array", len(value), json_size(value))
    if kind is dict:
        return Cut(None, "object", len(value), json_size(value))
    return value  # number, boolean or null: a few bytes


def bounded_path(path: str) -> str:
    return path if len(path) <= MAX_PATH_CHARS else path[:MAX_PATH_CHARS] + PATH_CUT


@dataclass(slots=True, init=False)
class Sample:
    """One timestamped set of signals; `signals` holds only accepted, normalised values.

    `rejected` holds bounded values (`bounded`): a scalar, or a `Cut` for a long string or a container.
    (`__init__` written out so a compiled fold compiles it: shared/native.py.)
    """

    ts: str
    signals: dict[str, Any]
    rejected: dict[str, tuple[Any, Rejection]]
    skewed: bool  # stamped too far after the enqueued time: every signal rejected for clock skew
    omitted: int  # rejected values beyond the message's budget: counted, not kept

    def __init__(
        self,
        ts: str,
        signals: dict[str, Any],
        rejected: dict[str, tuple[Any, Rejection]] | None = None,
        skewed: bool = False,
        omitted: int = 0,
    ) -> None:
        self.ts, self.signals, self.skewed, self.omitted = ts, signals, skewed, omitted
        self.rejected = {} if rejected is None else rejected

    def to_history(self) -> HistorySample:
        entry: HistorySample = {"ts": self.ts, "signals": self.signals}
        if self.rejected:
            entry["rejected"] = {
                path: v.history(str(r)) if type(v) is Cut else {"value": v, "reason": str(r)}
                for path, (v, r) in self.rejected.items()
            }
        if self.omitted:
            entry["rejectedOmitted"] = self.omitted
        return entry


@dataclass(slots=True, init=False)
class TelemetryMessage:
    """An accepted v1 message from one device. (`__init__` written out so a compiled fold compiles it.)"""

    source: DeviceMessage  # as received: kept for dead-lettering should processing fail later
    device_id: str
    seq: int
    enqueued_time: str
    sequence_number: int | None
    samples: list[Sample]
    size: int
    epoch: str | None  # the car's seq counter (None: a car that sends none)

    def __init__(
        self,
        source: DeviceMessage,
        device_id: str,
        seq: int,
        enqueued_time: str,
        sequence_number: int | None,
        samples: list[Sample],
        size: int,
        epoch: str | None = None,
    ) -> None:
        self.source, self.device_id, self.seq, self.enqueued_time = source, device_id, seq, enqueued_time
        self.sequence_number, self.samples, self.size, self.epoch = sequence_number, samples, size, epoch

    @property
    def newest_ts(self) -> str:
        """The newest timestamp among samples that were not rejected for clock skew ("" if none)."""
        samples = self.samples
        if len(samples) == 1:  # the usual case: no generator
            only = samples[0]
            return "" if only.skewed else only.ts
        return max((s.ts for s in samples if not s.skewed), default="")

    @property
    def rejected_count(self) -> int:
        """Rejected values, kept or only counted."""
        samples = self.samples
        if len(samples) == 1:
            only = samples[0]
            return len(only.rejected) + only.omitted
        return sum(len(s.rejected) + s.omitted for s in samples)

    def to_history(self) -> HistoryEntry:
        samples = self.samples
        entry: HistoryEntry = {
            "seq": self.seq,
            "enqueuedTime": self.enqueued_time,
            "samples": [samples[0].to_history()] if len(samples) == 1 else [s.to_history() for s in samples],
        }
        if self.sequence_number is not None:
            entry["sequenceNumber"] = self.sequence_number
        if self.epoch is not None:
            entry["epoch"] = self.epoch
        return entry


@dataclass(frozen=True, slots=True)
class GapMessage:
    """A gap report: samples the car had and the cloud will never get (evicted over its disk budget, or a store
    that was reset). `gap_id` is unique per epoch, so a redelivered report is the same gap."""

    source: DeviceMessage
    device_id: str
    enqueued_time: str
    epoch: str | None
    gap_id: int
    reason: str
    first_ts: str | None  # `from`: null when the car cannot say (a corrupt store)
    last_ts: str | None  # `to`
    samples: int | None
    priority: int | None
    detail: str | None
    size: int


_SHIFTED: dict[tuple[str, int], str] = {}
_SECONDS: Final = frozenset(f":{n:02d}" for n in range(60))  # ":00" to ":59"
_MILLIS: Final = frozenset(f".{n:03d}Z" for n in range(1000))  # ".000Z" to ".999Z": one set lookup, no regex


_NEVER: Final = "\0" * 25  # longer than the 24 characters both prefix tests take: the prefix of none


class _Recent:
    """The last minute each memo below answered: most of a batch's messages were enqueued, and their samples
    taken, in the same minute, and a prefix test costs less than a memo's key and lookup (a native class when
    compiled: its attributes are plain fields). Each is replaced whole, never half (one attribute)."""

    __slots__ = ("shift", "ts_minute")

    def __init__(self) -> None:
        # enqueued[:16] of the last whole-minute shift, its skew, that minute shifted
        self.shift: tuple[str, int, str] = (_NEVER, -1, "")
        self.ts_minute = _NEVER  # the last canonical minute `_canonical_time` accepted


_RECENT: Final = _Recent()


def _latest_allowed(enqueued: str, max_skew_ms: int) -> str:
    """`shift_time(enqueued, max_skew_ms)`, memoised per minute of enqueued time when the skew is whole minutes
    (the default, MAX_CLOCK_SKEW_SECONDS 300), else per second when it is whole seconds.

    A batch's enqueued times fall within a few seconds (a catch-up's within minutes), and a shift by whole minutes
    leaves ":SS.mmmZ" as it is (by whole seconds ".mmmZ"), so one datetime round trip serves every message enqueued
    in the same minute (second).
    """
    minute, skew, shifted_minute = _RECENT.shift
    if (
        max_skew_ms == skew
        and enqueued.startswith(minute)
        and len(enqueued) == 24
        and enqueued[19:] in _MILLIS
        and enqueued[16:19] in _SECONDS
    ):
        return shifted_minute + enqueued[16:]
    millis = enqueued[19:]
    if max_skew_ms % 1000 or len(enqueued) != 24 or millis not in _MILLIS:
        return shift_time(enqueued, max_skew_ms)
    cut = 16 if max_skew_ms % 60_000 == 0 and enqueued[16:19] in _SECONDS else 19
    key = (enqueued[:cut], max_skew_ms)
    head = _SHIFTED.get(key)
    if head is None:
        shifted = shift_time(enqueued, max_skew_ms)
        if len(shifted) != 24:  # only fixed-width results split cleanly into minute, second and millis
            return shifted
        if len(_SHIFTED) >= 4096:
            _SHIFTED.clear()
        head = _SHIFTED[key] = shifted[:cut]
    if cut == 16:
        _RECENT.shift = (key[0], max_skew_ms, head)
    return head + enqueued[cut:]


_MINUTES: set[str] = set()  # "YYYY-MM-DDTHH:MM" prefixes parse_time accepted in canonical timestamps


def _canonical_time(text: str) -> str | None:
    """`parse_time(text)`, with a canonical timestamp of an already seen minute recognised by three set lookups
    (the last minute seen: a prefix test and two).

    A canonical "YYYY-MM-DDTHH:MM:SS.mmmZ" is what parse_time returns as it is; once its minute's prefix parsed,
    any second 00-59 and millis 000-999 of that minute parses too (fromisoformat refuses only second 60).
    """
    if len(text) == 24 and text[16:19] in _SECONDS and text[19:] in _MILLIS:
        recent = _RECENT
        if text.startswith(recent.ts_minute):
            return text
        minute = text[:16]
        if minute in _MINUTES:
            recent.ts_minute = minute
            return text
    ts = parse_time(text)
    if ts is not None and ts is text and len(text) == 24:  # canonical: remember its minute
        if len(_MINUTES) >= 4096:
            _MINUTES.clear()
        _MINUTES.add(text[:16])
    return ts


def _keep(rejected: dict[str, tuple[Any, Rejection]], path: str, value: Any, reason: Rejection) -> bool:
    """Keep one rejected value, bounded; False if its (cut) path is already taken, so it is only counted."""
    path = bounded_path(path)
    if path in rejected:
        return False
    rejected[path] = (bounded(value), reason)
    return True


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def decode(
    message: DeviceMessage,
    *,
    max_clock_skew_ms: int = 300_000,
    catalogue: Catalogue | None = None,
) -> TelemetryMessage | DeadLetter:
    """Decode one device message against contract v1 telemetry (a gap report is an invalid envelope here). Never
    raises."""
    decoded = decode_any(message, max_clock_skew_ms=max_clock_skew_ms, catalogue=catalogue)
    if type(decoded) is GapMessage:
        return DeadLetter(STREAM, INVALID_ENVELOPE, "a gap report, not telemetry", message)
    return cast(TelemetryMessage | DeadLetter, decoded)


def decode_any(
    message: DeviceMessage,
    *,
    max_clock_skew_ms: int = 300_000,
    catalogue: Catalogue | None = None,
) -> TelemetryMessage | GapMessage | DeadLetter:
    """Decode one message of the telemetry hub: telemetry v1 or a gap report. Never raises.

    The usual message (v1 telemetry, every signal accepted) takes `_decode_fast`; anything else, and anything the
    fast path is not sure of, takes `decode_reference`, so every bad input gets the reference's answer.
    """
    if catalogue is None:  # not `or`: that would call Catalogue.__len__ per message (and replace an empty one)
        catalogue = default_catalogue()
    try:
        fast = _decode_fast(message, max_clock_skew_ms, catalogue)
    except Exception as exc:  # a fast-path bug (or msgspec missing) must cost speed, not the message
        _fast_path_raised(type(exc).__name__)
        fast = None
    if fast is not None:
        return fast
    return decode_reference(message, max_clock_skew_ms=max_clock_skew_ms, catalogue=catalogue)


@cache
def _fast_path_raised(kind: str) -> None:
    """Say once per exception type (never the message: it may hold positions) that the fast path raised."""
    logging.getLogger(__name__).warning(
        "telemetry fast decode raised %s; such messages take the reference decoder (logged once)", kind
    )


def decode_reference(
    message: DeviceMessage,
    *,
    max_clock_skew_ms: int = 300_000,
    catalogue: Catalogue | None = None,
) -> TelemetryMessage | GapMessage | DeadLetter:
    """`decode_any` without its fast path: orjson and the contract's checks by hand, the reference every answer of
    the fast path is tested against (tests/unit/test_contract_fast_path.py). Never raises."""
    try:
        return _decode(message, max_clock_skew_ms, default_catalogue() if catalogue is None else catalogue)
    except _Invalid as bad:
        return DeadLetter(STREAM, bad.reason, bad.detail, message)
    except Exception as unexpected:  # a decoder bug must not lose the batch: dead-letter and carry on
        return DeadLetter(STREAM, "decoder_error", type(unexpected).__name__, message)


def _epoch(data: dict[str, Any]) -> str | None:
    epoch = data.get("epoch")
    if epoch is None:
        return None
    if type(epoch) is not str or not 0 < len(epoch) <= MAX_EPOCH_CHARS or epoch.strip(HEX):
        raise _Invalid(INVALID_ENVELOPE, f"epoch must be 1 to {MAX_EPOCH_CHARS} characters of [0-9a-f]")
    return epoch


def _optional_int(gap: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = gap.get(key)
    if value is None:
        return None
    if type(value) is float and value.is_integer() and low <= value <= high:
        value = int(value)
    if type(value) is not int or not low <= value <= high:
        raise _Invalid(INVALID_ENVELOPE, f"gap.{key} must be null or an integer from {low} to {high}")
    return value


def _optional_time(gap: dict[str, Any], key: str) -> str | None:
    value = gap.get(key)
    if value is None:
        return None
    ts = parse_time(value) if type(value) is str else None
    if ts is None:
        raise _Invalid(INVALID_ENVELOPE, f"gap.{key} must be null or an ISO 8601 time with a zone")
    return ts


def _gap(
    message: DeviceMessage, device_id: str, enqueued_time: str, data: dict[str, Any], epoch: str | None, size: int
) -> GapMessage:
    gap = data["gap"]
    if type(gap) is not dict:
        raise _Invalid(INVALID_ENVELOPE, "gap must be an object")
    gap_id = _optional_int(gap, "id", 0, MAX_SEQ)
    if gap_id is None:
        raise _Invalid(INVALID_ENVELOPE, f"gap.id must be an integer from 0 to {MAX_SEQ}")
    reason = gap.get("reason")
    if type(reason) is not str or reason not in GAP_REASONS:
        raise _Invalid(INVALID_ENVELOPE, f"gap.reason must be one of {sorted(GAP_REASONS)}")
    first, last = _optional_time(gap, "from"), _optional_time(gap, "to")
    if first is not None and last is not None and first > last:
        raise _Invalid(INVALID_ENVELOPE, "gap.from must not be after gap.to")
    samples = _optional_int(gap, "samples", 0, MAX_SEQ)
    priority = _optional_int(gap, "priority", -MAX_PRIORITY - 1, MAX_PRIORITY)
    detail = gap.get("detail")
    if detail is not None and type(detail) is not str:
        raise _Invalid(INVALID_ENVELOPE, "gap.detail must be null or a string")
    if detail is not None and len(detail) > MAX_GAP_DETAIL_CHARS:
        detail = detail[:MAX_GAP_DETAIL_CHARS] + PATH_CUT
    return GapMessage(
        message,
        device_id,
        enqueued_time,
        epoch,
        gap_id,
        reason,
        first,
        last,
        samples,
        priority,
        detail,
        size,
    )


# orjson's integers: outside this range it returns a float where msgspec returns an int.
_INT_LOW: Final = -(2**63)
_INT_HIGH: Final = 2**64 - 1


@cache
def _envelope_decoder() -> Callable[[bytes], Any]:
    """msgspec's decoder of the v1 envelope, made on first use (msgspec is imported here, not at cold start).

    Unknown fields are refused, not skipped: msgspec skips them without checking UTF-8 or number ranges, which
    orjson refuses (`invalid_json`), so a message with any other field takes the reference path.
    """
    import msgspec

    # defstruct: the types as objects (this module's annotations are strings, which a local class cannot resolve)
    sample = msgspec.defstruct("RawSample", [("ts", str), ("signals", dict[str, Any])], forbid_unknown_fields=True)
    samples: Any = list[sample]  # type: ignore[valid-type]
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [("v", int), ("seq", int), ("samples", samples)]
    fields.append(("epoch", str | None, None))
    envelope = msgspec.defstruct("RawMessage", fields, forbid_unknown_fields=True)
    decode = msgspec.json.Decoder(envelope).decode
    _DECODER.append(decode)
    return decode


# `_envelope_decoder()`'s decoder once made: the hot path reads it here, without the cache's call.
_DECODER: Final[list[Callable[[bytes], Any]]] = []


def _decode_fast(message: DeviceMessage, max_skew_ms: int, catalogue: Catalogue) -> TelemetryMessage | None:
    """A well-formed v1 message whose every signal is accepted, decoded and validated by msgspec's typed decoder
    instead of `orjson.loads` and the envelope's checks by hand; None for anything else (not JSON, another shape,
    an unknown or rejected signal, a skewed sample, a signal seen for the first time): `_decode` decides those.

    Equal to `_decode` on what it accepts (tests/unit/test_contract_fast_path.py, the fuzzed corpus): the same
    checks in the same order, and integers orjson would have read as floats are left to the reference.
    """
    body = message.body
    enqueued = message.enqueued_time
    device_id = message.device_id
    if not device_id or enqueued is None or len(body) > MAX_MESSAGE_BYTES:
        return None
    decode = _DECODER[0] if _DECODER else _envelope_decoder()
    try:
        raw = decode(body)
    except Exception:  # not JSON, not this shape, or nested deeper than msgspec goes: the reference says which
        return None
    # Declared types (what the decoder guarantees), so the compiled loops below iterate the list and the dicts
    # natively instead of through generic iterators and a tuple per item.
    seq: int = raw.seq
    epoch: str | None = raw.epoch
    raw_samples: list[Any] = raw.samples
    if raw.v != CONTRACT_VERSION or not 0 <= seq <= MAX_SEQ or not raw_samples:
        return None
    if epoch is not None and (not 0 < len(epoch) <= MAX_EPOCH_CHARS or epoch.strip(HEX)):
        return None
    # The latest sample time allowed, computed only for a sample after `enqueued`: canonical times (24 characters,
    # ".mmmZ") order as their text does, and a skew of zero or more only moves the limit later.
    latest_allowed: str | None = None
    plain_enqueued = max_skew_ms >= 0 and len(enqueued) == 24 and enqueued[19:] in _MILLIS
    checks, ranges, texts, lists = catalogue.tables
    samples: list[Sample] = []
    for raw_sample in raw_samples:
        ts = _canonical_time(raw_sample.ts)
        raw_signals: dict[str, Any] = raw_sample.signals
        if ts is None or not raw_signals:
            return None
        if not plain_enqueued or ts > enqueued:
            if latest_allowed is None:
                latest_allowed = _latest_allowed(enqueued, max_skew_ms)
            if ts > latest_allowed:
                return None
        # Every signal accepted (else the reference decides), so the decoded dict (fresh, and only this one) becomes
        # the sample's: a value the rule normalises is replaced in place (the same keys: no resize while iterating).
        for path, value in raw_signals.items():
            # What the rule returns for the usual values, without the call: a number in its plain range
            # (catalogue.plain_range), a short string it allows (plain_text), an empty list for an array.
            plain = ranges.get(path)
            kind = type(value)
            if plain is not None and kind is plain[0]:
                if kind is float:  # compared as C doubles (plain_range gives float bounds for float rules)
                    number: float = value
                    low: float = plain[1]
                    high: float = plain[2]
                    if low <= number <= high:
                        continue
                elif plain[1] <= value <= plain[2]:
                    continue
            if kind is str:
                allowed = texts.get(path)
                if allowed is not None and len(value) <= MAX_STRING_LENGTH and (not allowed or value in allowed):
                    continue
            elif kind is list and not value and path in lists:
                continue  # a fresh list from the decoder: the rule would return an equal new one
            check = checks.get(path)
            if check is None:
                return None
            norm, reason = check(value)
            if reason is not None:
                return None
            kind = type(norm)
            if (kind is int and not _INT_LOW <= norm <= _INT_HIGH) or (kind is list and norm and _wide(norm)):
                return None
            if norm is not value:
                raw_signals[path] = norm
        samples.append(Sample(ts, raw_signals, {}, False, 0))
    return TelemetryMessage(message, device_id, seq, enqueued, message.sequence_number, samples, len(body), epoch)


def _wide(items: list[Any]) -> bool:
    """Whether an array holds an integer orjson would have read as a float."""
    return any(type(item) is int and not _INT_LOW <= item <= _INT_HIGH for item in items)


def _decode(message: DeviceMessage, max_skew_ms: int, catalogue: Catalogue) -> TelemetryMessage | GapMessage:
    if not message.device_id:
        raise _Invalid(MISSING_DEVICE_ID, "no iothub connection-device-id system property")
    if message.enqueued_time is None:
        raise _Invalid(MISSING_ENQUEUED_TIME, "no enqueued time on the event")
    body = message.body
    if len(body) > MAX_MESSAGE_BYTES:
        raise _Invalid(TOO_LARGE, f"{len(body)} bytes > {MAX_MESSAGE_BYTES}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(INVALID_JSON, str(exc)[:200]) from None

    if type(data) is not dict:
        raise _Invalid(INVALID_ENVELOPE, "body is not a JSON object")
    # JSON (and the published schema) does not tell 1 from 1.0: an integral number counts as an integer.
    version = data.get("v")
    if version != CONTRACT_VERSION or type(version) not in (int, float):
        raise _Invalid(UNSUPPORTED_VERSION, f"v={version!r}, expected {CONTRACT_VERSION}")
    epoch = _epoch(data) if "epoch" in data else None
    if "gap" in data and "samples" not in data:
        return _gap(message, message.device_id, message.enqueued_time, data, epoch, len(body))
    seq = data.get("seq")
    if type(seq) is float and seq.is_integer() and 0 <= seq <= MAX_SEQ:
        seq = int(seq)
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise _Invalid(INVALID_ENVELOPE, "seq must be an integer from 0 to 2^63-1")
    raw_samples = data.get("samples")
    if type(raw_samples) is not list or not raw_samples:
        raise _Invalid(INVALID_ENVELOPE, "samples must be a non-empty array")

    latest_allowed = _latest_allowed(message.enqueued_time, max_skew_ms)
    validate = catalogue.validate
    checks = catalogue.checks  # path -> compiled rule: one call per signal instead of two
    samples: list[Sample] = []
    room = MAX_REJECTED_PER_MESSAGE  # rejected values this message may still keep
    for index, raw in enumerate(raw_samples):
        if type(raw) is not dict:
            raise _Invalid(INVALID_ENVELOPE, f"samples[{index}] is not an object")
        raw_ts = raw.get("ts")
        ts = parse_time(raw_ts) if type(raw_ts) is str else None
        if ts is None:
            raise _Invalid(INVALID_ENVELOPE, f"samples[{index}].ts is not an ISO 8601 time with a zone")
        raw_signals = raw.get("signals")
        if type(raw_signals) is not dict or not raw_signals:
            raise _Invalid(INVALID_ENVELOPE, f"samples[{index}].signals must be a non-empty object")
        rejected: dict[str, tuple[Any, Rejection]] = {}
        omitted = 0
        if ts > latest_allowed:
            for path, value in raw_signals.items():
                if room > 0 and _keep(rejected, path, value, CLOCK_SKEW):
                    room -= 1
                else:
                    omitted += 1
            samples.append(Sample(ts, {}, rejected, True, omitted))
            continue
        accepted: dict[str, Any] = {}
        for path, value in raw_signals.items():
            check = checks.get(path)
            norm, reason = validate(path, value) if check is None else check(value)
            if reason is None:
                accepted[path] = norm
                continue
            bad: list[BadItem]
            if reason is PARTIAL:  # an array checked item by item: the valid items are used, each bad one rejected
                norm, bad = norm
                if norm is not None:
                    accepted[path] = norm
            else:
                bad = [(-1, value, reason)]
            for index, item, why in bad:
                if room > 0 and _keep(rejected, path if index < 0 else f"{path}[{index}]", item, why):
                    room -= 1
                else:
                    omitted += 1
        samples.append(Sample(ts, accepted, rejected, False, omitted))
    return TelemetryMessage(
        message,
        message.device_id,
        seq,
        message.enqueued_time,
        message.sequence_number,
        samples,
        len(body),
        epoch,
    )
