"""Device-to-cloud messages as IoT Hub hands them over, independent of the Functions runtime.

IoT Hub routes a device message to an Event Hub and stamps system properties on it; the Functions host exposes
them as `event.iothub_metadata` with the `iothub-` prefix removed. The device id comes only from there
(`connection-device-id`, set by IoT Hub from the authenticated connection), never from the body, so a car
cannot write another car's data.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

import orjson

from shared.observability import tracing
from shared.trigger_metadata import application_properties

# IoT Hub refuses device messages over 256 KB, so every body that can arrive is kept whole (and can be redriven);
# only a larger body from elsewhere is cut.
DEADLETTER_BODY_LIMIT: Final = 256 * 1024


class EventHubEventLike(Protocol):
    """What we read of `azure.functions.EventHubEvent` (a Protocol so `shared/` does not import the runtime)."""

    def get_body(self) -> bytes: ...

    @property
    def iothub_metadata(self) -> Mapping[str, str] | None: ...

    @property
    def enqueued_time(self) -> dt.datetime | None: ...

    @property
    def sequence_number(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    """One message a device sent, with what IoT Hub and Event Hubs say about it."""

    body: bytes
    device_id: str | None
    enqueued_time: str | None  # canonical UTC, see canonical_time()
    sequence_number: int | None  # Event Hubs sequence number within its partition
    # The car's W3C trace context (shared/observability/tracing.py), attached only while tracing is on.
    trace: Mapping[str, str] | None = field(default=None, compare=False, hash=False)
    module_id: str | None = None  # `connection-module-id`: sent by a module of the car (its IoT Edge module)

    @classmethod
    def from_event(cls, event: EventHubEventLike) -> DeviceMessage:
        meta = event.iothub_metadata or {}
        device_id = meta.get("connection-device-id") or None
        enqueued = _parse_time(meta.get("enqueuedtime")) or _from_datetime(event.enqueued_time)
        module_id = meta.get("connection-module-id") or None
        return cls(event.get_body(), device_id, enqueued, event.sequence_number, module_id=module_id)

    @property
    def key(self) -> str:
        """A deterministic name for this message, stable across redeliveries (for dead-letter blob names)."""
        digest = hashlib.sha256(self.body).hexdigest()[:16]
        number = "x" if self.sequence_number is None else self.sequence_number
        return f"{compact_time(self.enqueued_time or '')}-{number}-{digest}"


def messages_from_events(events: Iterable[EventHubEventLike]) -> list[DeviceMessage]:
    """The batch's messages; with tracing on, each with its car's trace context (shared/observability/tracing.py)."""
    if not tracing.enabled():  # the hot path reads no properties
        return [DeviceMessage.from_event(e) for e in events]
    batch = list(events)
    carriers = [tracing.carrier_of(properties) for properties in application_properties(batch)]
    messages = [DeviceMessage.from_event(e) for e in batch]
    return [m if c is None else replace(m, trace=c) for m, c in zip(messages, carriers, strict=True)]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message contained with the reason: invalid by contract (dead-lettered) or valid but refused
    permanently while processing it (parked). Stored whole (docs/messages.md#dead-letters-and-parked-messages),
    so an operator can list it and redrive it through the same code after a fix (`shared/parking`)."""

    stream: str  # which pipeline contained it, e.g. "telemetry"
    reason: str  # stable code, e.g. invalid_json, store_rejected
    detail: str
    message: DeviceMessage
    truncated: bool = False  # read back from a record whose body was cut: it cannot be redriven

    @property
    def blob_name(self) -> str:
        """Deterministic, so a redelivered batch overwrites the same blob instead of adding a second one; the
        device comes first, so one car's records are listed (and erased) by prefix."""
        m = self.message
        day = (m.enqueued_time or "0000-00-00")[:10].replace("-", "/")
        return f"{device_prefix(self.stream, m.device_id)}{day}/{m.key}.json"

    def to_json(self) -> bytes:
        body = self.message.body
        shown = body[:DEADLETTER_BODY_LIMIT]
        try:
            text: str | None = shown.decode("utf-8")
            b64 = None
        except UnicodeDecodeError:
            text, b64 = None, base64.b64encode(shown).decode("ascii")
        record = {
            "stream": self.stream,
            "reason": self.reason,
            "detail": self.detail,
            "deviceId": self.message.device_id,
            "enqueuedTime": self.message.enqueued_time,
            "sequenceNumber": self.message.sequence_number,
            "bodyBytes": len(body),
            "bodyTruncated": self.truncated or len(body) > DEADLETTER_BODY_LIMIT,
            "body": text,
            "bodyBase64": b64,
        }
        if self.message.module_id:  # read back, a module's request is still answered to the module
            record["moduleId"] = self.message.module_id
        return orjson.dumps(record)

    @classmethod
    def from_json(cls, data: bytes) -> DeadLetter:
        """The record `to_json` wrote; raises ValueError for anything else (a blob someone else put there)."""
        try:
            record = orjson.loads(data)
            body_text, body_b64 = record["body"], record["bodyBase64"]
            body = body_text.encode("utf-8") if body_text is not None else base64.b64decode(body_b64, validate=True)
            message = DeviceMessage(
                body, record["deviceId"], record["enqueuedTime"], record["sequenceNumber"],
                module_id=record.get("moduleId"),
            )  # fmt: skip
            truncated = bool(record["bodyTruncated"])
            return cls(str(record["stream"]), str(record["reason"]), str(record["detail"]), message, truncated)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a dead-letter record: {type(exc).__name__}") from None


