"""The car's travel requests: `navigate.to_meeting` (where the meeting is, ready for the car's navigation) and
`meeting.late` (a "running late" email to the organiser). Answers are data; the request processor turns them into
replies (docs/messages.md, "Calendar-aware driving").

`meeting.late` is idempotent per meeting and ETA bucket (5 minutes): a record in the driver's calendar partition
(id from the event and the bucket, created only if absent) decides whether this ETA was already sent, so a replay,
a second request from the car or two instances racing send one email. Graph's sendMail has no idempotency key: the
record is written first, and an email that fails for good deletes it again (the car may ask again).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from shared.accounts.ids import can_send_mail
from shared.calendar.documents import ACCOUNT_DOC_ID, digest, event_doc_id
from shared.containers import CALENDARS
from shared.device_messages import canonical_time
from shared.errors import ConflictError
from shared.graph.access import is_delegated_user
from shared.graph.base import GraphClient
from shared.maps.base import MapsClient
from shared.maps.errors import MapsError
from shared.requests import contract as C
from shared.stores.base import DocumentStore
from shared.travel.budget import parse_utc
from shared.travel.config import TravelSettings
from shared.travel.destinations import destination_json, resolve
from shared.travel.planner import refreshed
from shared.travel.stores import KIND_LATE, PlaceCache, TravelStateStore

ETA_BUCKET_MINUTES: Final = 5
LATE_RECORD_TTL_SECONDS: Final = 2 * 24 * 3600
MAIL_REFUSED: Final = "your account does not let the car send mail: sign in again at the car to allow it"


@dataclass(frozen=True, slots=True)
class Answer:
    """`data` for an ok reply, or `error` (a reply error code) with a message the car can show."""

    data: dict[str, Any] | None = None
    error: str | None = None
    message: str = ""
    keep: bool = True  # False: the car may retry the same requestId (Maps or Graph unavailable)


class TravelRequests:
    def __init__(
        self,
        store: DocumentStore,
        maps: Callable[[], MapsClient],
        places: PlaceCache,
        states: TravelStateStore,
        graph: GraphClient,
        settings: TravelSettings,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.store, self.maps, self.places, self.states = store, maps, places, states
        self.graph, self.settings, self.clock = graph, settings, clock

    async def _event(self, user_id: str, event_id: str) -> dict[str, Any] | None:
        stored = await self.store.read(CALENDARS, user_id, event_doc_id(event_id))
        return dict(stored.document) if stored is not None else None

    async def _figures(self, vehicle_id: str, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """The planner's last figures for the event, as of now (as the car's agenda shows them: once leave-by has
        passed, the lateness and the ETA move with the clock), or none."""
        state = await self.states.load(vehicle_id) or {}
        entry = (state.get("events") or {}).get(str(event.get("eventId"))) or {}
        travel = entry.get("travel") if isinstance(entry, Mapping) else None
        if not isinstance(travel, Mapping):
            return {}
        start = event.get("start")
        if not isinstance(start, str):
            return travel
        return refreshed(travel, parse_utc(start), self.clock(), self.settings.parking, bool(travel.get("stale")))

    async def navigate(self, vehicle_id: str, user_id: str, event_id: str) -> Answer:
        """The meeting's place (its coordinates, else its location geocoded, cached), with the latest ETA and
        leave-by figures when the planner has them."""
        event = await self._event(user_id, event_id)
        if event is None:
            return Answer(error="event_not_found", message="no such event in the driver's synced calendar")
        try:
            resolved = await resolve(event, user_id, self.maps(), self.places, self.settings.place_ttl_seconds)
        except MapsError:
            message = "maps are unavailable; retry with the same requestId"
            return Answer(error="unavailable", message=message, keep=False)
        if resolved is None or resolved.place is None:
            kind = resolved.unavailable if resolved is not None else "not_found"
            if kind in ("online_only", "no_location"):
                return Answer(error="no_location", message="this meeting has no place to drive to")
            return Answer(error="not_found", message="the meeting's location could not be found on the map")
        data: dict[str, Any] = {"eventId": event_id, "destination": destination_json(resolved.place)}
        figures = await self._figures(vehicle_id, event)
        for key in ("eta", "leaveBy"):
            if isinstance(figures.get(key), str):
                data[key] = figures[key]
        return Answer(data)

    async def late(
        self, vehicle_id: str, user_id: str, event_id: str, eta_minutes: int | None, time_zone: str | None = None
    ) -> Answer:
        """One email per meeting and ETA bucket to the organiser: "running late, arriving about 10:12"."""
        if not await self._can_send_mail(user_id):
            return Answer(error=C.MAIL_UNAVAILABLE, message=MAIL_REFUSED)
        event = await self._event(user_id, event_id)
        if event is None:
            return Answer(error="event_not_found", message="no such event in the driver's synced calendar")
        organizer = event.get("organizer")
        if not isinstance(organizer, str) or "@" not in organizer:
            return Answer(error="no_organizer", message="the meeting has no organiser to tell")
        now = self.clock()
        eta = now + dt.timedelta(minutes=eta_minutes) if eta_minutes else None
        if eta is None:
            known = (await self._figures(vehicle_id, event)).get("eta")
            eta = parse_utc(known) if isinstance(known, str) else None
        if eta is None:
            return Answer(error="invalid_request", message="no ETA known: send etaMinutes")
        bucket = math.floor(eta.timestamp() / (ETA_BUCKET_MINUTES * 60))
        record_id = f"late-{digest(event_id, str(bucket))}"
        record: dict[str, Any] = {
            "id": record_id,
            "userId": user_id,
            "kind": KIND_LATE,
            "eventId": event_id,
            "eta": canonical_time(eta),
            "vehicleId": vehicle_id,
            "ttl": LATE_RECORD_TTL_SECONDS,
        }
        try:
            await self.store.create(CALENDARS, record)
        except ConflictError:
            return Answer({"sent": False, "eta": record["eta"]})
        subject = f"Running late: {str(event.get('subject') or 'our meeting')[:200]}"
        text = f"I am on my way and expect to arrive at about {_clock_text(eta, time_zone)}. Sent from my car."
        from shared.graph.exceptions import GraphError, GraphForbiddenError

        try:
            await self.graph.send_mail(user_id, organizer, subject, text)
        except GraphError as exc:
            await self.store.delete(CALENDARS, user_id, record_id)
            if exc.transient:
                return Answer(error="unavailable", message="Microsoft 365 is unavailable; retry", keep=False)
            if isinstance(exc, GraphForbiddenError) and is_delegated_user(user_id):  # Mail.Send revoked since
                return Answer(error=C.MAIL_UNAVAILABLE, message=MAIL_REFUSED)
            return Answer(error="graph_error", message="Microsoft 365 refused the message")
        return Answer({"sent": True, "eta": record["eta"]})

    async def _can_send_mail(self, user_id: str) -> bool:
        """A driver signed in from the car sends as themselves (/me/sendMail): only with Mail.Send granted, which
        accounts signed in before the sign-in asked for it lack; asking Graph would only get a 403. A company
        driver sends through the app's permission; a missing account document is left to the token provider."""
        if not is_delegated_user(user_id):
            return True
        stored = await self.store.read(CALENDARS, user_id, ACCOUNT_DOC_ID)
        return stored is None or can_send_mail(stored.document)


def _clock_text(eta: dt.datetime, time_zone: str | None) -> str:
    """ "10:12 (Europe/Berlin)" in the driver's time zone (the organiser reads a clock time), else UTC."""
    from zoneinfo import ZoneInfo

    try:
        zone = ZoneInfo(time_zone) if time_zone else None
    except (KeyError, ValueError):
        zone = None
    return f"{eta.astimezone(zone or dt.UTC).strftime('%H:%M')} ({time_zone if zone else 'UTC'})"
