"""Geofences, the domain: parsing outside input, geometry, curfews and the spatial index (== brute force)."""

from __future__ import annotations

import copy
import math
import pickle
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import InvalidRequestError
from shared.geofences.geometry import CIRCLE_MAX_LAT, EARTH_RADIUS_M, circle_extent, haversine_m, in_polygon
from shared.geofences.index import FINE_DEGREES, MAX_INSIDE, GeofenceIndex, VehicleGeofences, brute_force
from shared.geofences.model import (
    MAX_VERTICES,
    Circle,
    Curfew,
    FleetScope,
    Geofence,
    Polygon,
    VehicleScope,
    parse_geofence,
)
from shared.telemetry import geofencing

FLEET = FleetScope("acme", "north")


def square(lon: float, lat: float, size: float) -> list[list[float]]:
    return [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]


def polygon(*rings: list[list[float]], name: str = "zone") -> dict[str, Any]:
    return {"name": name, "shape": {"type": "Polygon", "coordinates": list(rings)}}


def circle(lon: float, lat: float, radius: float) -> dict[str, Any]:
    return {"name": "depot", "shape": {"type": "Circle", "center": [lon, lat], "radiusM": radius}}


def test_circle_contains_by_haversine() -> None:
    fence = parse_geofence(circle(11.5755, 48.1374, 500), geofence_id="depot", scope=FLEET)
    assert isinstance(fence.shape, Circle)
    assert fence.shape.contains(48.1374, 11.5755)
    north = 48.1374 + 499 / 111_195
    assert fence.shape.contains(north, 11.5755)
    assert not fence.shape.contains(48.1374 + 501 / 111_195, 11.5755)


def test_polygon_with_hole() -> None:
    fence = parse_geofence(polygon(square(10, 52, 1), square(10.4, 52.4, 0.2)), geofence_id="p", scope=FLEET)
    assert fence.shape.contains(52.1, 10.1)
    assert not fence.shape.contains(52.5, 10.5)  # in the hole
    assert not fence.shape.contains(53.5, 10.5)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (polygon([[10, 52], [11, 52], [11, 53], [10, 53]]), "shape.coordinates[0]"),  # not closed
        (polygon([[10, 52], [11, 52], [12, 52], [10, 52]]), "shape.coordinates[0]"),  # collinear: no area
        (polygon([[10, 52], [10, 52], [10, 52], [10, 52]]), "shape.coordinates[0]"),  # one point
        (polygon([[10, 95], [11, 52], [11, 53], [10, 95]]), "shape.coordinates[0][0]"),  # latitude out of range
        (polygon([[-170, 0], [170, 0], [170, 1], [-170, 0]]), "shape.coordinates[0]"),  # across the antimeridian
        (polygon([[10, 52], [11, 52], [11, float("nan")], [10, 52]]), "shape.coordinates[0][2]"),
        (circle(10, 52, 5), "shape.radiusM"),
        (circle(179.999, -16.8, 1000), "shape"),  # across the antimeridian (Taveuni, Fiji)
        (circle(-180, 65, 10), "shape"),
        (circle(0, 89.99, 5000), "shape"),  # around the North Pole
        (circle(135, -88.5, 60_000), "shape"),  # within a degree of the South Pole
        (circle(10, 52, 1e9), "shape.radiusM"),
        (circle(10, 52, 10**400), "shape.radiusM"),  # an integer beyond a float's range
        (circle(10**400, 52, 50), "shape.center"),
        ({"name": "", "shape": {"type": "Circle", "center": [10, 52], "radiusM": 50}}, "name"),
        ({"name": "x", "shape": {"type": "Point", "coordinates": [10, 52]}}, "shape.type"),
        ({**circle(10, 52, 50), "curfew": {"timeZone": "Mars/Olympus", "allowed": []}}, "curfew.timeZone"),
        (
            {
                **circle(10, 52, 50),
                "curfew": {"timeZone": "UTC", "allowed": [{"days": ["mon"], "start": "22:00", "end": "06:00"}]},
            },
            "curfew.allowed[0]",
        ),
        ({**circle(10, 52, 50), "restricted": "yes"}, "restricted"),
        ({**circle(10, 52, 50), "colour": "red"}, "colour"),
    ],
)
def test_bad_input_names_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_geofence(raw, geofence_id="g", scope=FLEET)
    assert field in [e["field"] for e in caught.value.errors]


