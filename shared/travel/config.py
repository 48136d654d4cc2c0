"""The travel planner's settings, validated once per process (names and defaults: shared/settings.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from shared.settings import number_setting as number


@dataclass(frozen=True)
class TravelSettings:
    """Why each knob exists: Azure Maps bills per transaction, so the planner routes only when a figure could
    have changed, within a per-car hourly budget."""

    routes_per_car_per_hour: int = 12  # route + charging-station searches, per car, sliding hour
    recompute_km: float = 2.0  # moved this far since the event's last route: route again
    max_events: int = 3  # only the next meetings with a place
    parking: dt.timedelta = dt.timedelta(minutes=5)  # leaveBy leaves this much to park and walk in
    horizon: dt.timedelta = dt.timedelta(hours=12)  # meetings starting later get no travel yet
    near: dt.timedelta = dt.timedelta(minutes=30)  # a meeting this close is refreshed every `near_refresh`
    near_refresh: dt.timedelta = dt.timedelta(minutes=5)
    reserve_fraction: float = 0.10  # reachable: this share of the usable capacity is left on arrival
    transient_backoff: dt.timedelta = dt.timedelta(minutes=5)  # no Maps call for this long after a 5xx
    place_ttl_seconds: int = 8 * 24 * 3600  # geocoded places outlive the 7-day calendar window

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TravelSettings:
        return cls(
            routes_per_car_per_hour=int(number("TRAVEL_ROUTES_PER_CAR_PER_HOUR", environ)),
            recompute_km=number("TRAVEL_RECOMPUTE_KM", environ),
            max_events=int(number("TRAVEL_MAX_EVENTS", environ)),
            parking=dt.timedelta(minutes=number("TRAVEL_PARKING_MINUTES", environ)),
        )
