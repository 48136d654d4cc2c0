"""The request/response contract v1 (docs/messages.md, docs/schemas/request-v1.schema.json).

Decoding never raises: any bytes become a CarRequest, a RequestError that can be answered (it has a
requestId), or a RequestError without requestId, which cannot be correlated with anything and is
dead-lettered instead of answered.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

import orjson

VERSION: Final = 1
MAX_REQUEST_BYTES: Final = 4096
MAX_EVENT_ID: Final = 512
MAX_SUBJECT: Final = 255
MAX_TERMS_VERSION: Final = 64
MAX_CATEGORIES: Final = 64
Action = Literal[
    "calendar.refresh",
    "meeting.join",
    "meeting.now",
    "consent.get",
    "consent.set",
    "command.result",
    "auth.signin",
    "auth.status",
    "auth.signout",
    "profile.select",
    "navigate.to_meeting",
    "meeting.late",
]
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)  # written once, in the Literal
# Calendar-aware driving (shared/travel): where the meeting is, and telling its organiser the driver is late.
TRAVEL_ACTIONS: Final = frozenset({"navigate.to_meeting", "meeting.late"})
MAX_ETA_MINUTES: Final = 240
# The driver's own Microsoft account at the car (shared/accounts): sign-in, its status, sign-out, which profile
# drives. They come before any driver exists, so neither a linked driver nor calendar consent is asked for.
ACCOUNT_ACTIONS: Final = frozenset({"auth.signin", "auth.status", "auth.signout", "profile.select"})
PROFILE: Final = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
MAX_TIME_ZONE: Final = 64
# The driver's consent, shown and changed at the car (shared/privacy/consent.py): no Microsoft 365 data involved,
# so neither the calendar consent nor the brand's calendar/Teams switches apply to them.
CONSENT_ACTIONS: Final = frozenset({"consent.get", "consent.set"})
# The car's report on a queued command (shared/commands): no driver and no Microsoft 365 data involved either.
COMMAND_RESULT: Final = "command.result"
COMMAND_STATUSES: Final = ("delivered", "succeeded", "failed", "cancelled", "expired")
MAX_REASON: Final = 64
MAX_MESSAGE: Final = 200
UNKNOWN_COMMAND: Final = "unknown_command"

# Error codes of replies (stable: the car switches on them).
INVALID_REQUEST: Final = "invalid_request"
UNSUPPORTED_VERSION: Final = "unsupported_version"
UNKNOWN_ACTION: Final = "unknown_action"
NO_DRIVER: Final = "no_driver"
NO_CONSENT: Final = "no_consent"
FEATURE_DISABLED: Final = "feature_disabled"
EVENT_NOT_FOUND: Final = "event_not_found"
UNAVAILABLE: Final = "unavailable"
GRAPH_ERROR: Final = "graph_error"
FLOW_NOT_FOUND: Final = "flow_not_found"
TEAMS_UNAVAILABLE: Final = "teams_unavailable"
REAUTH_REQUIRED: Final = "reauth_required"
NO_LOCATION: Final = "no_location"
NOT_FOUND: Final = "not_found"
NO_ORGANIZER: Final = "no_organizer"
MAIL_UNAVAILABLE: Final = "mail_unavailable"


@dataclass(frozen=True, slots=True)
class CarRequest:
    request_id: str
    action: Action
    event_id: str | None = None
    subject: str | None = None
    categories: Mapping[str, bool] | None = None  # consent.set: category -> grant (true) or withdraw (false)
    terms_version: str | None = None  # consent.set: the version of the terms the car's screen showed
    command_id: str | None = None  # command.result: which command, how it ended and why
    command_status: str | None = None
    reason: str | None = None
    message: str | None = None
    profile: str | None = None  # auth.signin, auth.signout, profile.select: the car's driver-profile slot
    time_zone: str | None = None  # auth.signin: the driver's IANA time zone, for the agenda
    flow_id: str | None = None  # auth.status: which sign-in
    eta_minutes: int | None = None  # meeting.late: minutes until the car expects to arrive


@dataclass(frozen=True, slots=True)
class RequestError:
    """A request that cannot be carried out; `request_id` None means it cannot even be answered."""

    request_id: str | None
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Reply:
    request_id: str
    action: str | None
    status: Literal["ok", "error"]
    data: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def ok(cls, request: CarRequest, **data: Any) -> Reply:
        return cls(request.request_id, request.action, "ok", data)

    @classmethod
    def error(cls, request_id: str, action: str | None, code: str, message: str) -> Reply:
        return cls(request_id, action, "error", {}, code, message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"v": VERSION, "requestId": self.request_id, "status": self.status}
        if self.action:
            body["action"] = self.action
        body.update(self.data)
        if self.status == "error":
            body["error"] = {"code": self.error_code, "message": self.error_message}
        return body

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Reply:
        data = {k: v for k, v in body.items() if k not in ("v", "requestId", "status", "action", "error")}
        error = body.get("error") or {}
        return cls(body["requestId"], body.get("action"), body["status"], data, error.get("code"), error.get("message"))


def _request_id(body: dict[str, Any]) -> str | None:
    raw = body.get("requestId")
    if not isinstance(raw, str) or len(raw) > 64:
        return None
    try:
        return str(uuid.UUID(raw))  # canonical lower-case form: "A1B2..." and "a1b2..." are one request
    except ValueError:
        return None


def decode_request(raw: bytes) -> CarRequest | RequestError:
    if len(raw) > MAX_REQUEST_BYTES:
        return RequestError(None, "too_large", f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return RequestError(None, "invalid_json", "body is not UTF-8 JSON")
    if not isinstance(body, dict):
        return RequestError(None, "not_an_object", "body is not a JSON object")
    request_id = _request_id(body)
    if request_id is None:
        return RequestError(None, "invalid_request_id", "requestId missing or not a UUID")
    version = body.get("v")
    if version != VERSION or isinstance(version, bool):
        return RequestError(request_id, UNSUPPORTED_VERSION, f"v must be {VERSION}")
    action = body.get("action")
    if action not in ACTIONS:
        return RequestError(request_id, UNKNOWN_ACTION, f"action must be one of {', '.join(ACTIONS)}")
    event_id, subject = body.get("eventId"), body.get("subject")
    if subject is not None and (not isinstance(subject, str) or len(subject) > MAX_SUBJECT):
        return RequestError(request_id, INVALID_REQUEST, f"subject must be a string of at most {MAX_SUBJECT}")
    if action == "meeting.join" or action in TRAVEL_ACTIONS:
        if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID:
            return RequestError(request_id, INVALID_REQUEST, f"{action} needs eventId (a non-empty string)")
        eta = body.get("etaMinutes")
        if (
            action == "meeting.late"
            and eta is not None
            and (not isinstance(eta, int) or isinstance(eta, bool) or not 0 < eta <= MAX_ETA_MINUTES)
        ):
            return RequestError(request_id, INVALID_REQUEST, f"etaMinutes must be a whole number 1-{MAX_ETA_MINUTES}")
        return CarRequest(request_id, action, event_id=event_id, eta_minutes=eta)
    if action == "meeting.now":
        return CarRequest(request_id, action, subject=subject or None)
    if action == "consent.get":
        return CarRequest(request_id, action)
    if action == "consent.set":
        return _consent_set(request_id, body)
    if action == COMMAND_RESULT:
        return _command_result(request_id, body)
    if action in ACCOUNT_ACTIONS:
        return _account_request(request_id, action, body)
    return CarRequest(request_id, "calendar.refresh")


def _consent_set(request_id: str, body: dict[str, Any]) -> CarRequest | RequestError:
    """consent.set: `categories` (category -> boolean, at least one) and `termsVersion`; which categories exist is
    the processor's to check (the catalogue, shared/privacy/categories.py)."""
    categories, terms = body.get("categories"), body.get("termsVersion")
    if (
        not isinstance(categories, dict)
        or not 0 < len(categories) <= MAX_CATEGORIES
        or not all(isinstance(v, bool) for v in categories.values())
    ):
        return RequestError(request_id, INVALID_REQUEST, "consent.set needs categories: {category: true|false}")
    if not isinstance(terms, str) or not 0 < len(terms) <= MAX_TERMS_VERSION:
        return RequestError(request_id, INVALID_REQUEST, "consent.set needs termsVersion (the terms shown)")
    return CarRequest(request_id, "consent.set", categories=dict(categories), terms_version=terms)


