"""What the Maps client returns: small frozen values, free of any wire format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PlaceKind = Literal["address", "poi", "locality"]
Confidence = Literal["high", "medium", "low"]


@dataclass(frozen=True, slots=True)
class GeoPoint:
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Place:
    """A geocoded place; `country_code` (ISO 3166-1 alpha-2) decides whether a meeting is abroad."""

    point: GeoPoint
    label: str
    country_code: str | None
    kind: PlaceKind
    confidence: Confidence


@dataclass(frozen=True, slots=True)
class EvParams:
    """An electric car's charge and consumption; the remaining charge is computed from these."""

    current_kwh: float
    max_kwh: float
    consumption_kwh_per_100km: float


@dataclass(frozen=True, slots=True)
class Route:
    """One driving route. Times are canonical UTC strings (shared.device_messages.canonical_time); `points` is the
    route's path decimated to at most MAX_ROUTE_POINTS; `remaining_kwh` only for an EV (may be negative: the
    charge runs out before arrival)."""

    length_m: int
    travel_s: int
    traffic_delay_s: int
    departure: str
    arrival: str
    points: tuple[GeoPoint, ...]
    remaining_kwh: float | None = None


@dataclass(frozen=True, slots=True)
class ChargingStop:
    name: str
    point: GeoPoint
    address: str | None
    detour_s: int | None


MAX_ROUTE_POINTS = 200


def decimate(points: list[GeoPoint], limit: int = MAX_ROUTE_POINTS) -> tuple[GeoPoint, ...]:
    """At most `limit` points, evenly spaced, always keeping the first and the last."""
    if len(points) <= limit:
        return tuple(points)
    step = (len(points) - 1) / (limit - 1)
    return tuple(points[round(i * step)] for i in range(limit))