def test_too_many_vertices() -> None:
    ring = [
        [10 + math.cos(2 * math.pi * i / 1200) * 0.01, 52 + math.sin(2 * math.pi * i / 1200) * 0.01]
        for i in range(1200)
    ]
    ring.append(ring[0])
    with pytest.raises(InvalidRequestError):
        parse_geofence(polygon(ring), geofence_id="g", scope=FLEET)
    ok = ring[:: math.ceil(1200 / MAX_VERTICES)]
    ok.append(ok[0])
    parse_geofence(polygon(ok), geofence_id="g", scope=FLEET)


def test_bad_id() -> None:
    with pytest.raises(InvalidRequestError):
        parse_geofence(circle(10, 52, 50), geofence_id="Not A Slug", scope=FLEET)


def test_definition_round_trips() -> None:
    raw = {
        **polygon(square(10, 52, 1), square(10.4, 52.4, 0.2)),
        "alerts": {"enter": True, "exit": False},
        "restricted": True,
        "curfew": {
            "timeZone": "Europe/Berlin",
            "allowed": [{"days": ["mon", "fri"], "start": "06:00", "end": "24:00"}],
        },
    }
    fence = parse_geofence(raw, geofence_id="zone", scope=FLEET)
    again = parse_geofence(fence.definition(), geofence_id="zone", scope=FLEET)
    assert again == fence
    assert fence.key == "zone"
    assert parse_geofence(raw, geofence_id="home", scope=VehicleScope("car-1")).key == "v:home"


def test_geofences_copy_and_pickle_with_their_compiled_tests() -> None:
    """A geofence holds its shape's point test (compiled with the index): copied or pickled, it is rebuilt from the
    shape, not from an empty object."""
    fences = [
        parse_geofence(circle(10, 52, 500), geofence_id="c", scope=FLEET),
        parse_geofence(polygon(square(10, 52, 1), square(10.4, 52.4, 0.2)), geofence_id="p", scope=FLEET),
    ]
    for fence in fences:
        for again in (copy.deepcopy(fence), pickle.loads(pickle.dumps(fence))):
            assert again == fence
            for lat, lon in [(52.0, 10.0), (52.5, 10.5), (52.001, 10.001), (53.0, 11.0)]:
                assert again.shape.contains(lat, lon) == fence.shape.contains(lat, lon)


def test_curfew_local_time() -> None:
    raw = {
        **circle(10, 52, 50),
        "curfew": {"timeZone": "Europe/Berlin", "allowed": [{"days": ["mon"], "start": "06:00", "end": "22:00"}]},
    }
    curfew = parse_geofence(raw, geofence_id="g", scope=FLEET).curfew
    assert curfew is not None
    assert curfew.allows("2026-12-07T05:00:00.000Z")  # Monday 06:00 in Berlin (UTC+1)
    assert not curfew.allows("2026-12-07T04:59:00.000Z")  # Monday 05:59
    assert not curfew.allows("2026-12-07T21:00:00.000Z")  # Monday 22:00
    assert not curfew.allows("2026-12-08T08:00:00.000Z")  # Tuesday
    # another form of time is not taken for the canonical minute its first characters spell
    assert not curfew.allows("2026-12-07T05:00:30+01:00")  # Monday 05:00 in Berlin


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=40,
)
coord = st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-400, 400), min_size=0, max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    shape=st.fixed_dictionaries(
        {
            "type": st.sampled_from(["Polygon", "Circle", "Point", 3]),
            "coordinates": st.lists(st.lists(coord, max_size=8), max_size=3) | json_values,
        },
        optional={"center": coord | json_values, "radiusM": st.floats() | st.integers() | json_values},
    ),
    extra=st.dictionaries(st.sampled_from(["name", "alerts", "restricted", "curfew", "x"]), json_values, max_size=5),
)
def test_any_json_is_a_geofence_or_an_invalid_request(shape: dict[str, Any], extra: dict[str, Any]) -> None:
    try:
        fence = parse_geofence({"name": "g", "shape": shape, **extra}, geofence_id="g", scope=FLEET)
    except InvalidRequestError as exc:
        errors = exc.errors
        fence = None
    if fence is None:
        assert errors
        assert all(set(e) == {"field", "message"} for e in errors)
        return
    assert isinstance(fence, Geofence)
    assert parse_geofence(fence.definition(), geofence_id="g", scope=FLEET) == fence


