"""A spatial index of one fleet's geofences: a uniform grid of cells, so a position is tested only against the
geofences whose boundary passes through its cell.

Each geofence is listed in the cells its bounding box covers (cells of CELL_DEGREES, ~1.1 km of latitude), and
when the index is built each of those cells is classified against the shape: covered whole (every point of the cell
is inside: listed without a test), missed whole (not listed) or crossed by the boundary (listed with its bounding
box, tested per position). So a lookup is one dict read, and only positions in a cell a boundary crosses take the
bounding-box and exact tests (haversine or ray casting). Most cells of a fleet are in no geofence or wholly inside
some: for them the index also holds the tokens a sample there is inside (`answers`, one shared tuple per cell), so
the fold's usual lookup is that one dict read. A geofence larger than MAX_CELLS cells goes to a short list tested
by bounding box first (and the answers are not used). The answer is the same as testing every geofence
(property-tested against brute force).

Classifying a cell is exact, with margins far above rounding: a cell is taken as the rectangle its positions map
to, grown by MARGIN_DEGREES; a polygon covers or misses it when no edge of any ring comes within that margin (then
every position in it has the same even-odd answer, the one of its centre, and ray casting computes it without
error: a position is further than the margin from every edge); a circle covers it when the largest haversine
distance from the centre to the rectangle is below the radius (1 - RADIUS_MARGIN), misses it when the smallest is
above the radius (1 + RADIUS_MARGIN) (both bounded from the rectangle's latitude and longitude ranges).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from shared.geofences.geometry import EARTH_RADIUS_M, BBox, PointTest, Ring
from shared.geofences.model import CURFEW_SPEED_KMH, Circle, Geofence, Polygon

CELL_DEGREES: Final = 0.01
MAX_CELLS: Final = 4096
LON_CELLS: Final = 40_000  # > 360 / CELL_DEGREES: row stride of a cell key
FINE: Final = 4  # a cell a boundary crosses is also classified in FINE x FINE sub-cells
FINE_DEGREES: Final = CELL_DEGREES / FINE
FINE_LON_CELLS: Final = LON_CELLS * FINE
# Tokens per sample (overlapping geofences, their curfews): those of the first geofences by key that fit, one with a
# curfew taking two places whether its curfew applies or not (`kept`), so which geofences a sample names depends on
# its position only: a car starting to move in nested curfew zones does not lose one of them.
MAX_INSIDE: Final = 8
CURFEW: Final = "!curfew"  # a geofence's key + this: moving inside it outside its curfew's allowed windows
MARGIN_DEGREES: Final = 1e-9  # ~0.1 mm: far above the rounding of a cell key or of ray casting (~1e-13 degrees)
RADIUS_MARGIN: Final = 1e-7
_LON_CELLS: Final = LON_CELLS

Entry = tuple[BBox, Geofence]
Cell = tuple[tuple[Geofence, ...], tuple[Entry, ...]]  # covering the whole cell (by key), crossing it (by key)
Tokens = tuple[str, ...]
NO_TOKENS: Final[Tokens] = ()
# How long a lookup's answer holds for the next position of the same car (`GeofenceIndex.sub_lookup`,
# `geofencing.lookup`): anywhere in the same sub-cell; near the same position (within its reach in the sub-cell,
# `GeofenceIndex.reach`); near it while not moving.
IN_SUB_CELL: Final = 0
AT_POSITION: Final = 1
AT_REST: Final = 2
MOVING_THIS_MINUTE: Final = 3
MEMO_CARS: Final = 65_536  # cars remembered per index (`GeofenceIndex.last`); beyond, it starts again
# A sub-cell with no shared answer: the geofences covering it whole and those whose boundary crosses it (both by
# key), the tokens of a position in it that none of the crossing ones contains and that is not moving (or of no
# curfew), and whether any of them has a curfew.
SubCell = tuple[tuple[Geofence, ...], tuple[tuple[PointTest, Geofence], ...], Tokens, bool]  # crossing: with tests


class Remembered:
    """A car's last lookup (`geofencing.lookup`): the sub-cell key, how long the answer holds, the position, how far
    from it the answer holds (`reach`, degrees each way: 0.0 only there), the tokens, and for a moving car's answer
    with curfews the UTC minute it was given in (`minute`, `ts[:16]`). One object per car, updated in place:
    compiled, its numbers are fields of the object itself, so the fold's check on every message reads one object (a
    tuple of boxed numbers read four)."""

    __slots__ = ("fine_key", "holds", "lat", "lon", "minute", "reach", "tokens")

    def __init__(
        self, fine_key: int, holds: int, lat: float, lon: float, reach: float, tokens: Tokens, minute: str = ""
    ) -> None:
        self.fine_key = fine_key
        self.holds = holds
        self.lat = lat
        self.lon = lon
        self.reach = reach
        self.tokens = tokens
        self.minute = minute

    def answer(self, fine_key: int, lat: float, lon: float, speed: float | None, ts: str) -> Tokens | None:
        """The tokens for the car's next position if this answer still holds there, else None: anywhere in the same
        sub-cell, or within `reach` of the position in it; when a curfew is involved, only while not moving, or
        while moving in the same UTC minute (a curfew's answer is the same all minute: `Curfew.same_all_minute`)."""
        if fine_key != self.fine_key:
            return None
        holds = self.holds
        if holds == IN_SUB_CELL:
            return self.tokens
        reach = self.reach
        if abs(lat - self.lat) > reach or abs(lon - self.lon) > reach:
            return None
        if holds == AT_POSITION:
            return self.tokens
        moving = speed is not None and speed > CURFEW_SPEED_KMH
        if holds == AT_REST:
            return None if moving else self.tokens
        # moving, with curfews: the same minute of canonical UTC time (`...T08:00:00.000Z`), as it was given in
        if moving and len(ts) == 24 and ts[23] == "Z" and ts.startswith(self.minute):
            return self.tokens
        return None


def _cell(value: float) -> int:
    return math.floor(value / CELL_DEGREES)


def cell_key(lat: float, lon: float) -> int:
    """The key of the cell a position is in (the fold inlines this)."""
    return math.floor(lat / CELL_DEGREES) * LON_CELLS + math.floor(lon / CELL_DEGREES)


class GeofenceIndex:
    """The geofences one car is evaluated against, found by position."""

    __slots__ = ("_cells", "_large", "_subs", "answers", "by_key", "fine", "geofences", "last")

    def __init__(self, geofences: Iterable[Geofence]) -> None:
        self.geofences: tuple[Geofence, ...] = tuple(sorted(geofences, key=lambda g: g.key))
        self.by_key: dict[str, Geofence] = {g.key: g for g in self.geofences}
        full: dict[int, list[Geofence]] = {}
        partial: dict[int, list[Entry]] = {}
        large: list[Entry] = []
        for fence in self.geofences:  # by key: so is every cell's list
            box = fence.shape.bbox()
            lat0, lon0, lat1, lon1 = _cell(box[0]), _cell(box[1]), _cell(box[2]), _cell(box[3])
            if (lat1 - lat0 + 1) * (lon1 - lon0 + 1) > MAX_CELLS:
                large.append((box, fence))
                continue
            for key, covered in _classify(fence, lat0, lon0, lat1, lon1, CELL_DEGREES, LON_CELLS):
                if covered:
                    full.setdefault(key, []).append(fence)
                else:
                    partial.setdefault(key, []).append((box, fence))
        self._cells: dict[int, Cell] = {
            key: (tuple(full.get(key, ())), tuple(partial.get(key, ()))) for key in full.keys() | partial.keys()
        }
        self._large: tuple[Entry, ...] = tuple(large)
        # Per cell, the tokens of a sample there when they do not depend on the position (no boundary crosses the
        # cell), the speed or the time (no curfew); None: ask `fine`. A cell not listed: in none.
        shared: dict[Tokens, Tokens] = {}
        answers: dict[int, Tokens | None] = {}
        for key, (covering, crossing) in self._cells.items():
            answers[key] = None if crossing else _tokens(covering, shared)
        # The same for the sub-cells of each cell a boundary crosses (`fine`): the cell's covering geofences and
        # those covering the sub-cell whole. The others (a boundary crosses them too, or a curfew is involved) get
        # their lists (`_subs`, read by `sub_tokens`): what covers them, what crosses them (to test).
        fine_full: dict[int, list[Geofence]] = {}
        fine_crossed: dict[int, list[Geofence]] = {}
        for fence in {id(fence): fence for _, crossing in self._cells.values() for _, fence in crossing}.values():
            box = fence.shape.bbox()
            lat0, lon0, lat1, lon1 = _fine(box[0]), _fine(box[1]), _fine(box[2]), _fine(box[3])
            for key, covered in _classify(fence, lat0, lon0, lat1, lon1, FINE_DEGREES, FINE_LON_CELLS):
                (fine_full if covered else fine_crossed).setdefault(key, []).append(fence)
        fine: dict[int, Tokens | None] = {}
        subs: dict[int, SubCell] = {}
        same: dict[tuple[Tokens, Tokens], SubCell] = {}  # one SubCell per distinct pair of lists (most repeat)
        for key, (covering, crossing) in self._cells.items():
            if not crossing:
                continue
            listed = {id(fence) for _, fence in crossing}
            i, j = divmod(key + LON_CELLS // 2, LON_CELLS)
            j -= LON_CELLS // 2
            for fi in range(i * FINE, (i + 1) * FINE):
                for fj in range(j * FINE, (j + 1) * FINE):
                    fkey = fi * FINE_LON_CELLS + fj
                    inner = [f for f in fine_full.get(fkey, ()) if id(f) in listed]
                    crossed = [f for f in fine_crossed.get(fkey, ()) if id(f) in listed]
                    fences = tuple(sorted((*covering, *inner), key=_by_key)) if inner else covering
                    tokens = None if crossed else _tokens(fences, shared)
                    if tokens is not None:
                        fine[fkey] = tokens
                    else:
                        crossed.sort(key=_by_key)
                        lists = (tuple(f.key for f in fences), tuple(f.key for f in crossed))
                        sub = same.get(lists)
                        if sub is None:
                            sub = same[lists] = _sub_cell(fences, crossed, shared)
                        subs[fkey] = sub
        self.answers = answers
        self.fine = fine
        self._subs = subs  # also filled on first use, for the sub-cells of a cell a curfew covers whole
        # Per car, its last lookup (`geofencing.lookup`): a car's next position is usually in the same sub-cell.
        # Made with the index, so a change of the fleet's geofences starts afresh.
        self.last: dict[str, Remembered] = {}

    def __bool__(self) -> bool:
        return bool(self.geofences)

    def __len__(self) -> int:
        return len(self.geofences)

    def containing(self, lat: float, lon: float) -> list[Geofence]:
        """The geofences the position is in, ordered by key."""
        cell = self._cells.get(math.floor(lat / CELL_DEGREES) * _LON_CELLS + math.floor(lon / CELL_DEGREES))
        if cell is not None:
            covering, crossing = cell
            found = list(covering)
            tested = False
            for box, fence in crossing:
                if box[0] <= lat <= box[2] and box[1] <= lon <= box[3] and fence.shape.test.contains(lat, lon):
                    found.append(fence)
                    tested = True
            if tested and covering:
                found.sort(key=_by_key)
        else:
            found = []
        if self._large:
            for box, fence in self._large:
                if box[0] <= lat <= box[2] and box[1] <= lon <= box[3] and fence.shape.test.contains(lat, lon):
                    found.append(fence)
            if len(found) > 1:
                found.sort(key=_by_key)
        return found

    def sub_tokens(self, fine_key: int, lat: float, lon: float, speed: float | None, ts: str) -> Tokens:
        """The tokens of a position whose cell and sub-cell (`fine_key`) have no shared answer, for a car whose
        answers are the fleet's (no private geofence, no large one): only the geofences whose boundary crosses the
        sub-cell are tested (usually one; the lists of a sub-cell in a cell no boundary crosses are made on its
        first lookup). The same as `geofencing.tested` (property-tested)."""
        return self.sub_lookup(fine_key, lat, lon, speed, ts)[0]

    def sub_lookup(
        self, fine_key: int, lat: float, lon: float, speed: float | None, ts: str
    ) -> tuple[Tokens, int | None]:
        """`sub_tokens`, and for how long the answer holds (`geofencing.lookup` remembers it): AT_POSITION (near
        the same position, `reach`, at any speed and time: no curfew involved), AT_REST (near it while not moving:
        a curfew is involved, the car is not moving), MOVING_THIS_MINUTE (near it while moving in ts's UTC minute:
        every curfew involved answers alike all that minute) or None (speed and time decide)."""
        sub = self._subs.get(fine_key)
        if sub is None:
            sub = self._subs[fine_key] = self._sub_cell(math.floor(lat / FINE_DEGREES), math.floor(lon / FINE_DEGREES))
        covering, crossing, plain, curfews = sub
        found: tuple[Geofence, ...] | list[Geofence] = covering
        if crossing:
            hits = [fence for test, fence in crossing if test.contains(lat, lon)]
            if hits:
                found = sorted((*covering, *hits), key=_by_key) if covering else hits
        moving = curfews and speed is not None and speed > CURFEW_SPEED_KMH
        holds = AT_REST if curfews else AT_POSITION
        if found is covering and not moving:
            return plain, holds
        if not moving:
            return tuple([fence.key for fence in kept(found)]), holds
        listed: list[str] = []
        minute_long = len(ts) == 24 and ts[23] == "Z"  # canonical UTC time: `Remembered.answer` compares its minute
        for fence in kept(found):  # geofencing.tested's tokens
            listed.append(fence.key)
            curfew = fence.curfew
            if curfew is not None:
                if not curfew.allows(ts):
                    listed.append(fence.key + CURFEW)
                minute_long = minute_long and curfew.same_all_minute(ts)
        listed.sort()
        return tuple(listed), MOVING_THIS_MINUTE if minute_long else None

    def reach(self, fine_key: int, lat: float, lon: float) -> float:
        """How far (degrees each way) a position in a sub-cell with no shared answer may move within it with the
        same geofences containing it: the least reach of the geofences whose boundary crosses it (`sub_lookup`
        made the sub-cell's lists). 0.0 on or near a boundary."""
        sub = self._subs.get(fine_key)
        if sub is None:
            return 0.0
        fi, fj = math.floor(lat / FINE_DEGREES), math.floor(lon / FINE_DEGREES)
        lat0, lat1 = _bounds(fi, FINE_DEGREES)
        lon0, lon1 = _bounds(fj, FINE_DEGREES)
        area = (lat0, lon0, lat1, lon1)
        reach = math.inf
        for test, _ in sub[1]:
            value = test.reach(lat, lon, area)
            if value < reach:
                reach = value
        return reach

    def _sub_cell(self, fi: int, fj: int) -> SubCell:
        """A sub-cell's lists from its cell's (those of crossed cells are made with the index): each geofence
        crossing the cell classified against the sub-cell (a position there is within the margin of both
        rectangles, so what misses the cell misses it)."""
        cell = self._cells.get((fi // FINE) * LON_CELLS + fj // FINE)
        if cell is None:
            return (), (), NO_TOKENS, False
        covering, crossing = cell
        inner: list[Geofence] = []
        crossed: list[Geofence] = []
        for _, fence in crossing:
            for _, covered in _classify(fence, fi, fj, fi, fj, FINE_DEGREES, FINE_LON_CELLS):
                (inner if covered else crossed).append(fence)
        whole = tuple(sorted((*covering, *inner), key=_by_key)) if inner else covering
        return _sub_cell(whole, crossed, {})


def kept(found: tuple[Geofence, ...] | list[Geofence]) -> tuple[Geofence, ...] | list[Geofence]:
    """The geofences (by key) a sample inside `found` names: the first whose tokens fit in MAX_INSIDE, one with a
    curfew taking two places (its key and its curfew token, whether the curfew applies now or not)."""
    room = MAX_INSIDE
    for at, fence in enumerate(found):
        room -= 1 if fence.curfew is None else 2
        if room < 0:
            return found[:at]
    return found


def _sub_cell(covering: tuple[Geofence, ...], crossing: list[Geofence], shared: dict[Tokens, Tokens]) -> SubCell:
    plain = tuple([f.key for f in kept(covering)])
    curfews = any(f.curfew is not None for f in covering) or any(f.curfew is not None for f in crossing)
    # each crossing geofence with its test: a position's test reads the test, not the geofence, shape and test
    return covering, tuple([(f.shape.test, f) for f in crossing]), shared.setdefault(plain, plain), curfews


def _by_key(fence: Geofence) -> str:
    return fence.key


def _fine(value: float) -> int:
    return math.floor(value / FINE_DEGREES)


def _tokens(covering: Iterable[Geofence], shared: dict[Tokens, Tokens]) -> Tokens | None:
    """The tokens of a sample inside exactly these geofences (by key), one shared tuple; None with a curfew (the
    speed and the time decide)."""
    fences = tuple(covering)
    if any(f.curfew is not None for f in fences):
        return None
    tokens = tuple(f.key for f in fences[:MAX_INSIDE])  # `kept`: no curfew, one place each
    return shared.setdefault(tokens, tokens)


def _classify(
    fence: Geofence, lat0: int, lon0: int, lat1: int, lon1: int, size: float, stride: int
) -> list[tuple[int, bool]]:
    """The cells (of `size` degrees, keys `i * stride + j`) of the box lat0..lat1 x lon0..lon1 the shape does not
    miss whole: (key, covers it whole)."""
    shape = fence.shape
    if isinstance(shape, Circle):
        return _circle_cells(shape, lat0, lon0, lat1, lon1, size, stride)
    assert isinstance(shape, Polygon)
    return _polygon_cells(shape, lat0, lon0, lat1, lon1, size, stride)


def _bounds(index: int, size: float) -> tuple[float, float]:
    """The rectangle side of a cell index, grown by the margin (every value the cell key maps to it is inside)."""
    return index * size - MARGIN_DEGREES, (index + 1) * size + MARGIN_DEGREES


def _circle_cells(
    circle: Circle, lat0: int, lon0: int, lat1: int, lon1: int, size: float, stride: int
) -> list[tuple[int, bool]]:
    # haversine: a = sin²(dφ/2) + cos φ1 cos φ2 sin²(dλ/2), each term bounded over a row and a column; the circle
    # covers the cell when the largest a is below its radius's, misses it when the smallest is above.
    def sin2(angle_deg: float) -> float:
        return math.sin(math.radians(min(180.0, angle_deg)) / 2) ** 2

    inner = sin2(circle.radius_m * (1 - RADIUS_MARGIN) / EARTH_RADIUS_M * 180 / math.pi)
    outer = sin2(circle.radius_m * (1 + RADIUS_MARGIN) / EARTH_RADIUS_M * 180 / math.pi)
    cos1 = math.cos(math.radians(circle.lat))
    columns: list[tuple[int, float, float]] = []
    for j in range(lon0, lon1 + 1):
        west, east = _bounds(j, size)
        near = 0.0 if west <= circle.lon <= east else min(abs(west - circle.lon), abs(east - circle.lon))
        far = max(abs(west - circle.lon), abs(east - circle.lon))
        columns.append((j, sin2(near), sin2(far)))
    out: list[tuple[int, bool]] = []
    for i in range(lat0, lat1 + 1):
        south, north = _bounds(i, size)
        south, north = max(-90.0, south), min(90.0, north)
        near = 0.0 if south <= circle.lat <= north else min(abs(south - circle.lat), abs(north - circle.lat))
        far = max(abs(south - circle.lat), abs(north - circle.lat))
        cos_south, cos_north = math.cos(math.radians(south)), math.cos(math.radians(north))
        cos_max = 1.0 if south <= 0 <= north else max(cos_south, cos_north)
        cos_min = max(0.0, min(cos_south, cos_north))
        near_lat, far_lat = sin2(near), sin2(far)
        for j, near_lon, far_lon in columns:
            if near_lat + cos1 * cos_min * near_lon > outer:
                continue  # missed whole
            out.append((i * stride + j, far_lat + cos1 * cos_max * far_lon < inner))
    return out


def _polygon_cells(
    polygon: Polygon, lat0: int, lon0: int, lat1: int, lon1: int, size: float, stride: int
) -> list[tuple[int, bool]]:
    crossed: set[int] = set()
    for ring in polygon.rings:
        _mark_edges(ring, lat0, lat1, size, stride, crossed)
    out: list[tuple[int, bool]] = []
    for i in range(lat0, lat1 + 1):
        answer: bool | None = None  # the answer of the cells since the last crossed one (no edge between them)
        for j in range(lon0, lon1 + 1):
            key = i * stride + j
            if key in crossed:
                out.append((key, False))
                answer = None
                continue
            if answer is None:
                answer = polygon.contains((i + 0.5) * size, (j + 0.5) * size)
            if answer:
                out.append((key, True))
    return out


def _mark_edges(ring: Ring, lat0: int, lat1: int, size: float, stride: int, crossed: set[int]) -> None:
    """Every cell (in rows lat0..lat1) an edge of the ring comes within the margin of."""
    for k in range(0, len(ring) - 2, 2):
        x1, y1, x2, y2 = ring[k], ring[k + 1], ring[k + 2], ring[k + 3]
        low, high = math.floor(min(y1, y2) / size) - 1, math.floor(max(y1, y2) / size) + 1
        for i in range(max(lat0, low), min(lat1, high) + 1):
            south, north = _bounds(i, size)
            south, north = south - MARGIN_DEGREES, north + MARGIN_DEGREES
            if max(y1, y2) < south or min(y1, y2) > north:
                continue
            if y1 == y2:
                west, east = min(x1, x2), max(x1, x2)
            else:  # the part of the edge inside the row's latitudes
                t_a = min(1.0, max(0.0, (south - y1) / (y2 - y1)))
                t_b = min(1.0, max(0.0, (north - y1) / (y2 - y1)))
                xa, xb = x1 + (x2 - x1) * t_a, x1 + (x2 - x1) * t_b
                west, east = min(xa, xb), max(xa, xb)
            west, east = west - 2 * MARGIN_DEGREES, east + 2 * MARGIN_DEGREES
            for j in range(math.floor(west / size), math.floor(east / size) + 1):
                crossed.add(i * stride + j)


def brute_force(geofences: Iterable[Geofence], lat: float, lon: float) -> list[Geofence]:
    """What the index must answer: every geofence tested (the reference of the property test)."""
    return sorted((g for g in geofences if g.shape.contains(lat, lon)), key=lambda g: g.key)


@dataclass(frozen=True, slots=True)
class SpeedLimit:
    """A fleet's speed alert: over `kmh` for longer than `seconds`."""

    kmh: float
    seconds: float


@dataclass(frozen=True, slots=True)
class VehicleGeofences:
    """What the fold evaluates one car against: its fleet's geofences (indexed, shared by the fleet's cars), its
    own private ones (a handful, tested one by one) and the fleet's speed limit."""

    fleet: GeofenceIndex = field(default_factory=lambda: GeofenceIndex(()))
    private: tuple[Geofence, ...] = ()
    speed_limit: SpeedLimit | None = None
    active: bool = field(init=False, compare=False)  # any geofence at all (read once per fold)
    # The fleet's tokens per cell and sub-cell when they are the car's whole answer (no private geofence, no large
    # one), else None.
    answers: dict[int, Tokens | None] | None = field(init=False, compare=False, repr=False)
    fine: dict[int, Tokens | None] = field(init=False, compare=False, repr=False)
    # The fleet's cars' last lookups when the answers are the fleet's (as `answers`), else None.
    last: dict[str, Remembered] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "active", bool(self.fleet.geofences) or bool(self.private))
        plain = not self.private and not self.fleet._large
        object.__setattr__(self, "answers", self.fleet.answers if plain else None)
        object.__setattr__(self, "fine", self.fleet.fine)
        object.__setattr__(self, "last", self.fleet.last if plain else None)

    def __bool__(self) -> bool:
        return self.active

    def containing(self, lat: float, lon: float) -> list[Geofence]:
        found = self.fleet.containing(lat, lon) if self.fleet.geofences else []
        if self.private:
            found.extend(g for g in self.private if g.shape.test.contains(lat, lon))
            found.sort(key=lambda g: g.key)
        return found

    def get(self, key: str) -> Geofence | None:
        fence = self.fleet.by_key.get(key)
        if fence is None and self.private:
            fence = next((g for g in self.private if g.key == key), None)
        return fence


NO_GEOFENCES: Final = VehicleGeofences()
