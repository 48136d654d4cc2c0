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

Delegated access (drivers signed in from the car, issue 13): `GET /v1.0/me/calendarView/delta`,
`POST /v1.0/me/onlineMeetings/createOrGet`, `DELETE /v1.0/me/onlineMeetings/{id}` and subscriptions on
`/me/events` take `Authorization: Bearer <jwt>` and check it as Graph does: RS256 against the JWKS at
`jwks_url` (https on the local CA `ca_file`), `aud` Graph's (URI or app id), `exp`/`nbf` with Graph's five
minutes of clock skew; `/me` is the token's `oid` (its mailbox is keyed by that oid). A missing, malformed,
badly signed, expired or foreign-audience token answers 401 InvalidAuthenticationToken with
`WWW-Authenticate`; an app-only token (no `scp`) on `/me` answers 400 as Graph does; a token whose `scp` lacks
the permission answers 403 (ErrorAccessDenied for calendars, event subscriptions and `/me/sendMail` without
Mail.Send; Forbidden for onlineMeetings). A subscription created with a delegated token belongs to its user:
only that user's token renews, reauthorizes or deletes it (anyone else, and a request without a token, gets 404 / 401).

Stated choices where the stand-in cannot know Graph's exact answer: createOrGet or deleting a meeting as a
personal Microsoft account (tid 9188040d-6c67-4c5b-b112-36a304b66dad) answers 403 Forbidden (real Graph
offers no Teams onlineMeetings to personal accounts; its exact status and code for the attempt are not
documented); the issuer is not checked beyond naming the token's tenant (Graph trusts Entra's issuers only).

