"""When a car's travel to its driver's meetings is worth recomputing (calendar-aware driving, shared/travel).

Ingestion asks once per committed fold, with the document it is about to write: a car with a driver is due when
it started a trip, moved more than `recompute_km` since the last ping, or `every` has passed since it (so a
meeting that draws near is seen while the car reports). The ping (`travelPing`: position, trip, time) is written
with the document ingestion writes anyway: no extra write. What is due is a calendar job of reason "travel" for
the driver, which rebuilds the agenda from the stored calendar without calling Graph; the travel planner then
decides whether a route is worth a Maps call (its budget and rules), so a ping costs no Maps transaction by
itself.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any, Final

from shared.telemetry import signals as S

PING: Final = "travelPing"
EARTH_KM: Final = 6371.0


def distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    (lat1, lon1), (lat2, lon2) = (tuple(map(math.radians, p)) for p in (a, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def travel_due(doc: dict[str, Any], now: dt.datetime, recompute_km: float, every: dt.timedelta) -> str | None:
    """The driver's user id when the car's travel is due (and `doc[PING]` updated), else None."""
    driver = doc.get("driver")
    user = driver.get("userId") if isinstance(driver, Mapping) else None
    if not isinstance(user, str) or not user:
        return None
    state = doc.get("state")
    signals = state.get("signals") if isinstance(state, Mapping) else None
    if not isinstance(signals, Mapping):
        return None
    lat, lon = (_value(signals, path) for path in (S.LATITUDE, S.LONGITUDE))
    if lat is None or lon is None:  # no position (or withheld: no location consent): nothing to route from
        return None
    trip = doc.get("trip")
    trip_id = trip.get("id") if isinstance(trip, Mapping) and trip.get("status") == "open" else None
    at = now.astimezone(dt.UTC).isoformat(timespec="seconds")
    ping = doc.get(PING)
    if isinstance(ping, Mapping):
        try:
            moved = distance_km((float(ping["lat"]), float(ping["lon"])), (lat, lon))
            age = now - dt.datetime.fromisoformat(str(ping["at"]))
        except (KeyError, TypeError, ValueError):
            moved, age = recompute_km + 1, every
        if ping.get("trip") == trip_id and moved <= recompute_km and age < every:
            return None
    doc[PING] = {"lat": lat, "lon": lon, "trip": trip_id, "at": at}
    return user


def _value(signals: Mapping[str, Any], path: str) -> float | None:
    entry = signals.get(path)
    value = entry.get("value") if isinstance(entry, Mapping) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
