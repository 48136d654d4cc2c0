"""The messages a car sends: telemetry contract v1, car requests v1, and deliberately broken ones.

Telemetry v1: `{"v":1,"seq":N,"samples":[{"ts":iso,"signals":{VSS path: value}}]}` with application property
`type=telemetry`, content type application/json, utf-8 (docs/messages.md). Requests v1:
`{"v":1,"requestId":uuid,"action":"meeting.join","eventId":...}` with `type=request` (driver sign-in:
`auth.signin`, `auth.status`, `auth.signout`, `profile.select`, built by `request`; calendar-aware driving:
`navigate.to_meeting`, `meeting.late`); the outcome of a queued
command is the request `{"v":1,"requestId":uuid,"action":"command.result","commandId":...,"status":...,
"reason":...,"at":iso}` (docs/messages.md, Commands).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson
from azure.iot.device import Message

TELEMETRY: Final = "telemetry"
REQUEST: Final = "request"
COMMAND: Final = "command"  # the `type` of a queued command (cloud to device)
COMMAND_RESULT: Final = "command.result"
GARBAGE: Final = b"\x00not json{"  # what a car with the `garbage` fault sends instead of a command.result

# Broken telemetry the backend must dead-letter (reason codes of shared/telemetry/contract.py).
BAD_BODIES: Final[tuple[tuple[str, bytes], ...]] = (
    ("invalid_json", b'{"v":1,"seq":1,"samples":[{"ts":'),
    ("invalid_envelope", b'{"v":1,"seq":"seven","samples":[]}'),
    ("unsupported_version", b'{"v":99,"seq":1,"samples":[{"ts":"2026-01-01T00:00:00Z","signals":{}}]}'),
)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _message(body: bytes, kind: str) -> Message:
    message = Message(  # type: ignore[no-untyped-call]  # the SDK's Message has no annotations
        body, message_id=str(uuid.uuid4()), content_encoding="utf-8", content_type="application/json"
    )
    message.custom_properties["type"] = kind
    return message


def telemetry(seq: int, samples: Sequence[tuple[dt.datetime, dict[str, Any]]]) -> Message:
    body = {"v": 1, "seq": seq, "samples": [{"ts": iso(ts), "signals": signals} for ts, signals in samples]}
    return _message(orjson.dumps(body), TELEMETRY)


def bad_telemetry(body: bytes) -> Message:
    return _message(body, TELEMETRY)


def request(request_id: str, action: str, fields: Mapping[str, Any] | None = None) -> Message:
    """Any car request: the envelope (`v`, `requestId`, `action`) and the action's fields, sent as given (a test
    may send a field the cloud must refuse)."""
    body: dict[str, Any] = {"v": 1, "requestId": request_id, "action": action}
    body.update(fields or {})
    return _message(orjson.dumps(body), REQUEST)


def meeting_join(request_id: str, event_id: str) -> Message:
    return request(request_id, "meeting.join", {"eventId": event_id})


def navigate_to_meeting(request_id: str, event_id: str) -> Message:
    """Where an agenda event is, ready for the car's navigation (the reply's `destination`)."""
    return request(request_id, "navigate.to_meeting", {"eventId": event_id})


def meeting_late(request_id: str, event_id: str, eta_minutes: int | None = None) -> Message:
    """Tell the meeting's organiser the driver is running late (`etaMinutes` 1-240 from now; without it the cloud
    uses its own ETA)."""
    fields: dict[str, Any] = {"eventId": event_id}
    if eta_minutes is not None:
        fields["etaMinutes"] = eta_minutes
    return request(request_id, "meeting.late", fields)


def command_result(
    request_id: str, command_id: str, status: str, at: dt.datetime, reason: str | None = None
) -> Message:
    """A queued command's progress: `delivered` on receipt, then `succeeded`, `failed` (with `reason`),
    `cancelled` or `expired`."""
    body: dict[str, Any] = {
        "v": 1,
        "requestId": request_id,
        "action": COMMAND_RESULT,
        "commandId": command_id,
        "status": status,
    }
    if reason is not None:
        body["reason"] = reason
    body["at"] = iso(at)
    return _message(orjson.dumps(body), REQUEST)


def garbage_request() -> Message:
    """A request whose body is not JSON (the `garbage` fault on the queued path)."""
    return _message(GARBAGE, REQUEST)