points = st.tuples(st.floats(-0.05, 0.05), st.floats(-0.05, 0.05))


@st.composite
def fences(draw: st.DrawFn) -> list[Geofence]:
    out: list[Geofence] = []
    for i in range(draw(st.integers(0, 30))):
        lat, lon = draw(points)
        lat, lon = 52.4 + lat, 10.8 + lon
        if draw(st.booleans()):
            radius = draw(st.floats(10, 20_000))
            out.append(Geofence(f"c{i}", "c", Circle(lat, lon, radius), FLEET))
        else:
            n = draw(st.integers(3, 12))
            size = draw(st.floats(0.0005, 0.3))
            ring: list[float] = []
            for k in range(n):
                angle = 2 * math.pi * k / n
                r = size * draw(st.floats(0.3, 1.0))
                ring += [lon + r * math.cos(angle), lat + r * math.sin(angle)]
            ring += ring[:2]
            out.append(Geofence(f"p{i}", "p", Polygon((tuple(ring),)), FLEET))
    return out


@settings(max_examples=150, deadline=None)
@given(fences(), st.lists(st.tuples(st.floats(52.0, 52.8), st.floats(10.4, 11.2)), max_size=40))
def test_index_equals_brute_force(geofences: list[Geofence], positions: list[tuple[float, float]]) -> None:
    index = GeofenceIndex(geofences)
    for lat, lon in positions + [(g.shape.bbox()[0], g.shape.bbox()[1]) for g in geofences]:
        assert index.containing(lat, lon) == brute_force(geofences, lat, lon)


CURFEW_RAW = {"timeZone": "Europe/Berlin", "allowed": [{"days": ["mon"], "start": "06:00", "end": "22:00"}]}


def curfew_of_raw() -> Curfew:
    """The curfew of CURFEW_RAW, parsed as the API parses it."""
    curfew = parse_geofence({**circle(10, 52, 50), "curfew": CURFEW_RAW}, geofence_id="g", scope=FLEET).curfew
    assert curfew is not None
    return curfew


def with_curfews(geofences: list[Geofence], curfews: list[bool]) -> list[Geofence]:
    """The geofences, each with CURFEW_RAW's curfew where `curfews` says so."""
    curfew = curfew_of_raw()
    return [replace(g, curfew=curfew) if c else g for g, c in zip(geofences, curfews, strict=False)]


# A fleet, which of its geofences have a curfew, positions where the fleet drives, and how near boundaries to look.
CURFEWED_FLEETS = (
    fences(),
    st.lists(st.booleans(), min_size=30, max_size=30),
    st.lists(st.tuples(st.floats(52.0, 52.8), st.floats(10.4, 11.2)), max_size=30),
    st.floats(0, 1),
)


