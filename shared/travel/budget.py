"""When the planner may call Azure Maps: a per-car budget over a sliding hour, and the triggers that make a
route worth its transaction.

Azure Maps bills per transaction, so a figure is recomputed only when it could have changed: never computed,
the destination changed, the car started (ignition off → on), it moved more than TRAVEL_RECOMPUTE_KM since that
event's last route, or the meeting starts within 30 minutes and the last route is older than 5 minutes; figures
a failure left stale are retried on the next run. The budget counts route and charging-station searches
(TRAVEL_ROUTES_PER_CAR_PER_HOUR, timestamps kept in the car's state, so it is exact over any hour); geocodes are
cached per event and location text, counted apart, and bounded by TRAVEL_MAX_EVENTS.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.device_messages import canonical_time
from shared.maps.types import GeoPoint
from shared.travel.config import TravelSettings

HOUR = dt.timedelta(hours=1)
Reason = Literal["never", "destination", "started", "moved", "near", "stale"]


def parse_utc(value: str) -> dt.datetime:
    """A canonical UTC string (or any ISO time with a zone) as an aware datetime."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)


@dataclass
class TravelBudget:
    """Route-like calls in the last hour (their canonical times) against the per-car limit."""

    limit: int
    calls: list[str] = field(default_factory=list)

    @classmethod
    def from_state(cls, calls: Any, now: dt.datetime, limit: int) -> TravelBudget:
        since = canonical_time(now - HOUR)
        kept = sorted(c for c in calls if isinstance(c, str) and c > since) if isinstance(calls, list) else []
        return cls(limit, kept)

    @property
    def remaining(self) -> int:
        return max(0, self.limit - len(self.calls))

    def take(self, now: dt.datetime) -> bool:
        """Count one call if the budget allows it."""
        if self.remaining <= 0:
            return False
        self.calls.append(canonical_time(now))
        return True


def distance_km(a: GeoPoint, b: GeoPoint) -> float:
    """Great-circle distance (haversine): accurate to well under the recompute threshold."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    dlat, dlon = lat2 - lat1, math.radians(b.lon - a.lon)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def recompute_reason(
    entry: Mapping[str, Any] | None,
    destination_key: str,
    position: GeoPoint,
    start: dt.datetime,
    now: dt.datetime,
    started: bool,
    settings: TravelSettings,
) -> Reason | None:
    """Why this event's route must be computed again now, or None when the kept figures still hold."""
    if not entry or not isinstance(entry.get("routedAt"), str):
        return "never"
    if entry.get("dest") != destination_key:
        return "destination"
    if started:
        return "started"
    origin = entry.get("origin")
    if not isinstance(origin, Mapping) or (
        distance_km(GeoPoint(float(origin["lat"]), float(origin["lon"])), position) > settings.recompute_km
    ):
        return "moved"
    if start - now <= settings.near and now - parse_utc(entry["routedAt"]) > settings.near_refresh:
        return "near"
    if entry.get("stale"):
        return "stale"
    return None