def _command_result(request_id: str, body: dict[str, Any]) -> CarRequest | RequestError:
    """command.result: `commandId` (a UUID), `status` (delivered, succeeded, failed, cancelled, expired), and for
    a failure `reason` (a short code) and optionally `message`."""
    raw_id, status = body.get("commandId"), body.get("status")
    reason, message = body.get("reason"), body.get("message")
    try:
        command_id = str(uuid.UUID(raw_id)) if isinstance(raw_id, str) and len(raw_id) <= 64 else None
    except ValueError:
        command_id = None
    if command_id is None:
        return RequestError(request_id, INVALID_REQUEST, "command.result needs commandId (a UUID)")
    if status not in COMMAND_STATUSES:
        return RequestError(request_id, INVALID_REQUEST, f"status must be one of {', '.join(COMMAND_STATUSES)}")
    if reason is not None and (not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON):
        return RequestError(request_id, INVALID_REQUEST, f"reason must be a string of at most {MAX_REASON}")
    if message is not None and (not isinstance(message, str) or len(message) > MAX_MESSAGE):
        return RequestError(request_id, INVALID_REQUEST, f"message must be a string of at most {MAX_MESSAGE}")
    return CarRequest(
        request_id, COMMAND_RESULT, command_id=command_id, command_status=status, reason=reason, message=message
    )


def _account_request(request_id: str, action: Action, body: dict[str, Any]) -> CarRequest | RequestError:
    """auth.signin (`profile`, optional `timeZone` and `termsVersion`), auth.signout and profile.select
    (`profile`), auth.status (`flowId`, a UUID)."""
    if action == "auth.status":
        raw = body.get("flowId")
        try:
            flow_id = str(uuid.UUID(raw)) if isinstance(raw, str) and len(raw) <= 64 else None
        except ValueError:
            flow_id = None
        if flow_id is None:
            return RequestError(request_id, INVALID_REQUEST, "auth.status needs flowId (a UUID)")
        return CarRequest(request_id, action, flow_id=flow_id)
    profile = body.get("profile")
    if not isinstance(profile, str) or not PROFILE.fullmatch(profile):
        return RequestError(request_id, INVALID_REQUEST, f"{action} needs profile (1-16 letters, digits, _ or -)")
    if action != "auth.signin":
        return CarRequest(request_id, action, profile=profile)
    zone, terms = body.get("timeZone"), body.get("termsVersion")
    if zone is not None and (not isinstance(zone, str) or not 0 < len(zone) <= MAX_TIME_ZONE):
        return RequestError(request_id, INVALID_REQUEST, f"timeZone must be an IANA name of at most {MAX_TIME_ZONE}")
    if terms is not None and (not isinstance(terms, str) or not 0 < len(terms) <= MAX_TERMS_VERSION):
        return RequestError(request_id, INVALID_REQUEST, "termsVersion must be the version of the terms shown")
    return CarRequest(request_id, action, profile=profile, time_zone=zone, terms_version=terms)
