"""A local Microsoft Graph for the calls this app makes, speaking Graph's wire format (JSON, paging, errors).

It is what the tests drive the real msgraph-sdk against (GRAPH_BASE_URL=http://127.0.0.1:<port>/v1.0) and what
the local stack serves as the drivers' Microsoft 365 tenant. Served:

- `GET /v1.0/users/{id}/calendarView/delta[()]?startDateTime&endDateTime`, then the `@odata.nextLink` /
  `@odata.deltaLink` it hands out: occurrences in the window, `Prefer: odata.maxpagesize` pages, `@removed`
  for deleted (or moved out of the window) events; a token from before `invalidate_delta_tokens()` answers
  `410 Gone` with `Location` and `syncStateNotFound`, as Graph does once its sync state is gone;
- `POST /v1.0/users/{id}/onlineMeetings/createOrGet`: 201 with a new meeting, 200 with the one already
  created for the same (user, externalId); `DELETE /v1.0/users/{id}/onlineMeetings/{meetingId}`: 204, or 404
  when there is no such meeting (deletions are recorded in `deleted_meetings`);
- `POST /v1.0/subscriptions`, `PATCH` / `DELETE /v1.0/subscriptions/{id}`, `POST .../{id}/reauthorize`;
- injected faults (`fail_next`): any status with any headers, e.g. 429 with `Retry-After`.

Every request is recorded (`requests`) so tests can count Graph calls and check headers. Not a Graph: no
auth (it listens on loopback only), no recurrence expansion (seed occurrences), no $select/$filter.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web

MAX_SUBSCRIPTION_MINUTES: Final = 4230
DEFAULT_PAGE_SIZE: Final = 10


def graph_time(value: dt.datetime) -> str:
    """Graph's dateTimeTimeZone.dateTime: seven fractional digits, no zone (the zone travels separately)."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000")


