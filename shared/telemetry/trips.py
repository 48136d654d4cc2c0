"""Trips: one per ignition cycle, opened on ignition ON/START and closed on OFF/LOCK.

The open trip's running figures live in the vehicle document (`trip`), so they cost no extra write per
sample; the `trips` container gets the trip when it opens and when it closes. Ids are deterministic
(vehicle + start time), so a recomputation writes the same document again.

Ignition that flaps must not make a trip per flip (each one is a document): an ignition ON less than
`TRIP_RESUME_SECONDS` after the last trip closed *resumes* that trip (same id, status open again) instead of
opening a new one; and a message may open at most `MAX_TRIPS_OPENED_PER_MESSAGE` trips, a fold (one vehicle
write) at most `MAX_TRIPS_OPENED_PER_FOLD`; further ONs are counted (`ingest.suppressed.trips`), not opened.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Final, cast

from shared.device_messages import compact_time, safe_id
from shared.telemetry import signals as S
from shared.telemetry.documents import Position, SignalValue, TripDocument, untyped

_EARTH_RADIUS_M = 6_371_008.8
_RADIANS: Final = math.pi / 180.0

# A stop shorter than this (ignition OFF, then ON again) continues the trip: a restart at a junction or
# the pump is not a new journey, and a flapping ignition costs one trip instead of one per flip.
TRIP_RESUME_SECONDS: Final = 60.0
MAX_TRIPS_OPENED_PER_MESSAGE: Final = 4  # a message batching minutes of samples holds a stop or two, not more
MAX_TRIPS_OPENED_PER_FOLD: Final = 16
# What `close_trip` adds to the running figures: removed again when a trip resumes.
_CLOSING_FIELDS: Final = (
    "endTs",
    "endPosition",
    "distanceM",
    "distanceSource",
    "durationS",
    "meanSpeedKmh",
    "energyUsedPercent",
)


# Every signal `open_trip` and `advance_trip` read from the view (the state as of the sample being folded):
# the fold snapshots only these. A derivation that reads another signal from the view must add it here.
VIEW_SIGNALS: Final[tuple[str, ...]] = (S.LATITUDE, S.LONGITUDE, S.ODOMETER, S.STATE_OF_CHARGE)


def _position(view: dict[str, SignalValue]) -> Position | None:
    lat, lon = view.get(S.LATITUDE), view.get(S.LONGITUDE)
    if lat is None or lon is None:
        return None
    return {"lat": lat, "lon": lon}


def haversine_m(a: Position, b: Position) -> float:
    # Radians as math.radians computes them (x * (pi / 180), the same float): a native product when compiled,
    # where `math.radians` is a call.
    lat1, lat2 = a["lat"] * _RADIANS, b["lat"] * _RADIANS
    dlat, dlon = lat2 - lat1, (b["lon"] - a["lon"]) * _RADIANS
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def open_trip(vehicle_id: str, ts: str, view: dict[str, SignalValue]) -> TripDocument:
    position = _position(view)
    return {
        "id": f"{safe_id(vehicle_id)}:{compact_time(ts)}",
        "vehicleId": vehicle_id,
        "type": "trip",
        "status": "open",
        "startTs": ts,
        "startPosition": position,
        "startOdometerM": view.get(S.ODOMETER),
        "startSocPercent": view.get(S.STATE_OF_CHARGE),
        "lastTs": ts,
        "lastPosition": position,
        "lastOdometerM": view.get(S.ODOMETER),
        "lastSocPercent": view.get(S.STATE_OF_CHARGE),
        "gpsDistanceM": 0.0,
        "maxSpeedKmh": None,
        "speedSumKmh": 0.0,
        "speedSamples": 0,
    }


def advance_trip(trip: TripDocument, ts: str, sample: dict[str, SignalValue], view: dict[str, SignalValue]) -> None:
    """Fold one sample (in event-time order) into the open trip's running figures."""
    speed = sample.get(S.SPEED)
    if speed is not None:
        trip["speedSumKmh"] += speed
        trip["speedSamples"] += 1
        if trip["maxSpeedKmh"] is None or speed > trip["maxSpeedKmh"]:
            trip["maxSpeedKmh"] = speed
    if S.LATITUDE in sample or S.LONGITUDE in sample:
        position = _position(view)
        if position is not None:
            last = trip["lastPosition"]
            if last is not None:
                trip["gpsDistanceM"] += haversine_m(last, position)
            trip["lastPosition"] = position
            if trip["startPosition"] is None:
                trip["startPosition"] = position
    if S.ODOMETER in sample:
        trip["lastOdometerM"] = sample[S.ODOMETER]
        if trip["startOdometerM"] is None:
            trip["startOdometerM"] = sample[S.ODOMETER]
    if S.STATE_OF_CHARGE in sample:
        trip["lastSocPercent"] = sample[S.STATE_OF_CHARGE]
        if trip["startSocPercent"] is None:
            trip["startSocPercent"] = sample[S.STATE_OF_CHARGE]
    trip["lastTs"] = ts


def close_trip(trip: TripDocument, ts: str) -> TripDocument:
    """The closed trip document: end, distance (odometer, else GPS), duration, speeds, energy used."""
    start, end = dt.datetime.fromisoformat(trip["startTs"]), dt.datetime.fromisoformat(ts)
    odo_start, odo_end = trip["startOdometerM"], trip["lastOdometerM"]
    soc_start, soc_end = trip["startSocPercent"], trip["lastSocPercent"]
    distance = odo_end - odo_start if odo_start is not None and odo_end is not None else trip["gpsDistanceM"]
    closed = trip.copy()
    closed.update(
        {
            "status": "closed",
            "endTs": ts,
            "endPosition": trip["lastPosition"],
            "distanceM": round(float(distance), 1),  # float as declared (an odometer in whole metres is an int)
            "distanceSource": "odometer" if odo_start is not None and odo_end is not None else "gps",
            "durationS": round((end - start).total_seconds(), 3),
            "meanSpeedKmh": round(trip["speedSumKmh"] / trip["speedSamples"], 2) if trip["speedSamples"] else None,
            "energyUsedPercent": (
                round(soc_start - soc_end, 2) if soc_start is not None and soc_end is not None else None
            ),
        }
    )
    return closed


def resume_trip(closed: TripDocument | None, ts: str) -> TripDocument | None:
    """The last closed trip open again, if it closed less than `TRIP_RESUME_SECONDS` before `ts`; else None."""
    if closed is None or untyped(closed).get("status") != "closed":
        return None
    end: Any = untyped(closed).get("endTs")  # any shape: guarded (a compiled fold checks declared types)
    if type(end) is not str or not end < ts:
        return None
    gap = (dt.datetime.fromisoformat(ts) - dt.datetime.fromisoformat(end)).total_seconds()
    if gap >= TRIP_RESUME_SECONDS:
        return None
    # The closed trip without what close_trip added: every one of those fields is NotRequired in TripDocument.
    trip = cast(TripDocument, {key: value for key, value in closed.items() if key not in _CLOSING_FIELDS})
    trip["status"] = "open"
    trip["resumed"] = int(trip.get("resumed") or 0) + 1
    return trip
