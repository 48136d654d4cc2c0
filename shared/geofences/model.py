"""A geofence and its parts, parsed from outside input: the API's body, or the document the store holds.

    parse_geofence(raw, geofence_id="depot", scope=FleetScope("acme", "north"))  -> Geofence

`raw` is JSON as sent: every field is checked here (types, ranges, a GeoJSON Polygon's rings) and a problem is an
`InvalidRequestError` listing each bad field, never anything else (the hypothesis tests feed it arbitrary JSON).
Shapes: `{"type": "Circle", "center": [lon, lat], "radiusM": 250}` or a GeoJSON Polygon
`{"type": "Polygon", "coordinates": [[[lon, lat], ...], <holes>...]}` (closed rings, at most MAX_VERTICES
vertices in all, longitudes -180..180, latitudes -90..90, no ring of zero area, no ring spanning more than 180 degrees
of longitude: the antimeridian is not supported). Self-intersection is not checked (the even-odd rule still gives an
answer). Shapes are tested and indexed in plain lon/lat, so a circle must not cross the antimeridian either, nor come
within a degree of a pole (its bounding box beyond latitude 89: geometry.circle_extent).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.errors import InvalidRequestError
from shared.geofences import geometry as geo
from shared.json_numbers import finite_float

MAX_VERTICES: Final = 1000
MAX_RINGS: Final = 32
MIN_RADIUS_M: Final = 10.0
MAX_RADIUS_M: Final = 100_000.0
MAX_NAME: Final = 100
MAX_WINDOWS: Final = 32
MIN_AREA_DEG2: Final = 1e-12  # ~ 0.01 m²: a ring below it is degenerate (collinear or repeated points)
CURFEW_SPEED_KMH: Final = 5.0  # "movement" during a curfew: above this speed
ID: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOCK: Final = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")


_LAST_OF_MINUTE: Final = dt.timedelta(seconds=59, microseconds=999_999)
_MAX_MINUTES: Final = 1024


@dataclass(frozen=True, slots=True)
class FleetScope:
    brand_id: str
    fleet_id: str


@dataclass(frozen=True, slots=True)
class VehicleScope:
    """A driver's private geofence ("home", "work") for one car; brand and fleet are the car's."""

    vehicle_id: str


Scope = FleetScope | VehicleScope


@dataclass(frozen=True, slots=True)
class Circle:
    lat: float
    lon: float
    radius_m: float
    test: geo.PointTest = field(init=False, compare=False, repr=False)  # compiled with the index

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", geo.CircleTest(self.lat, self.lon, self.radius_m))

    def bbox(self) -> geo.BBox:
        return geo.circle_bbox(self.lat, self.lon, self.radius_m)

    def contains(self, lat: float, lon: float) -> bool:
        return self.test.contains(lat, lon)

    def as_json(self) -> dict[str, Any]:
        return {"type": "Circle", "center": [self.lon, self.lat], "radiusM": self.radius_m}


@dataclass(frozen=True, slots=True)
class Polygon:
    rings: tuple[geo.Ring, ...]  # exterior first, then holes; each flat and closed
    test: geo.PointTest = field(init=False, compare=False, repr=False)  # compiled with the index

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", geo.PolygonTest(self.rings))

    def bbox(self) -> geo.BBox:
        return geo.ring_bbox(self.rings[0])

    def contains(self, lat: float, lon: float) -> bool:
        return self.test.contains(lat, lon)

    def as_json(self) -> dict[str, Any]:
        coordinates = [[[ring[i], ring[i + 1]] for i in range(0, len(ring), 2)] for ring in self.rings]
        return {"type": "Polygon", "coordinates": coordinates}


Shape = Circle | Polygon


@dataclass(frozen=True, slots=True)
class Window:
    """Allowed on these weekdays (0 = Monday) from `start` to `end`, minutes after local midnight."""

    days: frozenset[int]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Curfew:
    """Movement is allowed only inside the windows (local time of `time_zone`); outside them any movement inside
    the geofence raises a `curfew` alert."""

    time_zone: str
    windows: tuple[Window, ...]
    # Answers per UTC minute (`ts[:16]`), kept when the zone's offset is the same whole number of minutes at both
    # ends of that minute (so every time in it has the same local minute); bounded.
    _minutes: dict[str, bool] = field(default_factory=dict, init=False, compare=False, repr=False)

    def allows(self, ts: str) -> bool:
        """Whether a time (ISO 8601; the fold's are canonical UTC, `2026-11-21T08:00:00.000Z`) falls in an allowed
        window. Remembered per minute of canonical times only: another form's first 16 characters are no UTC minute."""
        canonical = len(ts) == 24 and ts[16] == ":" and ts.endswith("Z")
        if canonical:
            known = self._minutes.get(ts[:16])
            if known is not None:
                return known
        utc = _utc(ts)
        zone = _zone(self.time_zone)
        local = utc.astimezone(zone)
        day, minute = local.weekday(), local.hour * 60 + local.minute
        answer = any(day in w.days and w.start <= minute < w.end for w in self.windows)
        if canonical:
            start = utc.replace(second=0, microsecond=0)
            offset = start.astimezone(zone).utcoffset()
            end = (start + _LAST_OF_MINUTE).astimezone(zone).utcoffset()
            if offset is not None and offset == end and offset.total_seconds() % 60 == 0:
                if len(self._minutes) >= _MAX_MINUTES:
                    self._minutes.clear()
                self._minutes[ts[:16]] = answer
        return answer

    def same_all_minute(self, ts: str) -> bool:
        """Whether `allows(ts)`, already asked, answers the same for every time of ts's UTC minute (`ts[:16]`): a
        moving car's answer is remembered for that minute only then (`GeofenceIndex.sub_lookup`)."""
        return len(ts) == 24 and ts[16] == ":" and ts.endswith("Z") and ts[:16] in self._minutes

    def as_json(self) -> dict[str, Any]:
        return {
            "timeZone": self.time_zone,
            "allowed": [
                {"days": [DAYS[d] for d in sorted(w.days)], "start": _clock(w.start), "end": _clock(w.end)}
                for w in self.windows
            ],
        }


@dataclass(frozen=True, slots=True)
class Geofence:
    id: str
    name: str
    shape: Shape
    scope: Scope
    alert_on_enter: bool = False
    alert_on_exit: bool = False
    restricted: bool = False  # entering opens an alert (a `restricted_zone` alert)
    curfew: Curfew | None = None
    # Unique among the geofences one car is evaluated against: a fleet's by id, a car's own prefixed `v:` (a colon
    # is no id character, so a private "home" never meets a fleet's "home"). Set once: read for every sample.
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.id if isinstance(self.scope, FleetScope) else f"v:{self.id}")

    @property
    def alerts_on_enter(self) -> bool:
        return self.alert_on_enter or self.restricted

    def definition(self) -> dict[str, Any]:
        """The geofence as the API shows it and the store keeps it (what `parse_geofence` reads back)."""
        return {
            "name": self.name,
            "shape": self.shape.as_json(),
            "alerts": {"enter": self.alert_on_enter, "exit": self.alert_on_exit},
            "restricted": self.restricted,
            "curfew": self.curfew.as_json() if self.curfew else None,
        }


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, field: str, message: str) -> None:
        if len(self.items) < 20:
            self.items.append({"field": field, "message": message})