def _parse(text: str) -> dt.datetime:
    """ISO 8601 with up to 7 fractional digits (Graph's style) and an optional zone (UTC when absent)."""
    head, dot, rest = text.replace("Z", "+00:00").partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        head = f"{head}.{rest[: min(digits, 6)]}{rest[digits:]}"
    value = dt.datetime.fromisoformat(head)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _token(data: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def _untoken(text: str) -> dict[str, Any] | None:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class SandboxEvent:
    id: str
    subject: str
    start: dt.datetime
    end: dt.datetime
    location: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    join_url: str | None = None  # a Teams invitation
    is_all_day: bool = False
    is_cancelled: bool = False
    version: int = 0

    def to_graph(self) -> dict[str, Any]:
        location: dict[str, Any] = {"displayName": self.location or ""}
        if self.latitude is not None and self.longitude is not None:
            location["coordinates"] = {"latitude": self.latitude, "longitude": self.longitude}
        return {
            "@odata.type": "#microsoft.graph.event",
            "@odata.etag": f'W/"{self.version}"',
            "id": self.id,
            "subject": self.subject,
            "start": {"dateTime": graph_time(self.start), "timeZone": "UTC"},
            "end": {"dateTime": graph_time(self.end), "timeZone": "UTC"},
            "isAllDay": self.is_all_day,
            "isCancelled": self.is_cancelled,
            "showAs": "busy",
            "type": "singleInstance",
            "location": location,
            "isOnlineMeeting": self.join_url is not None,
            "onlineMeetingProvider": "teamsForBusiness" if self.join_url else "unknown",
            "onlineMeeting": {"joinUrl": self.join_url} if self.join_url else None,
        }


@dataclass
class Mailbox:
    user_id: str
    events: dict[str, SandboxEvent] = field(default_factory=dict)
    # event id → version of its last change (deleted events stay here, with no entry in `events`)
    changes: dict[str, int] = field(default_factory=dict)


@dataclass
class Fault:
    route: str  # delta | createOrGet | onlineMeetings (delete) | subscriptions
    status: int
    headers: dict[str, str]
    body: dict[str, Any] | None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    prefer: tuple[str, ...]
    route: str


class GraphSandbox:
    """The tenant's state; `app()` serves it. Mutate it from tests (add/update/delete events, faults)."""

    def __init__(self) -> None:
        self.mailboxes: dict[str, Mailbox] = {}
        self.meetings: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted_meetings: list[tuple[str, str]] = []  # (user, meeting id) in the order they were deleted
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.epoch = 0
        self._version = itertools.count(1)
        self._ids = itertools.count(1)

    # --- tenant state -------------------------------------------------------------------------------------

    def mailbox(self, user_id: str) -> Mailbox:
        return self.mailboxes.setdefault(user_id, Mailbox(user_id))

    def add_event(self, user_id: str, subject: str, start: dt.datetime, end: dt.datetime, **extra: Any) -> str:
        event_id = extra.pop("id", None) or f"AAMkAG{next(self._ids):06d}-{uuid.uuid4().hex[:12]}="
        event = SandboxEvent(event_id, subject, start, end, **extra)
        self._touch(user_id, event)
        return event_id

    def update_event(self, user_id: str, event_id: str, **changes: Any) -> None:
        event = self.mailbox(user_id).events[event_id]
        for key, value in changes.items():
            setattr(event, key, value)
        self._touch(user_id, event)

    def delete_event(self, user_id: str, event_id: str) -> None:
        box = self.mailbox(user_id)
        del box.events[event_id]
        box.changes[event_id] = next(self._version)

    def _touch(self, user_id: str, event: SandboxEvent) -> None:
        box = self.mailbox(user_id)
        event.version = next(self._version)
        box.events[event.id] = event
        box.changes[event.id] = event.version

    def invalidate_delta_tokens(self) -> None:
        """Every delta/skip token handed out so far answers 410 Gone from now on."""
        self.epoch += 1

    def fail_next(
        self, route: str, status: int, headers: Mapping[str, str] | None = None, times: int = 1, code: str = ""
    ) -> None:
        body = {"error": {"code": code or f"Error{status}", "message": f"injected {status}"}}
        self.faults.extend(Fault(route, status, dict(headers or {}), body) for _ in range(times))

    def calls(self, route: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.route == route]

    # --- HTTP -----------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(r"/v1.0/users/{user}/calendarView/delta{paren:(\(\))?}", self._delta)
        app.router.add_get(r"/v1.0/users/{user}/calendarview/delta{paren:(\(\))?}", self._delta)
        app.router.add_post("/v1.0/users/{user}/onlineMeetings/createOrGet", self._create_or_get)
        app.router.add_delete("/v1.0/users/{user}/onlineMeetings/{meeting}", self._delete_meeting)
        app.router.add_post("/v1.0/subscriptions", self._create_subscription)
        app.router.add_patch("/v1.0/subscriptions/{sid}", self._renew_subscription)
        app.router.add_delete("/v1.0/subscriptions/{sid}", self._delete_subscription)
        app.router.add_post("/v1.0/subscriptions/{sid}/reauthorize", self._reauthorize_subscription)
        return app

    def _record(self, request: web.Request, route: str) -> web.Response | None:
        prefer = tuple(
            part.strip() for value in request.headers.getall("Prefer", []) for part in value.split(",") if part.strip()
        )
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.query), dict(request.headers), prefer, route)
        )
        for i, fault in enumerate(self.faults):
            if fault.route == route:
                del self.faults[i]
                return _json(fault.body, fault.status, fault.headers)
        return None

    async def _delta(self, request: web.Request) -> web.Response:
        fault = self._record(request, "delta")
        if fault is not None:
            return fault
        user = request.match_info["user"]
        box = self.mailbox(user)
        base = f"{request.scheme}://{request.host}/v1.0/users/{user}/calendarView/delta"
        page_size = _page_size(self.requests[-1].prefer)
        query = request.query
        if "$skiptoken" in query or "$deltatoken" in query:
            state = _untoken(query.get("$skiptoken") or query.get("$deltatoken") or "")
            if state is None or state.get("epoch") != self.epoch or state.get("user") != user:
                initial = f"{base}?startDateTime=...&endDateTime=..."
                gone = {"error": {"code": "syncStateNotFound", "message": "The sync state was not found."}}
                return _json(gone, 410, {"Location": initial})
        else:
            try:
                start, end = _parse(query["startDateTime"]), _parse(query["endDateTime"])
            except (KeyError, ValueError):
                bad = {"error": {"code": "ErrorInvalidParameter", "message": "startDateTime and endDateTime"}}
                return _json(bad, 400)
            state = {
                "epoch": self.epoch,
                "user": user,
                "start": start.isoformat(),
                "end": end.isoformat(),
                "since": 0,  # an initial round: every event in the window
                "offset": 0,
            }
        if "$deltatoken" in query:  # a new round of changes since the token's version
            state = {**state, "since": state["upto"], "offset": 0}
        start, end = _parse(state["start"]), _parse(state["end"])
        upto: int = state["upto"] if "$skiptoken" in query else max(box.changes.values(), default=0)
        items: list[dict[str, Any]] = []
        for event_id, version in sorted(box.changes.items(), key=lambda kv: (kv[1], kv[0])):
            if not state["since"] < version <= upto:
                continue
            event = box.events.get(event_id)
            in_window = event is not None and event.start < end and event.end > start
            if event is not None and in_window:
                items.append(event.to_graph())
            elif state["since"] > 0:  # deleted or moved out: only a round of changes reports removals
                items.append(
                    {"@odata.type": "#microsoft.graph.event", "id": event_id, "@removed": {"reason": "deleted"}}
                )
        offset = state["offset"]
        page, rest = items[offset : offset + page_size], items[offset + page_size :]
        body: dict[str, Any] = {"@odata.context": f"{base}/$metadata#Collection(event)", "value": page}
        if rest:
            body["@odata.nextLink"] = (
                f"{base}?$skiptoken={_token({**state, 'upto': upto, 'offset': offset + page_size})}"
            )
        else:
            body["@odata.deltaLink"] = f"{base}?$deltatoken={_token({**state, 'upto': upto, 'offset': 0})}"
        return _json(body)

    async def _create_or_get(self, request: web.Request) -> web.Response:
        fault = self._record(request, "createOrGet")
        if fault is not None:
            return fault
        user = request.match_info["user"]
        body = await _body(request)
        external_id = body.get("externalId")
        if not isinstance(external_id, str) or not external_id:
            return _json({"error": {"code": "BadRequest", "message": "externalId is required"}}, 400)
        existing = self.meetings.get((user, external_id))
        if existing is not None:
            return _json(existing, 200)
        number = next(self._ids)
        meeting = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#onlineMeeting",
            "id": f"MSo{number:08d}_{uuid.uuid4().hex}",
            "externalId": external_id,
            "subject": body.get("subject"),
            "startDateTime": body.get("startDateTime"),
            "endDateTime": body.get("endDateTime"),
            "creationDateTime": dt.datetime.now(dt.UTC).isoformat(),
            "joinWebUrl": f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_{uuid.uuid4().hex}%40thread.v2/0",
            "joinMeetingIdSettings": {
                "isPasscodeRequired": True,
                "joinMeetingId": f"{300000000000 + number}",
                "passcode": f"Pc{number:04d}x",
            },
            "audioConferencing": {
                "tollNumber": "+1 425-555-0100",
                "tollFreeNumber": None,
                "conferenceId": f"{900000 + number}",
                "dialinUrl": "https://dialin.teams.microsoft.com/local",
            },
        }
        self.meetings[user, external_id] = meeting
        return _json(meeting, 201)

    async def _delete_meeting(self, request: web.Request) -> web.Response:
        """As Graph: 204 No Content when deleted, 404 when the user has no such meeting."""
        fault = self._record(request, "onlineMeetings")
        if fault is not None:
            return fault
        user, meeting_id = request.match_info["user"], request.match_info["meeting"]
        key = next((k for k, m in self.meetings.items() if k[0] == user and m["id"] == meeting_id), None)
        if key is None:
            return _json({"error": {"code": "NotFound", "message": "online meeting not found"}}, 404)
        del self.meetings[key]
        self.deleted_meetings.append((user, meeting_id))
        return web.Response(status=204)

    async def _create_subscription(self, request: web.Request) -> web.Response:
        fault = self._record(request, "subscriptions")
        if fault is not None:
            return fault
        body = await _body(request)
        problem = _check_expiry(body.get("expirationDateTime"))
        missing = [k for k in ("changeType", "notificationUrl", "resource") if not body.get(k)]
        if missing or problem:
            return _json({"error": {"code": "InvalidRequest", "message": problem or f"missing {missing}"}}, 400)
        if len(body.get("clientState") or "") > 128:
            return _json({"error": {"code": "InvalidRequest", "message": "clientState too long"}}, 400)
        sub = {
            "id": str(uuid.uuid4()),
            "resource": body["resource"],
            "changeType": body["changeType"],
            "notificationUrl": body["notificationUrl"],
            "lifecycleNotificationUrl": body.get("lifecycleNotificationUrl"),
            "expirationDateTime": body["expirationDateTime"],
            "clientState": body.get("clientState"),
        }
        self.subscriptions[sub["id"]] = sub
        return _json(sub, 201)

    async def _renew_subscription(self, request: web.Request) -> web.Response:
        fault = self._record(request, "subscriptions")
        if fault is not None:
            return fault
        sub = self.subscriptions.get(request.match_info["sid"])
        if sub is None:
            return _json({"error": {"code": "ResourceNotFound", "message": "subscription not found"}}, 404)
        body = await _body(request)
        problem = _check_expiry(body.get("expirationDateTime"))
        if problem:
            return _json({"error": {"code": "InvalidRequest", "message": problem}}, 400)
        sub["expirationDateTime"] = body["expirationDateTime"]
        return _json(sub, 200)

    async def _reauthorize_subscription(self, request: web.Request) -> web.Response:
        fault = self._record(request, "subscriptions")
        if fault is not None:
            return fault
        if request.match_info["sid"] not in self.subscriptions:
            return _json({"error": {"code": "ResourceNotFound", "message": "subscription not found"}}, 404)
        return web.Response(status=204)

    async def _delete_subscription(self, request: web.Request) -> web.Response:
        fault = self._record(request, "subscriptions")
        if fault is not None:
            return fault
        if self.subscriptions.pop(request.match_info["sid"], None) is None:
            return _json({"error": {"code": "ResourceNotFound", "message": "subscription not found"}}, 404)
        return web.Response(status=204)


def _page_size(prefer: tuple[str, ...]) -> int:
    for part in prefer:
        name, _, value = part.partition("=")
        if name.strip().lower() == "odata.maxpagesize" and value.strip().isdigit():
            return max(1, int(value))
    return DEFAULT_PAGE_SIZE


def _check_expiry(value: Any) -> str | None:
    try:
        expiry = _parse(str(value))
    except ValueError:
        return "expirationDateTime is required"
    if expiry - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=MAX_SUBSCRIPTION_MINUTES):
        return f"expirationDateTime is more than {MAX_SUBSCRIPTION_MINUTES} minutes away"
    return None


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=dict(headers or {}), content_type="application/json"
    )
