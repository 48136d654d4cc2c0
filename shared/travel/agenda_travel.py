"""The agenda as the car shows it: each event with its `travel` and its times in the driver's time zone.

The agenda (shared/calendar/agenda.py) keeps UTC `start`/`end` for machines; `localStart`/`localEnd` carry the
driver's offset (`driver.timeZone`, IANA) so the car prints 10:00 for a 10:00 meeting in Berlin, on either side
of a DST change. The additions are small (two 25-byte strings, one travel object of ~350 bytes for at most
TRAVEL_MAX_EVENTS events); build_agenda still drops events from the end when the agenda outgrows its budget.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any


def _zone(time_zone: str | None) -> dt.tzinfo:
    """The IANA zone, or UTC when it is missing or unknown (link validation makes that rare, not impossible)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # stdlib, loaded on first use

    if not time_zone:
        return dt.UTC
    try:
        return ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def local_time(utc_text: str, zone: dt.tzinfo) -> str | None:
    """A canonical UTC time as ISO 8601 with the zone's offset at that instant, to the second."""
    try:
        value = dt.datetime.fromisoformat(utc_text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    if value.tzinfo is None:
        return None
    return value.astimezone(zone).replace(microsecond=0).isoformat()


def add_travel(
    agenda_items: Sequence[Mapping[str, Any]],
    travel_by_event: Mapping[str, Mapping[str, Any]],
    time_zone: str | None,
) -> list[dict[str, Any]]:
    """New items (the input is not changed): `localStart`/`localEnd` on each, `travel` on those the planner
    gave one (TravelPlan.travel)."""
    zone = _zone(time_zone)
    out = []
    for item in agenda_items:
        new = dict(item)
        new["localStart"] = local_time(str(item.get("start")), zone)
        new["localEnd"] = local_time(str(item.get("end")), zone)
        travel = travel_by_event.get(str(item.get("id")))
        if travel is not None:
            new["travel"] = dict(travel)
        out.append(new)
    return out
