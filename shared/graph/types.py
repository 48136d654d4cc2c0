"""What the domain reads from Graph: small frozen records, independent of the SDK's generated models."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GraphEvent:
    """One calendar event (an occurrence, from calendarView) as delta returns it; times canonical UTC."""

    id: str
    subject: str | None = None
    start: str | None = None
    end: str | None = None
    is_all_day: bool = False
    is_cancelled: bool = False
    location: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    is_online_meeting: bool = False
    join_url: str | None = None
    organizer: str | None = None  # the organiser's email address (who a "running late" message goes to)


@dataclass(frozen=True, slots=True)
class DeltaPage:
    """One page of a calendarView delta round: changed events, removed ids and exactly one of the two links."""

    events: list[GraphEvent] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    next_link: str | None = None
    delta_link: str | None = None


@dataclass(frozen=True, slots=True)
class OnlineMeeting:
    """A Teams meeting as createOrGet returns it."""

    id: str
    join_web_url: str
    subject: str | None = None
    join_meeting_id: str | None = None
    passcode: str | None = None
    toll_number: str | None = None
    conference_id: str | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    """A Graph change-notification subscription."""

    id: str
    resource: str
    expires_at: str  # canonical UTC
