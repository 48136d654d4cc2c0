"""Where a meeting is: its coordinates, a geocoded location text, or no place at all (online-only, none).

Graph's `location.displayName` is free text typed by people: "Microsoft Teams Meeting", a Zoom link, "Room 4",
an address. Classification is pure and never raises (a property test feeds it arbitrary input); only text that
could name a place costs a geocode, cached per event and text so an unchanged event is geocoded once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from shared.json_numbers import finite_float
from shared.maps.base import MapsClient
from shared.maps.types import GeoPoint, Place
from shared.travel.stores import PlaceCache

DestinationKind = Literal["point", "query", "online_only", "no_location", "not_found"]
TEXT_MAX: Final = 256  # Graph allows more; nobody's address is longer, and the geocode query stays small
LABEL_MAX: Final = 80

_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|www\.)\S*$", re.IGNORECASE)
# Location texts Outlook, Teams, Zoom, Webex and Meet write for a meeting without a room.
_ONLINE = re.compile(
    r"^(?:microsoft\s+teams(?:\s+meeting)?|teams(?:\s+meeting)?|skype(?:\s+for\s+business)?(?:\s+meeting)?"
    r"|zoom(?:\s+meeting)?|webex(?:\s+meeting)?|google\s+meet|online(?:\s+meeting)?|virtual|remote)$",
    re.IGNORECASE,
)
_SEPARATORS = re.compile(r"\s*[;|]\s*")


@dataclass(frozen=True, slots=True)
class Destination:
    """What an agenda item says about its place: `point` (coordinates), `query` (text to geocode), or why
    there is no place to drive to."""

    kind: DestinationKind
    point: GeoPoint | None = None
    text: str | None = None


def normalise_text(value: object) -> str:
    """The location text as geocoded and hashed: whitespace collapsed, control characters dropped, capped."""
    if not isinstance(value, str):
        return ""
    cleaned = "".join(c if c.isprintable() else " " for c in value)
    return " ".join(cleaned.split())[:TEXT_MAX]


def _coordinate(value: object, bound: float) -> float | None:
    number = finite_float(value)
    return number if number is not None and -bound <= number <= bound else None


def point_of(coordinates: object) -> GeoPoint | None:
    """Graph's `location.coordinates` as the calendar stores them (`{"lat", "lon"}`), when valid. (0, 0) is the
    Gulf of Guinea, which Graph writes for "no coordinates" more often than anyone meets there."""
    if not isinstance(coordinates, Mapping):
        return None
    lat, lon = _coordinate(coordinates.get("lat"), 90), _coordinate(coordinates.get("lon"), 180)
    if lat is None or lon is None or (lat == 0 and lon == 0):
        return None
    return GeoPoint(lat, lon)


def _is_online_text(text: str) -> bool:
    parts = [p for p in _SEPARATORS.split(text) if p]
    return bool(parts) and all(_URL.match(p) or _ONLINE.match(p) for p in parts)


def classify(item: Mapping[str, Any]) -> Destination:
    """The destination of an agenda item or calendar event document (`coordinates`, `location`,
    `isOnlineMeeting`, `joinUrl`). Never raises."""
    point = point_of(item.get("coordinates"))
    if point is not None:
        return Destination("point", point=point)
    text = normalise_text(item.get("location"))
    online = bool(item.get("isOnlineMeeting")) or bool(item.get("joinUrl"))
    if not text:
        return Destination("online_only" if online else "no_location")
    if _is_online_text(text):
        return Destination("online_only")
    if not any(c.isalnum() for c in text):
        return Destination("not_found", text=text)  # punctuation only: nothing a geocoder could match
    return Destination("query", text=text)


def place_key(event_id: str, text: str) -> str:
    """The cache key of a geocode: the event and its location text (an edited location is geocoded again)."""
    return hashlib.sha256(f"{event_id}\x1f{text}".encode()).hexdigest()[:32]


def destination_json(place: Place) -> dict[str, Any]:
    """The compact `travel.destination` the car navigates to."""
    return {"lat": round(place.point.lat, 5), "lon": round(place.point.lon, 5), "label": place.label[:LABEL_MAX]}


@dataclass(frozen=True, slots=True)
class Resolved:
    """A destination resolved to a place, or why not (`unavailable`); `geocoded` says a Maps call was made."""

    place: Place | None
    unavailable: str | None
    geocoded: bool = False


async def resolve(
    item: Mapping[str, Any],
    user_id: str,
    maps: MapsClient,
    cache: PlaceCache,
    ttl_seconds: int,
    may_geocode: bool = True,
) -> Resolved | None:
    """The item's place: its coordinates, else its location text geocoded (cached, found or not); None only
    when the text is not cached and `may_geocode` is False (a Maps back-off). MapsError propagates: the
    planner decides between stale figures and maps_unavailable."""
    destination = classify(item)
    if destination.kind == "point" and destination.point is not None:
        label = normalise_text(item.get("location")) or f"{destination.point.lat:.5f},{destination.point.lon:.5f}"
        return Resolved(Place(destination.point, label, None, "address", "high"), None)
    if destination.kind != "query" or destination.text is None:
        return Resolved(None, destination.kind)
    # the Graph event id: an agenda item's `id`, a stored event document's `eventId` (its `id` is the document's)
    key = place_key(str(item.get("eventId") or item.get("id") or ""), destination.text)
    cached = await cache.get(user_id, key)
    if cached is not None:
        return Resolved(cached.place, None if cached.place else "not_found")
    if not may_geocode:
        return None
    place = await maps.geocode(destination.text)
    await cache.put(user_id, key, place, ttl_seconds)
    return Resolved(place, None if place else "not_found", geocoded=True)