def near_boundaries(geofences: list[Geofence], scale: float) -> list[tuple[float, float]]:
    """Positions a hair either side of every circle and along every polygon edge."""
    near: list[tuple[float, float]] = []
    for g in geofences:
        shape = g.shape
        if isinstance(shape, Circle):
            for factor in (1 - 1e-6, 1 + 1e-6, scale):
                d = shape.radius_m * factor / 111_195
                near += [(shape.lat + d, shape.lon), (shape.lat, shape.lon + d / math.cos(math.radians(shape.lat)))]
        else:
            assert isinstance(shape, Polygon)
            ring = shape.rings[0]
            for k in range(0, len(ring) - 2, 2):
                x = ring[k] + (ring[k + 2] - ring[k]) * scale
                y = ring[k + 1] + (ring[k + 3] - ring[k + 1]) * scale
                near += [(y, x), (y + 1e-9, x), (y - 1e-9, x), (y, x + 1e-9), (y, x - 1e-9)]
    return near


@settings(max_examples=150, deadline=None)
@given(fences(), st.lists(st.tuples(st.floats(52.0, 52.8), st.floats(10.4, 11.2)), max_size=40), st.floats(0, 1))
def test_cell_answers_equal_brute_force(
    geofences: list[Geofence], positions: list[tuple[float, float]], scale: float
) -> None:
    """The tokens the fold reads from the index's per-cell and per-sub-cell answers (or works out where there is
    none) are brute force's keys, also next to every boundary."""
    fences = VehicleGeofences(GeofenceIndex(geofences))
    near = near_boundaries(geofences, scale)
    for lat, lon in positions + near + [(g.shape.bbox()[0], g.shape.bbox()[1]) for g in geofences]:
        expected = tuple(g.key for g in brute_force(geofences, lat, lon)[:MAX_INSIDE])
        assert geofencing.tokens_at(fences, lat, lon, 0.0, "2026-11-21T08:00:00.000Z") == expected


@settings(max_examples=150, deadline=None)
@given(*CURFEWED_FLEETS)
def test_sub_cell_tokens_equal_the_tested_ones(
    geofences: list[Geofence], curfews: list[bool], positions: list[tuple[float, float]], scale: float
) -> None:
    """The fold's lookup (cell, sub-cell, then the sub-cell's lists: `GeofenceIndex.sub_tokens`) gives the tokens
    `geofencing.tested` works out from every candidate of the cell, curfews included (moving or not, allowed or
    not), next to every boundary too."""
    geofences = with_curfews(geofences, curfews)
    fences = VehicleGeofences(GeofenceIndex(geofences))
    assert fences.answers is not None
    for lat, lon in positions + near_boundaries(geofences, scale):
        for speed in (None, 0.0, 30.0):
            for ts in ("2026-12-07T08:00:00.000Z", "2026-12-08T08:00:00.000Z"):  # allowed, curfew
                expected = geofencing.tested(fences, lat, lon, speed, ts)
                assert geofencing.tokens_at(fences, lat, lon, speed, ts) == expected


@settings(max_examples=150, deadline=None)
@given(*CURFEWED_FLEETS)
def test_the_geofences_a_sample_names_depend_on_its_position_only(
    geofences: list[Geofence], curfews: list[bool], positions: list[tuple[float, float]], scale: float
) -> None:
    """A sample names the first geofences it is in (by key) whose tokens fit in MAX_INSIDE, one with a curfew taking
    two places: the same ones at any speed and time (a curfew token never pushes its own or another geofence out),
    each named with its curfew token while moving in the curfew."""
    geofences = with_curfews(geofences, curfews)
    fences = VehicleGeofences(GeofenceIndex(geofences))
    for lat, lon in positions + near_boundaries(geofences, scale):
        named: list[Geofence] = []
        places = 0
        for g in brute_force(geofences, lat, lon):
            places += 2 if g.curfew is not None else 1
            if places > MAX_INSIDE:
                break
            named.append(g)
        for speed in (None, 0.0, 30.0):
            for ts in ("2026-12-07T08:00:00.000Z", "2026-12-08T08:00:00.000Z"):  # allowed, curfew
                moving = speed is not None and speed > 5.0
                expected = [g.key for g in named]
                expected += [g.key + "!curfew" for g in named if moving and g.curfew and not g.curfew.allows(ts)]
                assert geofencing.tokens_at(fences, lat, lon, speed, ts) == tuple(sorted(expected))
                assert geofencing.tested(fences, lat, lon, speed, ts) == tuple(sorted(expected))


