"""Point-in-shape tests: haversine distance for circles, even-odd ray casting for polygons with holes.

Coordinates are WGS 84 degrees. Polygons are tested in plain lon/lat (a geofence is a few kilometres at most,
where the difference from a geodesic edge is centimetres); rings are flat tuples `(lon0, lat0, lon1, lat1, ...)`
so the inner loop indexes one tuple.
"""

from __future__ import annotations

import math
from typing import Final

EARTH_RADIUS_M: Final = 6_371_008.8  # mean radius (IUGG)
METRES_PER_DEGREE_LAT: Final = 111_320.0
METRES_PER_DEGREE: Final[float] = EARTH_RADIUS_M * math.pi / 180  # on haversine's sphere
# The flat-earth distance at the mean latitude is within FLAT_MARGIN of haversine's for the circles a geofence may
# be (<= 100 km) away from the poles; points nearer the poles always take haversine.
FLAT_MARGIN: Final = 0.01
FLAT_MAX_LAT: Final = 80.0
# A circle's bounding box must stay within these latitudes (a geofence this near a pole is not supported): up to
# there the box's longitude span, from the cosine at its poleward edge, holds the circle.
CIRCLE_MAX_LAT: Final = 89.0
MAX_BANDS: Final = 64
# A reach (`PointTest.reach`) keeps this far from a boundary: far above the rounding of haversine (~1e-9 m here) and
# of ray casting (~1e-13 degrees), far below what a position can tell (~1 m).
REACH_SLACK_M: Final = 0.001
REACH_SLACK_DEGREES: Final = 1e-9

# (min_lat, min_lon, max_lat, max_lon)
BBox = tuple[float, float, float, float]
Ring = tuple[float, ...]  # flat: lon0, lat0, lon1, lat1, ... (closed: the last pair repeats the first)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def flat_distance2(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Squared equirectangular distance in m² at the mean latitude (close to haversine's for short distances)."""
    dy = (lat2 - lat1) * METRES_PER_DEGREE
    dx = (lon2 - lon1) * METRES_PER_DEGREE * math.cos(math.radians((lat1 + lat2) / 2))
    return dx * dx + dy * dy


def circle_extent(lat: float, lon: float, radius_m: float) -> BBox:
    """A box that contains the circle (a little larger: degrees of longitude shrink towards the poles), unclamped.
    It holds the circle only while it stays within CIRCLE_MAX_LAT and -180..180 of longitude: a box across the
    antimeridian or around a pole would be two boxes or every longitude, and the point tests and the index work in
    plain lon/lat, so parsing rejects such circles (`model._shape`)."""
    dlat = radius_m / METRES_PER_DEGREE_LAT * 1.01
    cos = math.cos(math.radians(min(CIRCLE_MAX_LAT, abs(lat) + dlat)))
    dlon = radius_m / (METRES_PER_DEGREE_LAT * cos) * 1.01
    return (lat - dlat, lon - dlon, lat + dlat, lon + dlon)


def circle_bbox(lat: float, lon: float, radius_m: float) -> BBox:
    """`circle_extent` within the coordinates' ranges (the same box for every circle parsing accepts)."""
    south, west, north, east = circle_extent(lat, lon, radius_m)
    return (max(-90.0, south), max(-180.0, west), min(90.0, north), min(180.0, east))


def ring_bbox(ring: Ring) -> BBox:
    lons, lats = ring[0::2], ring[1::2]
    return (min(lats), min(lons), max(lats), max(lons))


def in_ring(ring: Ring, lat: float, lon: float) -> bool:
    """Even-odd rule: whether the point is inside the closed ring (a point on an edge may go either way)."""
    inside = False
    n = len(ring) - 2  # the closing pair repeats the first
    x1, y1 = ring[0], ring[1]
    for i in range(2, n + 2, 2):
        x2, y2 = ring[i], ring[i + 1]
        if (y1 > lat) != (y2 > lat) and lon < (x2 - x1) * (lat - y1) / (y2 - y1) + x1:
            inside = not inside
        x1, y1 = x2, y2
    return inside


