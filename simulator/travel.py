"""The car's side of calendar-aware driving (issue 17), as pure functions: which meeting to drive to and where it
is (the twin's agenda `travel.destination`, else the event's `coordinates`, else a `navigate.to_meeting` answer),
the proactive `travel.late` notice, and what the car's screen shows for an agenda event ("leave by 9:07",
"12 min late — tell the organiser?", a charging stop). simulator/car.py does the I/O; simulator/drive.py drives.

Which cars dawdle (`late`) or start on a low battery (`low_charge`) is drawn from generators of their own, so a
seed's cars are the same cars with or without these options.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from simulator.commands import parse_time

NOTICE: Final = "notice"  # the `type` property of a proactive cloud-to-device notice
TRAVEL_LATE: Final = "travel.late"  # the notice's body `type` when the driver will be late unless they leave now
NAVIGATE: Final = "navigate.to_meeting"
MEETING_LATE: Final = "meeting.late"
MAX_ETA_MINUTES: Final = 240  # meeting.late `etaMinutes` is 1-240


@dataclass(frozen=True)
class TravelOptions:
    """How cars drive to meetings. `late` and `low_charge` are the share of cars (0..1) that arrive late / start
    below 20 % charge; `tell_organiser`: answer a `travel.late` notice with `meeting.late`; `ask_navigation`: send
    `navigate.to_meeting` for the next meeting when the agenda has no destination for it."""

    drive_to_meetings: bool = False
    late: float = 0.0
    low_charge: float = 0.0
    cruise_kmh: float = 50.0
    tell_organiser: bool = False
    ask_navigation: bool = True


@dataclass(frozen=True)
class Target:
    """Where the car drives: a point, what to call it, and the meeting it is for (with its start, the deadline)."""

    lat: float
    lon: float
    label: str | None = None
    event_id: str | None = None
    start: dt.datetime | None = None


def draws(index: int, seed: int, options: TravelOptions) -> tuple[bool, bool]:
    """(late, low_charge) for car `index`: each with the option's probability, from the car's own generator."""
    rng = random.Random(f"{seed}:{index}:travel")
    late, low = rng.random(), rng.random()
    return late < options.late, low < options.low_charge


def _zone(value: Any) -> dt.tzinfo:
    """The UTC offset of an ISO 8601 time such as `localStart` (UTC when it has none)."""
    with contextlib.suppress(TypeError, ValueError):
        zone = dt.datetime.fromisoformat(value).tzinfo
        if zone is not None:
            return zone
    return dt.UTC


def _point(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, Mapping):
        return None
    lat, lon = value.get("lat"), value.get("lon")
    if (
        not isinstance(lat, int | float)
        or not isinstance(lon, int | float)
        or isinstance(lat, bool)
        or isinstance(lon, bool)
    ):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return float(lat), float(lon)


def destination_of(event: Mapping[str, Any]) -> Target | None:
    """Where an agenda event is: `travel.destination` (the backend's geocoded place), else Outlook's `coordinates`;
    None for an online-only meeting or one nobody located yet."""
    travel = event.get("travel")
    found = _point(travel.get("destination")) if isinstance(travel, Mapping) else None
    label: Any = travel["destination"].get("label") if found and isinstance(travel, Mapping) else None
    if found is None:
        found = _point(event.get("coordinates"))
        label = event.get("location")
    if found is None:
        return None
    event_id = event.get("id")
    return Target(
        found[0],
        found[1],
        label if isinstance(label, str) else None,
        event_id if isinstance(event_id, str) else None,
        parse_time(event.get("start")),
    )


def next_meeting(agenda: Sequence[Any], now: dt.datetime) -> dict[str, Any] | None:
    """The first agenda event (they are sorted by start) that has not started yet and may be somewhere: a place,
    coordinates or travel figures (an online-only meeting with nothing but a link is not driven to)."""
    for event in agenda:
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            continue
        start = parse_time(event.get("start"))
        if start is None or start <= now:
            continue
        travel = event.get("travel")
        if isinstance(travel, dict) and travel.get("unavailable") in ("online_only", "no_location"):
            continue
        if event.get("location") or event.get("coordinates") or isinstance(travel, dict):
            return event
    return None


def navigation_target(reply: Mapping[str, Any], start: dt.datetime | None = None) -> Target | None:
    """The destination of an `ok` `navigate.to_meeting` reply (None for an error reply or a malformed one)."""
    if reply.get("action") != NAVIGATE or reply.get("status") != "ok":
        return None
    destination = reply.get("destination")
    found = _point(destination)
    if found is None or not isinstance(destination, Mapping):
        return None
    label, event_id = destination.get("label"), reply.get("eventId")
    return Target(
        found[0],
        found[1],
        label if isinstance(label, str) else None,
        event_id if isinstance(event_id, str) else None,
        start,
    )


def notice_of(properties: Mapping[str, Any], body: bytes) -> dict[str, Any] | None:
    """A proactive notice (`type=notice`, a JSON object with `v` 1 and a string `type`), else None."""
    if properties.get("type") != NOTICE:
        return None
    try:
        notice = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(notice, dict) or notice.get("v") != 1 or not isinstance(notice.get("type"), str):
        return None
    return notice


def eta_minutes(notice: Mapping[str, Any], now: dt.datetime) -> int | None:
    """Minutes from now to the notice's `eta`, within meeting.late's 1-240 (None when it has no valid eta)."""
    eta = parse_time(notice.get("eta"))
    if eta is None:
        return None
    return max(1, min(MAX_ETA_MINUTES, round((eta - now).total_seconds() / 60)))


def _clock(moment: dt.datetime) -> str:
    return f"{moment.hour}:{moment.minute:02d}"


UNAVAILABLE_TEXT: Final = {
    "location_off": "location off",
    "no_position": "no position yet",
    "online_only": "online meeting",
    "no_location": "no place given",
    "not_found": "place not found",
    "no_route": "no route",
    "maps_unavailable": "maps unavailable",
    "all_day": "all-day event",
    "started": "meeting started",
}


def describe(event: Mapping[str, Any]) -> list[str]:
    """What the car's screen shows for an agenda event's travel, times in the driver's zone (the offset of its
    `localStart`; UTC without one): "leave by 9:07", "12 min late — tell the organiser?", "not reachable on
    the current charge — charging stop: <name>", "figures from 9:01 (maps unavailable)", or why there are none."""
    travel = event.get("travel")
    if not isinstance(travel, Mapping):
        return []
    if "unavailable" in travel:
        return [f"travel: unavailable ({UNAVAILABLE_TEXT.get(str(travel['unavailable']), travel['unavailable'])})"]
    zone = _zone(event.get("localStart"))
    lines: list[str] = []
    late = travel.get("lateByMinutes")
    leave_by = parse_time(travel.get("leaveBy"))
    if isinstance(late, int) and late > 0:
        lines.append(f"{late} min late — tell the organiser?")
    elif leave_by is not None:
        lines.append(f"leave by {_clock(leave_by.astimezone(zone))}")
    if travel.get("reachable") is False:
        stop = travel.get("chargingStop")
        where = stop.get("name") if isinstance(stop, Mapping) else None
        lines.append("not reachable on the current charge" + (f" — charging stop: {where}" if where else ""))
    computed = parse_time(travel.get("computedAt"))
    if travel.get("stale") is True and computed is not None:
        lines.append(f"figures from {_clock(computed.astimezone(zone))} (maps unavailable)")
    return lines
