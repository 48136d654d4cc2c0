"""Telemetry message contract v1 (docs/messages.md, docs/schemas/telemetry-v1.schema.json): decode and validate.

`decode` never raises: a message is either a `TelemetryMessage` (possibly with rejected signals, which are kept
with their reason) or a `DeadLetter` (not JSON, broken envelope, no device id, too large) that is stored whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from shared.device_messages import DeadLetter, DeviceMessage, parse_time, shift_time
from shared.telemetry.catalogue import CLOCK_SKEW, Catalogue, Rejection, default_catalogue

STREAM: Final = "telemetry"
CONTRACT_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 256 * 1024
MAX_SEQ: Final = 2**63 - 1

# Dead-letter reason codes (stable: dashboards and alerts match on them).
MISSING_DEVICE_ID: Final = "missing_device_id"
MISSING_ENQUEUED_TIME: Final = "missing_enqueued_time"
TOO_LARGE: Final = "too_large"
INVALID_JSON: Final = "invalid_json"
UNSUPPORTED_VERSION: Final = "unsupported_version"
INVALID_ENVELOPE: Final = "invalid_envelope"


@dataclass(slots=True)
class Sample:
    """One timestamped set of signals; `signals` holds only accepted, normalised values."""

    ts: str
    signals: dict[str, Any]
    rejected: dict[str, tuple[Any, Rejection]] = field(default_factory=dict)
    skewed: bool = False  # stamped too far after the enqueued time: every signal rejected for clock skew

    def to_history(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"ts": self.ts, "signals": self.signals}
        if self.rejected:
            entry["rejected"] = {path: {"value": v, "reason": str(r)} for path, (v, r) in self.rejected.items()}
        return entry


@dataclass(slots=True)
class TelemetryMessage:
    """An accepted v1 message from one device."""

    source: DeviceMessage  # as received: kept for dead-lettering should processing fail later
    device_id: str
    seq: int
    enqueued_time: str
    sequence_number: int | None
    samples: list[Sample]
    size: int

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
        samples = self.samples
        if len(samples) == 1:
            return len(samples[0].rejected)
        return sum(len(s.rejected) for s in samples)

    def to_history(self) -> dict[str, Any]:
        samples = self.samples
        entry: dict[str, Any] = {
            "seq": self.seq,
            "enqueuedTime": self.enqueued_time,
            "samples": [samples[0].to_history()] if len(samples) == 1 else [s.to_history() for s in samples],
        }
        if self.sequence_number is not None:
            entry["sequenceNumber"] = self.sequence_number
        return entry


_SHIFTED_SECONDS: dict[tuple[str, int], str] = {}
_MILLIS: Final = frozenset(f".{n:03d}Z" for n in range(1000))  # ".000Z" to ".999Z": one set lookup, no regex


def _latest_allowed(enqueued: str, max_skew_ms: int) -> str:
    """`shift_time(enqueued, max_skew_ms)`, memoised per second of enqueued time when the skew is whole seconds.

    A batch's enqueued times fall within a few seconds, and a shift by whole seconds leaves ".mmmZ" as it is,
    so one datetime round trip serves every message enqueued in the same second.
    """
    millis = enqueued[19:]
    if max_skew_ms % 1000 or len(enqueued) != 24 or millis not in _MILLIS:
        return shift_time(enqueued, max_skew_ms)
    key = (enqueued[:19], max_skew_ms)
    head = _SHIFTED_SECONDS.get(key)
    if head is None:
        shifted = shift_time(enqueued, max_skew_ms)
        if len(shifted) != 24:  # only fixed-width results split cleanly into second and millis
            return shifted
        if len(_SHIFTED_SECONDS) >= 4096:
            _SHIFTED_SECONDS.clear()
        head = _SHIFTED_SECONDS[key] = shifted[:19]
    return head + millis


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
    """Decode one device message against contract v1. Never raises."""
    try:
        return _decode(message, max_clock_skew_ms, catalogue or default_catalogue())
    except _Invalid as bad:
        return DeadLetter(STREAM, bad.reason, bad.detail, message)
    except Exception as unexpected:  # a decoder bug must not lose the batch: dead-letter and carry on
        return DeadLetter(STREAM, "decoder_error", type(unexpected).__name__, message)


def _decode(message: DeviceMessage, max_skew_ms: int, catalogue: Catalogue) -> TelemetryMessage:
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
        if ts > latest_allowed:
            samples.append(Sample(ts, {}, {path: (value, CLOCK_SKEW) for path, value in raw_signals.items()}, True))
            continue
        accepted: dict[str, Any] = {}
        rejected: dict[str, tuple[Any, Rejection]] = {}
        for path, value in raw_signals.items():
            check = checks.get(path)
            norm, reason = validate(path, value) if check is None else check(value)
            if reason is None:
                accepted[path] = norm
            else:
                rejected[path] = (value, reason)
        samples.append(Sample(ts, accepted, rejected))
    return TelemetryMessage(
        message,
        message.device_id,
        seq,
        message.enqueued_time,
        message.sequence_number,
        samples,
        len(body),
    )