class Edge:
    """One edge of a ring, (x1, y1) to (x2, y2) in lon/lat. Compiled, its coordinates are fields of the object: a
    band's test reads one object per edge, not a tuple and the four float objects it points to."""

    def __init__(self, x1: float, y1: float, x2: float, y2: float) -> None:
        self.x1 = x1
        self.y1 = y1
        self.x2 = x2
        self.y2 = y2


class BandedRing:
    """A ring cut into horizontal bands, each listing the edges whose latitude range meets it. A point is tested
    against its band's edges only: the same answer as `in_ring`, since an edge that can cross the point's
    horizontal ray spans its latitude and so is listed in its band."""

    def __init__(self, ring: Ring) -> None:
        lat0, _, lat1, _ = ring_bbox(ring)
        count = max(1, min(MAX_BANDS, len(ring) // 4))
        height = (lat1 - lat0) / count or 1.0
        bands: list[list[Edge]] = [[] for _ in range(count)]
        for i in range(0, len(ring) - 2, 2):
            x1, y1, x2, y2 = ring[i], ring[i + 1], ring[i + 2], ring[i + 3]
            edge = Edge(x1, y1, x2, y2)
            lo, hi = _band(min(y1, y2), lat0, height, count), _band(max(y1, y2), lat0, height, count)
            for b in range(lo, hi + 1):
                bands[b].append(edge)
        self.lat0 = lat0
        self.lat1 = lat1
        self.height = height
        self.bands: tuple[tuple[Edge, ...], ...] = tuple([tuple(b) for b in bands])

    def contains(self, lat: float, lon: float) -> bool:
        """`in_ring` on the banded ring."""
        if lat < self.lat0 or lat > self.lat1:
            return False
        inside = False
        bands = self.bands
        band = int((lat - self.lat0) / self.height)  # _band inlined (lat0 <= lat here: never below 0)
        for edge in bands[band if band < len(bands) else -1]:
            y1, y2 = edge.y1, edge.y2
            if (y1 > lat) != (y2 > lat) and lon < (edge.x2 - edge.x1) * (lat - y1) / (y2 - y1) + edge.x1:
                inside = not inside
        return inside


def _band(lat: float, lat0: float, height: float, count: int) -> int:
    return min(count - 1, max(0, int((lat - lat0) / height)))


class PointTest:
    """A shape's point test, built once per geofence. Compiled with the index (the shapes of `model` are not: they
    parse the API's input), so the index's tests of a position call no interpreted code."""

    def contains(self, lat: float, lon: float) -> bool:
        raise NotImplementedError

    def reach(self, lat: float, lon: float, area: BBox) -> float:
        """How far (degrees, each way in latitude and in longitude) a position may move from (lat, lon) within
        `area` (a rectangle that holds it) with `contains` giving the same answer: a lower bound, 0.0 on or near
        the boundary. The index's lookups reuse an answer that far (`index.Remembered`)."""
        raise NotImplementedError


class CircleTest(PointTest):
    """Within `radius_m` of the centre by haversine. The squared radius with a margin each way lets a flat-earth
    distance decide every point clearly in or out (no trigonometry but one cosine), haversine only the rest, so the
    answer is haversine's."""

    def __init__(self, lat: float, lon: float, radius_m: float) -> None:
        self.lat = lat
        self.lon = lon
        self.radius_m = radius_m
        self.inner2 = (radius_m * (1 - FLAT_MARGIN)) ** 2
        self.outer2 = (radius_m * (1 + FLAT_MARGIN)) ** 2

    def __reduce__(self) -> tuple[type[CircleTest], tuple[float, float, float]]:
        """Copied and pickled as its arguments (compiled, the default would make one calling `__init__` with none,
        so a geofence holding it could not be copied)."""
        return CircleTest, (self.lat, self.lon, self.radius_m)

    def contains(self, lat: float, lon: float) -> bool:
        if -FLAT_MAX_LAT < lat < FLAT_MAX_LAT:
            d2 = flat_distance2(self.lat, self.lon, lat, lon)
            if d2 <= self.inner2:
                return True
            if d2 >= self.outer2:
                return False
        return haversine_m(self.lat, self.lon, lat, lon) <= self.radius_m

    def reach(self, lat: float, lon: float, area: BBox) -> float:
        """The margin to the radius over twice the metres per degree: a position at most `h` degrees away in
        latitude and in longitude is at most 2h degrees of arc away (along the meridian, then the parallel), and
        the distance from the centre (haversine's, as `contains`) changes by no more than that."""
        margin = abs(haversine_m(self.lat, self.lon, lat, lon) - self.radius_m) - REACH_SLACK_M
        return margin / (2 * METRES_PER_DEGREE) if margin > 0 else 0.0


class PolygonTest(PointTest):
    """Inside the exterior ring and in none of the holes, each ring banded."""

    def __init__(self, rings: tuple[Ring, ...]) -> None:
        self.source = rings
        self.rings = tuple([BandedRing(ring) for ring in rings])

    def __reduce__(self) -> tuple[type[PolygonTest], tuple[tuple[Ring, ...]]]:
        """Copied and pickled as its rings (as `CircleTest`)."""
        return PolygonTest, (self.source,)

    def contains(self, lat: float, lon: float) -> bool:
        rings = self.rings
        if not rings[0].contains(lat, lon):
            return False
        return len(rings) == 1 or not any(hole.contains(lat, lon) for hole in rings[1:])

    def reach(self, lat: float, lon: float, area: BBox) -> float:
        """The distance (plain lon/lat, as ray casting) to the nearest edge of any ring that meets `area`, over
        sqrt 2: the square of that half-side around the position is in the disc no edge enters, so every position
        in it is on the same side of every boundary. Edges outside `area` cannot be crossed moving within it."""
        lat0, lon0, lat1, lon1 = area
        nearest2 = math.inf
        for ring in self.source:
            for i in range(0, len(ring) - 2, 2):
                x1, y1, x2, y2 = ring[i], ring[i + 1], ring[i + 2], ring[i + 3]
                if (y1 < lat0 and y2 < lat0) or (y1 > lat1 and y2 > lat1):
                    continue
                if (x1 < lon0 and x2 < lon0) or (x1 > lon1 and x2 > lon1):
                    continue
                d2 = segment_distance2(lon, lat, x1, y1, x2, y2)
                if d2 < nearest2:
                    nearest2 = d2
        if nearest2 == math.inf:
            return math.inf
        reach = math.sqrt(nearest2 / 2) - REACH_SLACK_DEGREES
        return reach if reach > 0 else 0.0


def segment_distance2(x: float, y: float, x1: float, y1: float, x2: float, y2: float) -> float:
    """Squared distance in the plane from (x, y) to the segment (x1, y1)-(x2, y2)."""
    dx, dy = x2 - x1, y2 - y1
    length2 = dx * dx + dy * dy
    t = ((x - x1) * dx + (y - y1) * dy) / length2 if length2 > 0 else 0.0
    if t < 0.0:
        t = 0.0
    elif t > 1.0:
        t = 1.0
    ex, ey = x - (x1 + t * dx), y - (y1 + t * dy)
    return ex * ex + ey * ey


def in_polygon(rings: tuple[Ring, ...], lat: float, lon: float) -> bool:
    """Inside the exterior ring and in none of the holes."""
    if not in_ring(rings[0], lat, lon):
        return False
    return not any(in_ring(hole, lat, lon) for hole in rings[1:])


def ring_area(ring: Ring) -> float:
    """Signed shoelace area in square degrees (0 for a degenerate ring)."""
    total = 0.0
    for i in range(0, len(ring) - 2, 2):
        total += ring[i] * ring[i + 3] - ring[i + 2] * ring[i + 1]
    return total / 2


def in_bbox(box: BBox, lat: float, lon: float) -> bool:
    return box[0] <= lat <= box[2] and box[1] <= lon <= box[3]