def check_id(value: str, field: str = "geofenceId") -> str:
    if not isinstance(value, str) or not ID.match(value):
        raise InvalidRequestError(
            f"{field} must be 1-63 lowercase letters, digits or inner hyphens",
            [{"field": field, "message": "not a slug"}],
        )
    return value


def parse_geofence(raw: object, *, geofence_id: str, scope: Scope) -> Geofence:
    """A geofence from its JSON definition; InvalidRequestError naming every bad field."""
    check_id(geofence_id)
    errors = _Errors()
    if not isinstance(raw, Mapping):
        raise InvalidRequestError("a geofence is a JSON object", [{"field": "body", "message": "not an object"}])
    unknown = sorted(str(k) for k in raw if k not in {"name", "shape", "alerts", "restricted", "curfew"})
    for key in unknown[:5]:
        errors.add(key[:64], "unknown field")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        errors.add("name", f"a non-empty string of at most {MAX_NAME} characters")
        name = ""
    shape = _shape(raw.get("shape"), errors)
    alerts = raw.get("alerts", {})
    enter = exit_ = False
    if not isinstance(alerts, Mapping) or not set(alerts) <= {"enter", "exit"}:
        errors.add("alerts", 'an object {"enter": bool, "exit": bool}')
    else:
        enter, exit_ = alerts.get("enter", False), alerts.get("exit", False)
        if type(enter) is not bool or type(exit_) is not bool:
            errors.add("alerts", "enter and exit are booleans")
    restricted = raw.get("restricted", False)
    if type(restricted) is not bool:
        errors.add("restricted", "a boolean")
    curfew_raw = raw.get("curfew")
    curfew = _curfew(curfew_raw, errors) if curfew_raw is not None else None
    if errors.items or shape is None:
        raise InvalidRequestError("invalid geofence", errors.items or [{"field": "shape", "message": "required"}])
    return Geofence(geofence_id, name.strip(), shape, scope, bool(enter), bool(exit_), bool(restricted), curfew)


def _number(value: object) -> float | None:
    return finite_float(value)


def _position(value: object, errors: _Errors, field: str) -> tuple[float, float] | None:
    """A GeoJSON position [lon, lat] (an altitude is allowed and ignored)."""
    if not isinstance(value, list) or len(value) not in (2, 3):
        errors.add(field, "a position [longitude, latitude]")
        return None
    lon, lat = _number(value[0]), _number(value[1])
    if lon is None or lat is None or not -180 <= lon <= 180 or not -90 <= lat <= 90:
        errors.add(field, "longitude -180..180 and latitude -90..90, finite numbers")
        return None
    return lon, lat