def device_prefix(stream: str, device_id: str | None) -> str:
    """Where one device's records of one stream start (`telemetry/car-001/`)."""
    return f"{stream}/{safe_id(device_id) if device_id else '_unknown'}/"


# --- time -----------------------------------------------------------------------------------------------------
# Every timestamp we store is canonical UTC with milliseconds, "2026-11-21T08:00:00.000Z": fixed width, so
# comparing two of them as strings compares them in time, which keeps the per-signal merge cheap.


def canonical_time(value: dt.datetime) -> str:
    value = value.astimezone(dt.UTC)
    # Built by hand rather than with strftime: this runs on the ingestion hot path, and %Y does not zero-pad
    # years below 1000 on glibc, which would break the fixed width that string comparison relies on.
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )


def parse_time(text: str) -> str | None:
    """Canonicalise an ISO 8601 timestamp with a zone; None if it is not one (naive times are ambiguous)."""
    if len(text) > 40:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None or not 1 <= value.year <= 9998:
        return None
    if _is_canonical(text):
        return text  # already canonical (what devices following the contract send): nothing to rebuild
    return canonical_time(value)


def _is_canonical(text: str) -> bool:
    """ "YYYY-MM-DDTHH:MM:SS.mmmZ" in ASCII; fromisoformat has already checked the digits form a valid time."""
    return (
        len(text) == 24
        and text[23] == "Z"
        and text[19] == "."
        and text[10] == "T"
        and text[4] == text[7] == "-"
        and text[13] == text[16] == ":"
        and text.isascii()
    )


def shift_time(canonical: str, milliseconds: int) -> str:
    value = dt.datetime.fromisoformat(canonical) + dt.timedelta(milliseconds=milliseconds)
    return canonical_time(value)


def compact_time(canonical: str) -> str:
    """20261121T080000000Z: for ids and blob names."""
    return canonical.replace("-", "").replace(":", "").replace(".", "")


def _parse_time(text: str | None) -> str | None:
    return parse_time(text) if text else None


def _from_datetime(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # the host hands UTC datetimes without a zone
        value = value.replace(tzinfo=dt.UTC)
    return canonical_time(value)


_UNSAFE: Final = str.maketrans({"%": "%25", "/": "%2F", "\\": "%5C", "?": "%3F", "#": "%23"})


def safe_id(device_id: str) -> str:
    """IoT Hub allows `?` and `%` in device ids, Cosmos ids and blob paths do not take `/ \\ ? #`: escape them."""
    return device_id.translate(_UNSAFE)