def test_private_geofences_join_the_fleet() -> None:
    fleet = GeofenceIndex([Geofence("home", "fleet home", Circle(52.4, 10.8, 100), FLEET)])
    mine = Geofence("home", "my home", Circle(52.4, 10.8, 100), VehicleScope("car"))
    both = VehicleGeofences(fleet, (mine,))
    assert [g.key for g in both.containing(52.4, 10.8)] == ["home", "v:home"]
    assert both.get("v:home") is mine


def test_haversine_known_distance() -> None:
    assert abs(haversine_m(52.5200, 13.4050, 48.1374, 11.5755) - 504_000) < 2_000  # Berlin - Munich


@settings(max_examples=150, deadline=None)
@given(fences(), st.lists(st.tuples(st.floats(52.0, 52.8), st.floats(10.4, 11.2)), max_size=40))
def test_fast_shape_tests_equal_the_plain_ones(geofences: list[Geofence], positions: list[tuple[float, float]]) -> None:
    """Banded ray casting == ray casting over every edge; the flat-earth shortcut == haversine."""
    for fence in geofences:
        shape = fence.shape
        for lat, lon in [*positions, (shape.bbox()[0], shape.bbox()[1]), (shape.bbox()[2], shape.bbox()[3])]:
            if isinstance(shape, Polygon):
                assert shape.contains(lat, lon) == in_polygon(shape.rings, lat, lon)
            else:
                assert isinstance(shape, Circle)
                assert shape.contains(lat, lon) == (haversine_m(shape.lat, shape.lon, lat, lon) <= shape.radius_m)


@given(st.floats(-89.9, 89.9), st.floats(-179, 179), st.floats(10, 100_000), st.floats(0, 2 * math.pi), st.floats(0, 2))
def test_circle_edge_anywhere(lat: float, lon: float, radius: float, bearing: float, scale: float) -> None:
    circle_ = Circle(lat, lon, radius)
    d = radius * scale / 111_195
    plat = max(-90.0, min(90.0, lat + d * math.cos(bearing)))
    plon = max(-180.0, min(180.0, lon + d * math.sin(bearing) / max(0.01, math.cos(math.radians(lat)))))
    assert circle_.contains(plat, plon) == (haversine_m(lat, lon, plat, plon) <= radius)


def destination(lat: float, lon: float, distance_m: float, bearing: float) -> tuple[float, float]:
    """The point `distance_m` from (lat, lon) along the great circle of `bearing` (haversine's sphere), its
    longitude in -180..180."""
    p1, a = math.radians(lat), distance_m / EARTH_RADIUS_M
    p2 = math.asin(math.sin(p1) * math.cos(a) + math.cos(p1) * math.sin(a) * math.cos(bearing))
    dl = math.atan2(math.sin(bearing) * math.sin(a) * math.cos(p1), math.cos(a) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), (lon + math.degrees(dl) + 180) % 360 - 180


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-90, 90) | st.sampled_from([-89.5, 88.9, 89.99]),
    st.floats(-180, 180) | st.sampled_from([-180.0, -179.999, 179.99, 180.0]),
    st.floats(10, 100_000),
    st.lists(st.tuples(st.floats(0, 0.999), st.floats(0, 2 * math.pi)), min_size=1, max_size=8),
)
def test_a_circle_is_rejected_or_found_everywhere_inside(
    lat: float, lon: float, radius: float, points: list[tuple[float, float]]
) -> None:
    """Circles are tested and indexed in plain lon/lat: one across the antimeridian or around a pole is rejected at
    parse time (as polygons across the antimeridian are); every other one is found at every point inside it."""
    south, west, north, east = circle_extent(lat, lon, radius)
    if max(abs(south), abs(north)) > CIRCLE_MAX_LAT or west < -180 or east > 180:
        with pytest.raises(InvalidRequestError) as caught:
            parse_geofence(circle(lon, lat, radius), geofence_id="c", scope=FLEET)
        assert [e["field"] for e in caught.value.errors] == ["shape"]
        return
    fence = parse_geofence(circle(lon, lat, radius), geofence_id="c", scope=FLEET)
    fences = VehicleGeofences(GeofenceIndex([fence]))
    for scale, bearing in points:
        plat, plon = destination(lat, lon, radius * scale, bearing)
        assert fence.shape.contains(plat, plon)
        assert [g.key for g in fences.containing(plat, plon)] == ["c"]
        assert geofencing.tokens_at(fences, plat, plon, 0.0, "2026-11-21T08:00:00.000Z") == ("c",)


