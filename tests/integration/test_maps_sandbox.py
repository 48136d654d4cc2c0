"""The real AzureMapsClient against the local Azure Maps sandbox, over HTTP on loopback.

What the sandbox cannot show (stated in devstack/maps_sandbox/sandbox.py): real map data, Azure's own rate
limits, the token check (loopback gets no token, which is itself asserted here)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devstack.maps_sandbox import MapsSandbox, serve
from shared.maps.azure_client import AzureMapsClient
from shared.maps.base import calls_for_car
from shared.maps.errors import MapsError, MapsThrottledError, NoRouteError
from shared.maps.types import EvParams, GeoPoint

WOLFSBURG = GeoPoint(52.4227, 10.7865)
BERLIN = GeoPoint(52.5200, 13.4050)
COPENHAGEN = GeoPoint(55.6761, 12.5683)
RONNE = GeoPoint(55.1009, 14.7066)


class CountingCredential:
    """Stands in for DefaultAzureCredential to prove it is never asked on loopback."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_token(self, *scopes: str) -> Any:
        self.calls += 1
        raise AssertionError("no token may be requested for a loopback sandbox")


class Sleeps:
    """Records the client's waits instead of sleeping (the waits are what is checked, not the clock)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def _utc_at(hour: int) -> dt.datetime:
    """Tomorrow at `hour`:00 local solar time of Wolfsburg/Berlin (UTC+1), always in the future."""
    day = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date()
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC) - dt.timedelta(hours=1)


@pytest.fixture
async def maps() -> AsyncIterator[tuple[MapsSandbox, AzureMapsClient, CountingCredential, Sleeps]]:
    sandbox = MapsSandbox()
    credential, sleeps = CountingCredential(), Sleeps()
    async with serve(sandbox) as url:
        client = AzureMapsClient.create(url, "maps-account-id", "mi-client", credential=credential, sleep=sleeps)
        try:
            yield sandbox, client, credential, sleeps
        finally:
            await client.close()


async def test_geocode_hit_miss_and_abroad(
    maps: tuple[MapsSandbox, AzureMapsClient, CountingCredential, Sleeps],
) -> None:
    sandbox, client, credential, _ = maps
    place = await client.geocode("Praxis am Markt, Marktplatz 3, Heidelberg")
    assert place is not None
    assert (place.kind, place.country_code, place.confidence) == ("address", "DE", "high")
    assert abs(place.point.lat - 49.4122) < 1e-6
    assert abs(place.point.lon - 8.7101) < 1e-6
    city = await client.geocode("  wolfsburg ")
    assert city is not None
    assert city.kind == "locality"
    assert city.country_code == "DE"
    abroad = await client.geocode("Fabrikam Inc., 1 Microsoft Way, Redmond, WA")
    assert abroad is not None
    assert abroad.country_code == "US"
    assert abroad.kind == "address"
    assert await client.geocode("Room 4.12") is None
    assert await client.geocode("School") is None
    assert await client.geocode("   ") is None  # no transaction for blank text
    assert sandbox.transactions("geocode") == 5
    assert credential.calls == 0
    assert not any(r.authorization or r.client_id for r in sandbox.requests)  # loopback: no token, no account id


async def test_route_with_traffic_at_rush_hour_and_at_night(
    maps: tuple[MapsSandbox, AzureMapsClient, CountingCredential, Sleeps],
) -> None:
    sandbox, client, _, _ = maps
    rush = await client.route(WOLFSBURG, BERLIN, _utc_at(8))
    night = await client.route(WOLFSBURG, BERLIN, _utc_at(3))
    assert rush.length_m == night.length_m > 170_000  # ~150 km great circle x 1.3
    assert rush.travel_s > night.travel_s
    assert rush.traffic_delay_s > 0
    assert night.traffic_delay_s == 0
    assert rush.departure.endswith("Z")
    assert rush.departure.startswith(_utc_at(8).strftime("%Y-%m-%dT%H:%M"))
    arrival = dt.datetime.fromisoformat(rush.arrival.replace("Z", "+00:00"))
    assert arrival == _utc_at(8) + dt.timedelta(seconds=rush.travel_s)
    assert 2 <= len(rush.points) <= 200
    assert rush.points[0] == WOLFSBURG
    assert rush.points[-1] == BERLIN
    assert rush.remaining_kwh is None
    sent = [r for r in sandbox.requests if r.op == "route"]
    assert [r.query["api-version"] for r in sent] == ["2025-01-01", "2025-01-01"]


async def test_ev_remaining_charge_and_charging_stops(
    maps: tuple[MapsSandbox, AzureMapsClient, CountingCredential, Sleeps],
) -> None:
    sandbox, client, _, _ = maps
    route = await client.route(WOLFSBURG, BERLIN, _utc_at(11), EvParams(12.0, 77.0, 18.0))
    expected = 12.0 - 18.0 * route.length_m / 100_000
    assert route.remaining_kwh == pytest.approx(expected, abs=0.01)
    assert route.remaining_kwh is not None
    assert route.remaining_kwh < 0  # not reachable on this charge
    stops = await client.charging_stops(route, max_detour_s=900, limit=3)
    assert 1 <= len(stops) <= 3
    assert all(s.detour_s is not None and 0 <= s.detour_s <= 900 for s in stops)
    assert [s.detour_s for s in stops] == sorted(s.detour_s or 0 for s in stops)
    assert all(s.name and s.address for s in stops)
    assert all(51.5 < s.point.lat < 53.5 and 10 < s.point.lon < 14 for s in stops)  # along the way
    call = next(r for r in sandbox.requests if r.op == "alongRoute")
    assert call.query["categorySet"] == "7309"
    assert call.query["maxDetourTime"] == "900"
    assert call.query["limit"] == "3"
    assert call.query["api-version"] == "1.0"
    assert await client.charging_stops(route, max_detour_s=0) == []  # no station exactly on the line


async def test_no_route_across_the_sea(maps: tuple[MapsSandbox, AzureMapsClient, CountingCredential, Sleeps]) -> None:
    _, client, _, sleeps = maps
    with pytest.raises(NoRouteError) as caught:
        await client.route(COPENHAGEN, RONNE, _utc_at(10))
    assert not caught.value.transient
    assert caught.value.status == 400
    assert sleeps.waits == []  # a permanent answer is not retried
    # The bridges count as roads: Copenhagen to Aarhus is routable.
    assert (await client.route(COPENHAGEN, GeoPoint(56.1629, 10.2039), _utc_at(10))).length_m > 150_000


async def test_429_with_retry_after_then_success(
    maps: tuple[MapsSandbox, AzureMapsClient, CountingCredential, Sleeps],
) -> None:
    sandbox, client, _, sleeps = maps
    sandbox.fail_next(429, {"Retry-After": "2"}, times=2)
    place = await client.geocode("Aarhus")
    assert place is not None
    assert place.country_code == "DK"
    assert sleeps.waits == [2.0, 2.0]
    assert sandbox.transactions("geocode") == 3


async def test_persistent_throttling_and_503_end_in_errors(
    maps: tuple[MapsSandbox, AzureMapsClient, CountingCredential, Sleeps],
) -> None:
    sandbox, client, _, sleeps = maps
    sandbox.fail_next(429, {"Retry-After": "1"}, times=3)
    with pytest.raises(MapsThrottledError) as throttled:
        await client.route(WOLFSBURG, BERLIN, _utc_at(10))
    assert throttled.value.retry_after_seconds == 1.0
    assert throttled.value.transient
    assert sandbox.transactions("route") == 3  # one call and client.max_retries (2) retries, then it gives up
    sandbox.fail_next(503, times=10)
    with pytest.raises(MapsError) as unavailable:
        await client.geocode("Berlin")
    assert unavailable.value.status == 503
    assert unavailable.value.transient
    assert not isinstance(unavailable.value, MapsThrottledError)
    assert sandbox.transactions("geocode") == 3
    assert sleeps.waits == [1.0, 1.0, 0.5, 1.0]  # Retry-After honoured; exponential backoff without it
    sandbox.faults.clear()


async def test_retry_after_beyond_the_cap_is_not_waited_for(
    maps: tuple[MapsSandbox, AzureMapsClient, CountingCredential, Sleeps],
) -> None:
    sandbox, client, _, sleeps = maps
    sandbox.fail_next(429, {"Retry-After": "600"}, times=1)
    with pytest.raises(MapsThrottledError) as throttled:
        await client.geocode("Berlin")
    assert throttled.value.retry_after_seconds == 600.0
    assert sleeps.waits == []


async def test_requests_are_counted_per_car(
    maps: tuple[MapsSandbox, AzureMapsClient, CountingCredential, Sleeps],
) -> None:
    sandbox, client, _, _ = maps
    with calls_for_car("car-1"):
        await client.geocode("Wolfsburg")
        await client.route(BERLIN, WOLFSBURG, _utc_at(12))
    with calls_for_car("car-2"):
        await client.route(BERLIN, WOLFSBURG, _utc_at(12))
    await client.geocode("Berlin")  # for no car
    assert sandbox.transactions(caller="car-1") == 2
    assert sandbox.transactions("route", "car-1") == 1
    assert sandbox.per_caller("route") == {"car-1": 1, "car-2": 1}
    assert sandbox.transactions(caller=None) == 4


async def test_the_sandbox_answers_bad_requests_like_azure_maps(
    maps: tuple[MapsSandbox, AzureMapsClient, CountingCredential, Sleeps],
) -> None:
    _sandbox, client, _, _ = maps
    session = client._client_session()
    base = client.endpoint.base_url
    async with session.get(f"{base}/geocode", params={"api-version": "1.0", "query": "Berlin"}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "BadRequest"
    async with session.post(
        f"{base}/search/alongRoute/json",
        params={"api-version": "1.0", "query": "ev", "maxDetourTime": "3601", "categorySet": "7309"},
        json={"route": {"type": "LineString", "coordinates": [[10, 52], [11, 52]]}},
    ) as response:
        assert response.status == 400
    async with session.get(f"{base}/search/fuzzy/json") as response:
        assert response.status == 404
        assert "error" in await response.json()
