"""A spatial index of one fleet's geofences: a uniform grid of cells, so a position is tested only against the
geofences whose bounding box touches its cell.

Each geofence is listed in every cell its bounding box covers (cells of CELL_DEGREES, ~1.1 km of latitude); one
larger than MAX_CELLS cells goes to a short list tested by bounding box first. A lookup is one dict read, a
bounding-box test per candidate and the exact test (haversine or ray casting) only for the few left. The answer is
the same as testing every geofence (property-tested against brute force).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from shared.geofences.geometry import BBox
from shared.geofences.model import Geofence

CELL_DEGREES: Final = 0.01
MAX_CELLS: Final = 4096
_LON_CELLS: Final = 40_000  # > 360 / CELL_DEGREES: row stride of a cell key

Entry = tuple[BBox, Geofence]


def _cell(value: float) -> int:
    return math.floor(value / CELL_DEGREES)


class GeofenceIndex:
    """The geofences one car is evaluated against, found by position."""

    __slots__ = ("_cells", "_large", "by_key", "geofences")

    def __init__(self, geofences: Iterable[Geofence]) -> None:
        self.geofences: tuple[Geofence, ...] = tuple(sorted(geofences, key=lambda g: g.key))
        self.by_key: dict[str, Geofence] = {g.key: g for g in self.geofences}
        cells: dict[int, list[Entry]] = {}
        large: list[Entry] = []
        for fence in self.geofences:
            box = fence.shape.bbox()
            lat0, lon0, lat1, lon1 = _cell(box[0]), _cell(box[1]), _cell(box[2]), _cell(box[3])
            if (lat1 - lat0 + 1) * (lon1 - lon0 + 1) > MAX_CELLS:
                large.append((box, fence))
                continue
            for i in range(lat0, lat1 + 1):
                for j in range(lon0, lon1 + 1):
                    cells.setdefault(i * _LON_CELLS + j, []).append((box, fence))
        self._cells: dict[int, tuple[Entry, ...]] = {k: tuple(v) for k, v in cells.items()}
        self._large: tuple[Entry, ...] = tuple(large)

    def __bool__(self) -> bool:
        return bool(self.geofences)

    def __len__(self) -> int:
        return len(self.geofences)

    def containing(self, lat: float, lon: float) -> list[Geofence]:
        """The geofences the position is in, ordered by key."""
        found: list[Geofence] = []
        candidates = self._cells.get(math.floor(lat / CELL_DEGREES) * _LON_CELLS + math.floor(lon / CELL_DEGREES))
        if candidates is not None:
            for box, fence in candidates:
                if box[0] <= lat <= box[2] and box[1] <= lon <= box[3] and fence.shape.contains(lat, lon):
                    found.append(fence)
        if self._large:
            for box, fence in self._large:
                if box[0] <= lat <= box[2] and box[1] <= lon <= box[3] and fence.shape.contains(lat, lon):
                    found.append(fence)
        if len(found) > 1:
            found.sort(key=_by_key)
        return found


def _by_key(fence: Geofence) -> str:
    return fence.key


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "active", bool(self.fleet.geofences) or bool(self.private))

    def __bool__(self) -> bool:
        return self.active

    def containing(self, lat: float, lon: float) -> list[Geofence]:
        found = self.fleet.containing(lat, lon) if self.fleet.geofences else []
        if self.private:
            found.extend(g for g in self.private if g.shape.contains(lat, lon))
            found.sort(key=lambda g: g.key)
        return found

    def get(self, key: str) -> Geofence | None:
        fence = self.fleet.by_key.get(key)
        if fence is None and self.private:
            fence = next((g for g in self.private if g.key == key), None)
        return fence


NO_GEOFENCES: Final = VehicleGeofences()