def sub_cell_area(lat: float, lon: float) -> tuple[float, float, float, float]:
    """The rectangle of the sub-cell a position is in, as the index's `reach` takes it."""
    fi, fj = math.floor(lat / FINE_DEGREES), math.floor(lon / FINE_DEGREES)
    return (
        fi * FINE_DEGREES - 1e-9,
        fj * FINE_DEGREES - 1e-9,
        (fi + 1) * FINE_DEGREES + 1e-9,
        (fj + 1) * FINE_DEGREES + 1e-9,
    )


@settings(max_examples=200, deadline=None)
@given(
    fences(),
    st.floats(0, 1),
    st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1)), min_size=1, max_size=12),
    st.lists(st.tuples(st.floats(52.0, 52.8), st.floats(10.4, 11.2)), max_size=6),
)
def test_a_shape_answers_alike_within_its_reach(
    geofences: list[Geofence],
    scale: float,
    offsets: list[tuple[float, float]],
    positions: list[tuple[float, float]],
) -> None:
    """Every position within a shape's reach (each way, in the sub-cell) of another gets the same answer, near
    the boundary (a hair either side) and anywhere: the reach is a lower bound, so a lookup may reuse an answer
    that far."""
    for fence in geofences:
        test = fence.shape.test
        for lat, lon in [*near_boundaries([fence], scale), *positions]:
            area = sub_cell_area(lat, lon)
            reach = test.reach(lat, lon, area)
            assert reach >= 0.0
            inside = test.contains(lat, lon)
            for u, v in offsets:
                there_lat = min(area[2], max(area[0], lat + u * min(reach, 1.0)))
                there_lon = min(area[3], max(area[1], lon + v * min(reach, 1.0)))
                assert test.contains(there_lat, there_lon) == inside, (fence.key, lat, lon, reach, u, v)


@pytest.mark.parametrize("lat", [0.0, 52.4, 84.0, 89.5, -89.5])
def test_a_circle_reach_holds_towards_the_poles_and_is_most_of_the_margin(lat: float) -> None:
    """A circle's reach is sound where degrees of longitude shrink to nothing, and not needlessly small: from
    100 m inside the edge (along the meridian), a quarter of the margin's degrees of latitude at least."""
    circle_ = Circle(lat, 10.0, 1_000.0)
    test = circle_.test
    start = lat + (1_000.0 - 100.0) / 111_195 * (1 if lat < 89 else -1)
    area = (start - 0.01, 9.99, start + 0.01, 10.01)
    reach = test.reach(start, 10.0, area)
    assert reach > 0.25 * 100.0 / 111_195
    for u in (-1.0, -0.5, 0.0, 0.5, 1.0):
        for v in (-1.0, -0.5, 0.0, 0.5, 1.0):
            assert test.contains(start + u * reach, 10.0 + v * reach)


def test_a_polygon_reach_is_the_distance_to_the_nearest_edge_in_the_area() -> None:
    """Half a diagonal: the square of that half-side around the position stays off every edge; edges outside the
    area do not count (moving within it cannot cross them)."""
    ring = tuple(c for point in square(10.0, 52.0, 0.01) for c in point)
    test = Polygon((ring,)).test
    reach = test.reach(52.005, 10.002, (51.0, 9.0, 53.0, 11.0))  # 0.002 from the west edge
    assert reach == pytest.approx(0.002 / math.sqrt(2), abs=1e-8)
    reach = test.reach(52.005, 10.002, (52.004, 10.001, 52.006, 10.003))  # no edge in the area
    assert reach == math.inf
    assert test.reach(52.0, 10.005, (51.0, 9.0, 53.0, 11.0)) == 0.0  # on the south edge


