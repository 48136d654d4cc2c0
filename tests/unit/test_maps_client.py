"""Reading Azure Maps' wire format and mapping its errors (pure parsing; the HTTP path is in
tests/integration/test_maps_sandbox.py)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    [
        None,
        {},
        {"geometry": {"coordinates": [200, 10]}},
        {"geometry": {"coordinates": ["x", 1]}},
        {"geometry": {}},
        {"geometry": {"coordinates": [10**400, 10]}},  # an integer beyond a float's range
    ],
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


# Any JSON where the wire format has an object, a list or a number: what a proxy, a new API version or a bug may send.
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=8,
)


def _shaped(keys: list[str]) -> st.SearchStrategy[object]:
    """Objects with the wire format's own keys (so parsing goes deep), each holding any JSON value, nested."""
    return st.recursive(
        _json_values,
        lambda inner: st.dictionaries(st.sampled_from(keys), inner, max_size=len(keys)) | st.lists(inner, max_size=3),
        max_leaves=12,
    )


GEOCODE_KEYS = ["type", "geometry", "coordinates", "properties", "address", "countryRegion", "ISO",
                "formattedAddress", "name", "confidence"]  # fmt: skip
ROUTE_KEYS = ["properties", "distanceInMeters", "durationInSeconds", "durationTrafficInSeconds", "departureTime",
              "arrivalTime", "geometry", "coordinates", "type"]  # fmt: skip
STOP_KEYS = ["position", "lat", "lon", "poi", "name", "address", "freeformAddress", "detourTime"]


@settings(max_examples=300, deadline=None)
@given(_shaped(GEOCODE_KEYS), _shaped(ROUTE_KEYS), _shaped(STOP_KEYS))
def test_any_answer_parses_or_is_a_bad_response_never_a_crash(geocode: object, route: object, stop: object) -> None:
    """A field of another type than the wire format's (`"countryRegion": "DE"`, a list for `properties`) is no
    place, no stop, or a MapsError(bad_response) for a route: never an AttributeError or TypeError that would fail
    the calendar sync instead of keeping the last figures."""
    azure_client._place(geocode)
    azure_client._stop(stop)
    if isinstance(route, dict):
        try:
            azure_client._route(route, EvParams(40.0, 58.0, 18.0))
        except MapsError as error:
            code = error.code
        else:
            code = "bad_response"
        assert code == "bad_response"


def test_a_field_of_another_type_is_no_crash() -> None:
    feature = {"geometry": {"coordinates": [10.7865, 52.4227]}, "properties": {"address": {"countryRegion": "DE"}}}
    place = azure_client._place(feature)
    assert place is not None
    assert place.country_code is None
    listed = {"geometry": {"coordinates": [10.7865, 52.4227]}, "properties": {"type": ["Address"], "confidence": []}}
    assert azure_client._place(listed) is not None
    assert azure_client._stop({"position": {"lat": 52.0, "lon": 13.0}, "poi": "IONITY", "address": []}) is not None
    with pytest.raises(MapsError):
        azure_client._route({"properties": [], "geometry": "x"}, None)