def _shape(raw: object, errors: _Errors) -> Shape | None:
    if not isinstance(raw, Mapping):
        errors.add("shape", 'a Circle {"type": "Circle", "center": [lon, lat], "radiusM": m} or a GeoJSON Polygon')
        return None
    kind = raw.get("type")
    if kind == "Circle":
        if not set(raw) <= {"type", "center", "radiusM"}:
            errors.add("shape", "a Circle has type, center and radiusM only")
        center = _position(raw.get("center"), errors, "shape.center")
        radius = _number(raw.get("radiusM"))
        if radius is None or not MIN_RADIUS_M <= radius <= MAX_RADIUS_M:
            errors.add("shape.radiusM", f"metres, {MIN_RADIUS_M:g} to {MAX_RADIUS_M:g}")
            return None
        if center is None:
            return None
        # tested and indexed in plain lon/lat, as polygons: a circle must not wrap around (geometry.circle_extent)
        south, west, north, east = geo.circle_extent(center[1], center[0], radius)
        if south < -geo.CIRCLE_MAX_LAT or north > geo.CIRCLE_MAX_LAT:
            errors.add("shape", f"comes within {90 - geo.CIRCLE_MAX_LAT:g} degree of a pole (not supported)")
            return None
        if west < -180 or east > 180:
            errors.add("shape", "crosses the antimeridian, 180 degrees of longitude (not supported)")
            return None
        return Circle(center[1], center[0], radius)
    if kind == "Polygon":
        return _polygon(raw, errors)
    errors.add("shape.type", "Circle or Polygon")
    return None


def _polygon(raw: Mapping[str, Any], errors: _Errors) -> Polygon | None:
    if not set(raw) <= {"type", "coordinates", "bbox"}:
        errors.add("shape", "a GeoJSON Polygon has type and coordinates")
    coordinates = raw.get("coordinates")
    if not isinstance(coordinates, list) or not coordinates or len(coordinates) > MAX_RINGS:
        errors.add("shape.coordinates", f"1 to {MAX_RINGS} linear rings")
        return None
    total = sum(len(r) if isinstance(r, list) else 0 for r in coordinates)
    if total > MAX_VERTICES + len(coordinates):  # each ring repeats its first position
        errors.add("shape.coordinates", f"at most {MAX_VERTICES} vertices")
        return None
    rings: list[geo.Ring] = []
    for r, ring in enumerate(coordinates):
        field = f"shape.coordinates[{r}]"
        if not isinstance(ring, list) or len(ring) < 4:
            errors.add(field, "a linear ring: at least 4 positions, the last equal to the first")
            return None
        flat: list[float] = []
        for p, position in enumerate(ring):
            point = _position(position, errors, f"{field}[{p}]")
            if point is None:
                return None
            flat.extend(point)
        if flat[0] != flat[-2] or flat[1] != flat[-1]:
            errors.add(field, "not closed: the last position must equal the first")
            return None
        flat_ring = tuple(flat)
        if abs(geo.ring_area(flat_ring)) < MIN_AREA_DEG2:
            errors.add(field, "degenerate: the ring encloses no area")
            return None
        box = geo.ring_bbox(flat_ring)
        if box[3] - box[1] > 180:
            errors.add(field, "spans more than 180 degrees of longitude (the antimeridian is not supported)")
            return None
        rings.append(flat_ring)
    return Polygon(tuple(rings))


def _curfew(raw: object, errors: _Errors) -> Curfew | None:
    if not isinstance(raw, Mapping) or not set(raw) <= {"timeZone", "allowed"}:
        errors.add("curfew", 'an object {"timeZone": IANA name, "allowed": [windows]}')
        return None
    zone = raw.get("timeZone")
    if not isinstance(zone, str) or not _valid_zone(zone):
        errors.add("curfew.timeZone", "an IANA time zone name (Europe/Berlin)")
        return None
    allowed = raw.get("allowed")
    if not isinstance(allowed, list) or len(allowed) > MAX_WINDOWS:
        errors.add("curfew.allowed", f"a list of at most {MAX_WINDOWS} windows")
        return None
    windows: list[Window] = []
    for i, item in enumerate(allowed):
        field = f"curfew.allowed[{i}]"
        if not isinstance(item, Mapping) or set(item) != {"days", "start", "end"}:
            errors.add(field, 'an object {"days": ["mon", ...], "start": "HH:MM", "end": "HH:MM"}')
            return None
        days, start, end = item["days"], item["start"], item["end"]
        if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
            errors.add(f"{field}.days", "a non-empty list of mon tue wed thu fri sat sun")
            return None
        if not isinstance(start, str) or not isinstance(end, str) or not CLOCK.match(start) or not CLOCK.match(end):
            errors.add(field, "start and end are HH:MM (end may be 24:00)")
            return None
        lo, hi = _minutes(start), _minutes(end)
        if lo >= hi:
            errors.add(field, "start before end (split a window over midnight in two)")
            return None
        windows.append(Window(frozenset(DAYS.index(d) for d in days), lo, hi))
    return Curfew(zone, tuple(windows))


@cache
def _valid_zone(name: str) -> bool:
    if len(name) > 64 or ".." in name or name.startswith("/"):
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _utc(ts: str) -> dt.datetime:
    return dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