def test_a_cars_answer_is_reused_within_its_reach_and_not_beyond() -> None:
    """100 m inside a depot's edge, in a sub-cell its boundary crosses: the next position 44 m further out reuses
    the answer (the index is not asked: the remembered position stays), one 111 m out, past the edge in the same
    sub-cell, is asked again and is outside."""
    fences = VehicleGeofences(GeofenceIndex([Geofence("depot", "depot", Circle(52.4, 10.8, 1_000.0), FLEET)]))
    assert fences.last is not None
    start = 52.4 + 900 / 111_195
    ts = "2026-12-07T08:00:00.000Z"
    assert geofencing.lookup("car", fences, start, 10.8, 30.0, ts) == ("depot",)
    memo = fences.last["car"]
    assert 0.9 * 100 / (2 * 111_195) < memo.reach < 100 / (2 * 111_195)
    assert geofencing.lookup("car", fences, start + 0.0004, 10.8, 30.0, ts) == ("depot",)
    assert fences.last["car"].lat == start  # reused, not asked again
    outside = start + 0.001
    assert math.floor(outside / FINE_DEGREES) == math.floor(start / FINE_DEGREES)  # the same sub-cell
    assert geofencing.lookup("car", fences, outside, 10.8, 30.0, ts) == ()
    assert fences.last["car"].lat == outside


def test_a_moving_cars_answer_in_a_curfew_is_reused_within_its_minute_and_not_beyond() -> None:
    """Driving 100 m inside a depot under curfew (until 06:00 in Berlin, 05:00 UTC): within the minute the answer
    (with the curfew) is reused; at 05:00 it is asked again and the curfew has ended; standing still, or a time not
    in canonical form or in a minute a curfew may change in, is asked again too."""
    curfew = curfew_of_raw()
    depot = Geofence("depot", "depot", Circle(52.4, 10.8, 1_000.0), FLEET, curfew=curfew)
    fences = VehicleGeofences(GeofenceIndex([depot]))
    assert fences.last is not None
    start = 52.4 + 900 / 111_195
    assert geofencing.lookup("car", fences, start, 10.8, 30.0, "2026-12-07T04:59:00.000Z") == ("depot", "depot!curfew")
    assert fences.last["car"].minute == "2026-12-07T04:59"
    nearby = start + 0.0001
    assert geofencing.lookup("car", fences, nearby, 10.8, 30.0, "2026-12-07T04:59:59.999Z") == ("depot", "depot!curfew")
    assert fences.last["car"].lat == start  # reused, not asked again
    assert geofencing.lookup("car", fences, nearby, 10.8, 30.0, "2026-12-07T05:00:00.000Z") == ("depot",)
    assert fences.last["car"].lat == nearby  # asked again: another minute
    assert geofencing.lookup("car", fences, start, 10.8, 30.0, "2026-12-07T05:00:30+01:00") == ("depot", "depot!curfew")
    assert "car" not in fences.last  # asked (04:00 UTC), and not remembered: not in canonical form
    assert geofencing.lookup("car", fences, nearby, 10.8, 0.0, "2026-12-07T04:59:00.000Z") == ("depot",)
    assert fences.last["car"].lat == nearby  # asked again: standing
    # Berlin's local mean time (+00:53:28) splits a UTC minute in two local ones: not remembered
    assert geofencing.lookup("car", fences, start, 10.8, 30.0, "1850-01-07T04:59:00.000Z") == ("depot", "depot!curfew")
    assert "car" not in fences.last


