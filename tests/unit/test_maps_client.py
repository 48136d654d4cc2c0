"""Reading Azure Maps' wire format and mapping its errors (pure parsing; the HTTP path is in
tests/integration/test_maps_sandbox.py)."""

from __future__ import annotations

import orjson
import pytest

from shared.maps import azure_client
from shared.maps.errors import MapsError, MapsThrottledError, NoRouteError
from shared.maps.types import EvParams, GeoPoint, decimate


def test_geocoding_feature_to_place() -> None:
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [10.7865, 52.4227]},
        "properties": {
            "type": "PopulatedPlace",
            "confidence": "Medium",
            "address": {"formattedAddress": "Wolfsburg, Germany", "countryRegion": {"ISO": "de"}},
        },
    }
    place = azure_client._place(feature)
    assert place is not None
    assert (place.point, place.label, place.country_code, place.kind, place.confidence) == (
        GeoPoint(52.4227, 10.7865),
        "Wolfsburg, Germany",
        "DE",
        "locality",
        "medium",
    )


@pytest.mark.parametrize(
    "feature",
    [None, {}, {"geometry": {"coordinates": [200, 10]}}, {"geometry": {"coordinates": ["x", 1]}}, {"geometry": {}}],
)
def test_unusable_features_are_no_place(feature: object) -> None:
    assert azure_client._place(feature) is None


def test_route_path_to_route_with_ev_charge_and_utc_times() -> None:
    feature = {
        "geometry": {
            "type": "MultiLineString",
            "coordinates": [[[10.0, 52.0], [10.5, 52.1]], [[10.5, 52.1], [11, 52]]],
        },
        "properties": {
            "type": "RoutePath",
            "distanceInMeters": 50_000,
            "durationInSeconds": 1800,
            "durationTrafficInSeconds": 2400,
            "departureTime": "2026-12-07T08:00:00+01:00",
            "arrivalTime": "2026-12-07T08:40:00+01:00",
        },
    }
    route = azure_client._route(feature, EvParams(current_kwh=10, max_kwh=60, consumption_kwh_per_100km=20))
    assert (route.length_m, route.travel_s, route.traffic_delay_s) == (50_000, 2400, 600)
    assert (route.departure, route.arrival) == ("2026-12-07T07:00:00.000Z", "2026-12-07T07:40:00.000Z")
    assert route.remaining_kwh == 0.0
    assert len(route.points) == 4
    assert route.points[0] == GeoPoint(52.0, 10.0)


def test_route_without_figures_is_a_bad_response() -> None:
    with pytest.raises(MapsError) as caught:
        azure_client._route({"properties": {"type": "RoutePath"}}, None)
    assert caught.value.code == "bad_response"


def test_decimation_keeps_the_ends_and_the_limit() -> None:
    points = [GeoPoint(i / 1000, 0) for i in range(1001)]
    kept = decimate(points)
    assert len(kept) == 200
    assert kept[0] == points[0]
    assert kept[-1] == points[-1]
    assert decimate(points[:5]) == tuple(points[:5])


def test_along_route_result_to_stop() -> None:
    stop = azure_client._stop(
        {"poi": {"name": "Ionity Helmstedt"}, "position": {"lat": 52.2, "lon": 11.0}, "address": {}, "detourTime": 240}
    )
    assert stop is not None
    assert (stop.name, stop.address, stop.detour_s) == ("Ionity Helmstedt", None, 240)
    assert azure_client._stop({"poi": {"name": "x"}}) is None


@pytest.mark.parametrize(
    ("status", "transient"),
    [(None, True), (400, False), (401, False), (403, False), (404, False), (429, True), (500, True), (503, True)],
)
def test_transience_follows_the_status(status: int | None, transient: bool) -> None:
    assert MapsError("x", status).transient is transient


def test_specific_errors() -> None:
    assert MapsThrottledError("x", 3.0).transient
    assert MapsThrottledError("x", 3.0).status == 429
    assert not NoRouteError("x").transient
    assert isinstance(NoRouteError("x"), MapsError)


def test_error_json_and_retry_after_parsing() -> None:
    body = orjson.dumps({"error": {"code": "NO_ROUTE_FOUND", "message": "none"}})
    assert azure_client._error_code(body) == ("NO_ROUTE_FOUND", "none")
    assert azure_client._error_code(b"<html>") == (None, "")
    assert [azure_client._retry_after(v) for v in ("2", "0.5", "", None, "-1", "nan", "Wed, 21 Oct 2026")] == [
        2.0,
        0.5,
        None,
        None,
        None,
        None,
        None,
    ]