Every request is recorded (`requests`, with the verified caller's oid) so tests can count Graph calls and
check headers and tokens. Not a Graph: the `/users/{id}` routes take no token (it listens on loopback only),
no recurrence expansion (seed occurrences), no $select/$filter, no change notifications are sent.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

    from shared.auth.jwks import HttpJsonFetcher

MAX_SUBSCRIPTION_MINUTES: Final = 4230
DEFAULT_PAGE_SIZE: Final = 10
GRAPH_AUDIENCES: Final = ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000")
PERSONAL_TENANT: Final = "9188040d-6c67-4c5b-b112-36a304b66dad"
CLOCK_SKEW_SECONDS: Final = 300.0  # Microsoft.IdentityModel's default, which Graph's token validation uses
CALENDAR_SCOPES: Final = frozenset({"Calendars.Read", "Calendars.ReadWrite"})
MAIL_SCOPES: Final = frozenset({"Mail.Send"})
MEETING_SCOPES: Final = frozenset({"OnlineMeetings.ReadWrite"})


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
    organizer: str = "organizer@contoso-corp.example"  # who a "running late" message goes to

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
            "organizer": {"emailAddress": {"name": self.organizer.split("@")[0], "address": self.organizer}},
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
    caller: str | None = None  # the oid of the verified delegated token, if one came


@dataclass(frozen=True)
class Caller:
    """Who a verified delegated token is for, and what it may do."""

    oid: str
    tid: str
    scopes: frozenset[str]

    @property
    def personal(self) -> bool:
        return self.tid == PERSONAL_TENANT


class Refused(Exception):
    """A request Graph would refuse before doing anything; carries Graph's answer."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class GraphSandbox:
    """The tenant's state; `app()` serves it. Mutate it from tests (add/update/delete events, faults).

    `jwks_url` (and `ca_file`, the CA its https server's certificate chains to) enables the delegated `/me`
    routes; without it every delegated token is refused (401)."""

    def __init__(
        self, jwks_url: str | None = None, ca_file: str | None = None, clock_skew_seconds: float = CLOCK_SKEW_SECONDS
    ) -> None:
        self.mailboxes: dict[str, Mailbox] = {}
        self.meetings: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted_meetings: list[tuple[str, str]] = []  # (user, meeting id) in the order they were deleted
        self.sent_mail: list[dict[str, Any]] = []  # {user, to, subject, text} in the order they were sent
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.subscription_owners: dict[str, str] = {}  # subscription id → oid, for those created delegated
        self.jwks_url = jwks_url
        self.ca_file = ca_file
        self.clock_skew_seconds = clock_skew_seconds
        self._keys: dict[str, RSAPublicKey] = {}
        self._fetcher: HttpJsonFetcher | None = None
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
        app.router.add_get(r"/v1.0/me/calendarView/delta{paren:(\(\))?}", self._me_delta)
        app.router.add_get(r"/v1.0/me/calendarview/delta{paren:(\(\))?}", self._me_delta)
        app.router.add_post("/v1.0/me/onlineMeetings/createOrGet", self._me_create_or_get)
        app.router.add_delete("/v1.0/me/onlineMeetings/{meeting}", self._me_delete_meeting)
        app.router.add_post("/v1.0/users/{user}/sendMail", self._send_mail)
        app.router.add_post("/v1.0/me/sendMail", self._me_send_mail)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        if self._fetcher is not None:
            await self._fetcher.close()

    # --- delegated tokens -------------------------------------------------------------------------------------

    async def _signing_key(self, kid: str) -> RSAPublicKey | None:
        """The provider's key by kid; an unknown kid fetches the JWKS again (keys roll)."""
        if kid not in self._keys and self.jwks_url:
            from shared.auth.jwks import HttpJsonFetcher, parse_jwks

            if self._fetcher is None:
                self._fetcher = HttpJsonFetcher(self.ca_file)
            try:
                self._keys = parse_jwks(await self._fetcher(self.jwks_url))
            except Exception:  # the provider is down: Graph cannot validate either, the token is refused
                return None
        return self._keys.get(kid)

    async def caller(self, request: web.Request) -> Caller:
        """The verified delegated caller of `request`, or Refused with Graph's 401 (or 400 for an app token)."""
        import jwt

        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(_unauthenticated("Access token is empty."))
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Refused(_unauthenticated("IDX14100: JWT is not well formed, there are no dots (.).")) from None
        key = await self._signing_key(str(header.get("kid") or ""))
        if key is None or header.get("alg") != "RS256":
            raise Refused(_unauthenticated("Access token validation failure."))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=list(GRAPH_AUDIENCES),
                leeway=self.clock_skew_seconds,
                options={"require": ["exp", "aud", "oid", "tid"]},
            )
        except jwt.ExpiredSignatureError:
            raise Refused(_unauthenticated("Lifetime validation failed, the token is expired.")) from None
        except jwt.ImmatureSignatureError:
            raise Refused(_unauthenticated("Lifetime validation failed, the token is not yet valid.")) from None
        except jwt.InvalidAudienceError:
            raise Refused(_unauthenticated("Access token validation failure. Invalid audience.")) from None
        except jwt.PyJWTError:
            raise Refused(_unauthenticated("Access token validation failure.")) from None
        oid, tid, scp = claims.get("oid"), claims.get("tid"), claims.get("scp")
        if not isinstance(oid, str) or not isinstance(tid, str) or tid not in str(claims.get("iss", "")):
            raise Refused(_unauthenticated("Access token validation failure. Invalid issuer."))
        if not isinstance(scp, str):  # an application token: Graph has no /me for it
            only = "/me request is only valid with delegated authentication flow."
            raise Refused(_error(400, "BadRequest", only))
        return Caller(oid, tid, frozenset(scp.split()))

    async def _delegated(
        self, request: web.Request, route: str, scopes: frozenset[str], denied: str
    ) -> tuple[Caller, web.Response | None]:
        """Authenticate, record, apply a fault, then check the permission: Graph's order of refusals."""
        try:
            caller = await self.caller(request)
        except Refused:
            self._record(request, route, faults=False)
            raise
        fault = self._record(request, route, caller.oid)
        if fault is not None:
            return caller, fault
        if not caller.scopes & scopes:
            message = "Access is denied. Check credentials and try again."
            return caller, _error(403, denied, message)
        return caller, None

    async def _me_delta(self, request: web.Request) -> web.Response:
        try:
            caller, refused = await self._delegated(request, "delta", CALENDAR_SCOPES, "ErrorAccessDenied")
        except Refused as no:
            return no.response
        if refused is not None:
            return refused
        return self._delta_of(request, caller.oid, "me")

    async def _me_create_or_get(self, request: web.Request) -> web.Response:
        try:
            caller, refused = await self._delegated(request, "createOrGet", MEETING_SCOPES, "Forbidden")
        except Refused as no:
            return no.response
        if caller.personal:  # the stand-in's stated choice (module docstring)
            return _no_teams()
        if refused is not None:
            return refused
        return await self._create_or_get_for(request, caller.oid)

    async def _me_delete_meeting(self, request: web.Request) -> web.Response:
        try:
            caller, refused = await self._delegated(request, "onlineMeetings", MEETING_SCOPES, "Forbidden")
        except Refused as no:
            return no.response
        if caller.personal:
            return _no_teams()
        if refused is not None:
            return refused
        return self._delete_meeting_of(caller.oid, request.match_info["meeting"])

    async def _subscription_caller(self, request: web.Request, route: str) -> tuple[Caller | None, web.Response | None]:
        """Subscriptions serve both kinds: no token is the application path (loopback), a token is a driver."""
        if "Authorization" not in request.headers:
            return None, self._record(request, route)
        try:
            caller, refused = await self._delegated(request, route, CALENDAR_SCOPES, "ErrorAccessDenied")
        except Refused as no:
            return None, no.response
        return caller, refused

    def _visible(self, sid: str, caller: Caller | None) -> bool:
        """A delegated subscription is its user's; an application one the application's (Graph: 404 else)."""
        owner = self.subscription_owners.get(sid)
        return sid in self.subscriptions and owner == (caller.oid if caller else None)

    def _record(
        self, request: web.Request, route: str, caller: str | None = None, faults: bool = True
    ) -> web.Response | None:
        prefer = tuple(
            part.strip() for value in request.headers.getall("Prefer", []) for part in value.split(",") if part.strip()
        )
        self.requests.append(
            RecordedRequest(
                request.method, request.path, dict(request.query), dict(request.headers), prefer, route, caller
            )
        )
        if not faults:
            return None
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
        return self._delta_of(request, user, f"users/{user}")

    def _delta_of(self, request: web.Request, user: str, path: str) -> web.Response:
        """A delta page of `user`'s mailbox; links name `path` (`users/{id}` or `me`), as the request did."""
        box = self.mailbox(user)
        base = f"{request.scheme}://{request.host}/v1.0/{path}/calendarView/delta"
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

    async def _send_mail(self, request: web.Request) -> web.Response:
        fault = self._record(request, "sendMail")
        if fault is not None:
            return fault
        return await self._send_mail_for(request, request.match_info["user"])

    async def _me_send_mail(self, request: web.Request) -> web.Response:
        try:
            caller, refused = await self._delegated(request, "sendMail", MAIL_SCOPES, "ErrorAccessDenied")
        except Refused as no:
            return no.response
        if refused is not None:
            return refused
        return await self._send_mail_for(request, caller.oid)

    async def _send_mail_for(self, request: web.Request, user: str) -> web.Response:
        """Graph's sendMail: 202 and no body; the message is recorded (`sent_mail`) instead of delivered."""
        # Graph's action parameters are case-insensitive: the docs write `message`, the SDK sends `Message`.
        body = {str(k).lower(): v for k, v in (await _body(request)).items()}
        message = body.get("message")
        recipients = message.get("toRecipients") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not isinstance(recipients, list) or not recipients:
            return _error(400, "ErrorInvalidRecipients", "At least one recipient is required.")
        to = [str((r.get("emailAddress") or {}).get("address", "")) for r in recipients if isinstance(r, dict)]
        text = (message.get("body") or {}).get("content", "")
        self.sent_mail.append({"user": user, "to": to, "subject": message.get("subject"), "text": text})
        return web.Response(status=202)

    async def _create_or_get(self, request: web.Request) -> web.Response:
        fault = self._record(request, "createOrGet")
        if fault is not None:
            return fault
        return await self._create_or_get_for(request, request.match_info["user"])

    async def _create_or_get_for(self, request: web.Request, user: str) -> web.Response:
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
        return self._delete_meeting_of(request.match_info["user"], request.match_info["meeting"])

    def _delete_meeting_of(self, user: str, meeting_id: str) -> web.Response:
        key = next((k for k, m in self.meetings.items() if k[0] == user and m["id"] == meeting_id), None)
        if key is None:
            return _json({"error": {"code": "NotFound", "message": "online meeting not found"}}, 404)
        del self.meetings[key]
        self.deleted_meetings.append((user, meeting_id))
        return web.Response(status=204)

    async def _create_subscription(self, request: web.Request) -> web.Response:
        caller, refused = await self._subscription_caller(request, "subscriptions")
        if refused is not None:
            return refused
        body = await _body(request)
        resource = str(body.get("resource") or "").strip("/").lower()
        if caller is None and resource.startswith("me/"):
            only = "/me request is only valid with delegated authentication flow."
            return _error(400, "BadRequest", only)
        if caller is not None and resource not in ("me/events", f"users/{caller.oid}/events"):
            return _error(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
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
        if caller is not None:
            self.subscription_owners[sub["id"]] = caller.oid
        return _json(sub, 201)

    async def _renew_subscription(self, request: web.Request) -> web.Response:
        caller, refused = await self._subscription_caller(request, "subscriptions")
        if refused is not None:
            return refused
        sub = self.subscriptions.get(request.match_info["sid"])
        if sub is None or not self._visible(request.match_info["sid"], caller):
            return _json({"error": {"code": "ResourceNotFound", "message": "subscription not found"}}, 404)
        body = await _body(request)
        problem = _check_expiry(body.get("expirationDateTime"))
        if problem:
            return _json({"error": {"code": "InvalidRequest", "message": problem}}, 400)
        sub["expirationDateTime"] = body["expirationDateTime"]
        return _json(sub, 200)

    async def _reauthorize_subscription(self, request: web.Request) -> web.Response:
        caller, refused = await self._subscription_caller(request, "subscriptions")
        if refused is not None:
            return refused
        if not self._visible(request.match_info["sid"], caller):
            return _json({"error": {"code": "ResourceNotFound", "message": "subscription not found"}}, 404)
        return web.Response(status=204)

    async def _delete_subscription(self, request: web.Request) -> web.Response:
        caller, refused = await self._subscription_caller(request, "subscriptions")
        if refused is not None:
            return refused
        sid = request.match_info["sid"]
        if not self._visible(sid, caller):
            return _json({"error": {"code": "ResourceNotFound", "message": "subscription not found"}}, 404)
        del self.subscriptions[sid]
        self.subscription_owners.pop(sid, None)
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


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """Graph's error body, with the innerError every Graph error carries."""
    inner = {"date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), "request-id": str(uuid.uuid4())}
    inner["client-request-id"] = inner["request-id"]
    return _json({"error": {"code": code, "message": message, "innerError": inner}}, status, headers)


def _unauthenticated(message: str) -> web.Response:
    challenge = (
        'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
        'client_id="00000003-0000-0000-c000-000000000000"'
    )
    return _error(401, "InvalidAuthenticationToken", message, {"WWW-Authenticate": challenge})


def _no_teams() -> web.Response:
    message = "Online meetings are not available for Microsoft personal accounts."
    return _error(403, "Forbidden", message)


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=dict(headers or {}), content_type="application/json"
    )