# Monday 2026-12-07: CURFEW_RAW's curfew ends at 05:00 UTC (06:00 in Berlin); the next day is all curfew. The same
# minutes at other seconds, and times not in canonical form (not remembered by the minute).
MINUTES = (
    "2026-12-07T04:59:00.000Z",
    "2026-12-07T04:59:31.250Z",
    "2026-12-07T04:59:59.999Z",
    "2026-12-07T05:00:00.000Z",
    "2026-12-07T05:00:42.000Z",
    "2026-12-07T04:59:40+01:00",
    "2026-12-07T05:00:05Z",
    "2026-12-07T08:00:00.000Z",
    "2026-12-08T08:00:00.000Z",
)


@settings(max_examples=50, deadline=None)
@given(
    fences(),
    st.lists(st.booleans(), min_size=30, max_size=30),
    st.lists(
        st.tuples(
            st.integers(0, 2),  # car
            st.sampled_from(["elsewhere", "stay", "nudge", "creep", "reach", "boundary"]),
            st.tuples(st.floats(52.0, 52.8), st.floats(10.4, 11.2)),
            st.sampled_from([None, 0.0, 5.0, 30.0]),  # speed: not in the sample, standing, at the threshold, moving
            st.sampled_from(MINUTES),  # when: minutes either side of the curfew's end, seconds apart in each
            st.integers(0, 10_000),
        ),
        max_size=80,
    ),
    st.floats(0, 1),
)
def test_a_cars_remembered_answer_equals_the_index(
    geofences: list[Geofence],
    curfews: list[bool],
    moves: list[tuple[int, str, tuple[float, float], float | None, str, int]],
    scale: float,
) -> None:
    """`geofencing.lookup` (a car's last answer reused in the same sub-cell, or within its reach) gives what
    `tokens_at` and `tested` give for every sample of cars that drive, stand still, creep inside a sub-cell and
    across boundaries, with and without curfews, moving or not, within a minute and across the minute a curfew
    ends (a moving car's answer is reused within its minute only)."""
    geofences = with_curfews(geofences, curfews)
    fences = VehicleGeofences(GeofenceIndex(geofences))
    assert fences.last is not None
    near = near_boundaries(geofences, scale)
    at: dict[int, tuple[float, float]] = {}
    for car, move, position, speed, ts, pick in moves:
        lat, lon = at.get(car, position)
        if move == "elsewhere":
            lat, lon = position
        elif move == "nudge":
            lat, lon = lat + (pick % 7 - 3) * 1e-5, lon + (pick % 5 - 2) * 1e-5
        elif move == "creep":  # 1e-6 to 1e-9 degrees: near a boundary, across it or up to the reach of an answer
            lat, lon = (
                lat + (pick % 7 - 3) * 10.0 ** -(6 + pick % 4),
                lon + (pick % 5 - 2) * 10.0 ** -(6 + pick // 7 % 4),
            )
        elif move == "reach" and (memo := fences.last.get(f"car-{car}")) is not None and memo.reach < 1:
            # to a corner of the square the car's last answer is reused in, in its sub-cell (a boundary may be
            # just beyond)
            area = sub_cell_area(lat, lon)
            lat = min(area[2] - 2e-9, max(area[0] + 2e-9, lat + (1 if pick % 2 else -1) * memo.reach))
            lon = min(area[3] - 2e-9, max(area[1] + 2e-9, lon + (1 if pick % 4 > 1 else -1) * memo.reach))
        elif move == "boundary" and near:  # on it, a hair either side, or up to ~100 m off it
            lat, lon = near[pick % len(near)]
            off = (pick // 7 % 3 - 1) * 10.0 ** -(3 + pick % 5)
            lat, lon = lat + off, lon + off * (pick // 21 % 3 - 1)
        at[car] = lat, lon
        expected = geofencing.tokens_at(fences, lat, lon, speed, ts)
        assert geofencing.lookup(f"car-{car}", fences, lat, lon, speed, ts) == expected
        assert expected == geofencing.tested(fences, lat, lon, speed, ts)
