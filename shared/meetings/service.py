"""Teams online meetings, idempotent by construction.

`POST /users/{id}/onlineMeetings/createOrGet` with an `externalId` returns the existing meeting for the same
(app, user, externalId) instead of creating a second one, and our externalIds are deterministic:
- for a calendar event: a hash of (user, event id) — every request to join that event meets the same meeting;
- for an ad-hoc meeting: a hash of (vehicle, requestId) — a retried `meeting.now` meets its first meeting.
So neither a redelivered request, nor the SDK retrying the POST after a 503, nor two instances racing can
create two meetings. The `meetings` container (partition `/userId`, id = externalId) remembers each meeting,
which also spares Graph the call when the same meeting is asked for again.

https://learn.microsoft.com/graph/api/application-post-onlinemeetings-createorget
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from shared.calendar.documents import digest, event_doc_id
from shared.containers import CALENDARS, MEETINGS
from shared.device_messages import canonical_time
from shared.errors import FleetError
from shared.graph.base import GraphClient
from shared.graph.types import OnlineMeeting
from shared.stores.base import DocumentStore

AD_HOC_DURATION: Final = dt.timedelta(hours=1)
DEFAULT_SUBJECT: Final = "Meeting from the car"


class TeamsUnavailableError(FleetError):
    """The driver's account (a personal Microsoft account) cannot create Teams meetings."""


@dataclass(frozen=True, slots=True)
class MeetingInfo:
    """What the car needs to join: the link, and the dial-in when the meeting has one."""

    join_web_url: str
    source: str  # "event" (the invitation's own Teams link) | "created" (an online meeting we created)
    meeting_id: str | None = None
    join_meeting_id: str | None = None
    passcode: str | None = None
    toll_number: str | None = None
    conference_id: str | None = None
    subject: str | None = None

    def to_reply(self) -> dict[str, Any]:
        reply: dict[str, Any] = {"joinWebUrl": self.join_web_url, "source": self.source}
        if self.meeting_id:
            reply["meetingId"] = self.meeting_id
        if self.join_meeting_id:
            reply["joinMeetingId"] = self.join_meeting_id
        if self.passcode:
            reply["passcode"] = self.passcode
        if self.toll_number or self.conference_id:
            reply["dialIn"] = {"tollNumber": self.toll_number, "conferenceId": self.conference_id}
        if self.subject:
            reply["subject"] = self.subject
        return reply


def event_external_id(user_id: str, event_id: str) -> str:
    return f"car-event-{digest(user_id, event_id)}"


def ad_hoc_external_id(vehicle_id: str, request_id: str) -> str:
    return f"car-now-{digest(vehicle_id, request_id)}"


class MeetingService:
    def __init__(self, store: DocumentStore, graph: GraphClient, clock: Callable[[], dt.datetime]) -> None:
        self.store = store
        self.graph = graph
        self.clock = clock

    async def for_event(self, user_id: str, event_id: str, create: bool = True) -> MeetingInfo | None:
        """The event's own Teams link when it has one, else a meeting created for it (when `create`: the
        driver's account can create Teams meetings; else TeamsUnavailableError). None: no such event in the
        synced calendar."""
        stored = await self.store.read(CALENDARS, user_id, event_doc_id(event_id))
        if stored is None:
            return None
        event = stored.document
        if event.get("joinUrl"):
            return MeetingInfo(event["joinUrl"], "event", subject=event.get("subject"))
        if not create:
            raise TeamsUnavailableError("the event has no online-meeting link and the account cannot create one")
        now = self.clock()
        start = event.get("start") or canonical_time(now)
        end = event.get("end") or canonical_time(dt.datetime.fromisoformat(start) + AD_HOC_DURATION)
        return await self._create_or_get(
            user_id,
            event_external_id(user_id, event_id),
            (event.get("subject") or DEFAULT_SUBJECT)[:255],
            start,
            end,
            {"eventId": event_id},
        )

    async def ad_hoc(self, user_id: str, vehicle_id: str, request_id: str, subject: str | None) -> MeetingInfo:
        """A meeting starting now, for one hour."""
        now = self.clock()
        return await self._create_or_get(
            user_id,
            ad_hoc_external_id(vehicle_id, request_id),
            (subject or DEFAULT_SUBJECT)[:255],
            canonical_time(now),
            canonical_time(now + AD_HOC_DURATION),
            {"vehicleId": vehicle_id, "requestId": request_id},
        )

    async def _create_or_get(
        self, user_id: str, external_id: str, subject: str, start: str, end: str, origin: dict[str, str]
    ) -> MeetingInfo:
        stored = await self.store.read(MEETINGS, user_id, external_id)
        if stored is not None:
            return _info(stored.document)
        meeting = await self.graph.create_or_get_meeting(user_id, external_id, subject, start, end)
        doc = _document(user_id, external_id, meeting, start, end, origin, canonical_time(self.clock()))
        await self.store.upsert(MEETINGS, doc)
        return _info(doc)


def _document(
    user_id: str, external_id: str, m: OnlineMeeting, start: str, end: str, origin: dict[str, str], now: str
) -> dict[str, Any]:
    return {
        "id": external_id,
        "userId": user_id,
        "externalId": external_id,
        "meetingId": m.id,
        "joinWebUrl": m.join_web_url,
        "joinMeetingId": m.join_meeting_id,
        "passcode": m.passcode,
        "tollNumber": m.toll_number,
        "conferenceId": m.conference_id,
        "subject": m.subject,
        "start": start,
        "end": end,
        "origin": origin,
        "createdAt": now,
    }


def _info(doc: dict[str, Any]) -> MeetingInfo:
    return MeetingInfo(
        join_web_url=doc["joinWebUrl"],
        source="created",
        meeting_id=doc.get("meetingId"),
        join_meeting_id=doc.get("joinMeetingId"),
        passcode=doc.get("passcode"),
        toll_number=doc.get("tollNumber"),
        conference_id=doc.get("conferenceId"),
        subject=doc.get("subject"),
    )
