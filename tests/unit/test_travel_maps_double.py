"""An in-memory MapsClient for the travel planner's tests, and the checks that it keeps the interface's promises.

Not a stand-in for Azure Maps (the Maps helper's sandbox is that, wire-level): a deterministic double of
shared.maps.base.MapsClient. Geography: a few named places; roads are 1.3 x the great-circle distance driven at
`speed_kmh` plus a fixed traffic delay; points listed in `unroutable` have no road (NoRouteError, as an island
without a ferry). Errors queued in `fail` are raised by the next calls, in order, as the real client raises them
after its own retries.
"""

from __future__ import annotations

import datetime as dt

import pytest

from shared.device_messages import canonical_time
from shared.maps.base import MapsClient
from shared.maps.errors import MapsError, NoRouteError
from shared.maps.types import ChargingStop, EvParams, GeoPoint, Place, Route
from shared.travel.budget import distance_km

BERLIN = GeoPoint(52.52, 13.405)
POTSDAM = GeoPoint(52.3906, 13.0645)
WOLFSBURG = GeoPoint(52.4227, 10.7865)
COPENHAGEN = GeoPoint(55.6761, 12.5683)
REYKJAVIK = GeoPoint(64.1466, -21.9426)

PLACES = {
    "potsdam": Place(POTSDAM, "Potsdam, Brandenburg", "DE", "locality", "high"),
    "wolfsburg": Place(WOLFSBURG, "Berliner Ring 2, 38440 Wolfsburg", "DE", "address", "high"),
    "copenhagen": Place(COPENHAGEN, "København", "DK", "locality", "high"),
    "reykjavik": Place(REYKJAVIK, "Reykjavík", "IS", "locality", "high"),
}
STOP = ChargingStop("IONITY Brandenburg", GeoPoint(52.41, 12.56), "A2, 14776 Brandenburg", 240)


class FakeMaps(MapsClient):
    def __init__(
        self,
        *,
        speed_kmh: float = 100.0,
        traffic_delay_s: int = 300,
        ev_remaining: bool = True,
        unroutable: frozenset[GeoPoint] = frozenset({REYKJAVIK}),
        stops: tuple[ChargingStop, ...] = (STOP,),
    ) -> None:
        self.speed_kmh = speed_kmh
        self.traffic_delay_s = traffic_delay_s
        self.ev_remaining = ev_remaining
        self.unroutable = unroutable
        self.stops = stops
        self.calls: list[str] = []  # "geocode", "route", "charging": one per Maps transaction
        self.evs: list[EvParams | None] = []
        self.fail: list[MapsError] = []

    def _transaction(self, name: str) -> None:
        self.calls.append(name)
        if self.fail:
            raise self.fail.pop(0)

    def count(self, name: str) -> int:
        return self.calls.count(name)

    async def geocode(self, query: str) -> Place | None:
        if not query.strip():
            return None  # blank text: no transaction (the interface's promise)
        self._transaction("geocode")
        return PLACES.get(query.strip().lower())

    async def route(
        self, origin: GeoPoint, destination: GeoPoint, depart_at: dt.datetime, ev: EvParams | None = None
    ) -> Route:
        self.evs.append(ev)
        self._transaction("route")
        if destination in self.unroutable or origin in self.unroutable:
            raise NoRouteError("no route between the points")
        length_m = round(distance_km(origin, destination) * 1300)
        travel_s = round(length_m / (self.speed_kmh / 3.6)) + self.traffic_delay_s
        remaining = None
        if ev is not None and self.ev_remaining:
            remaining = ev.current_kwh - length_m / 100_000 * ev.consumption_kwh_per_100km
        return Route(
            length_m,
            travel_s,
            self.traffic_delay_s,
            canonical_time(depart_at),
            canonical_time(depart_at + dt.timedelta(seconds=travel_s)),
            (origin, destination),
            remaining,
        )

    async def charging_stops(self, route: Route, max_detour_s: int = 900, limit: int = 3) -> list[ChargingStop]:
        self._transaction("charging")
        return [s for s in self.stops if s.detour_s is None or s.detour_s <= max_detour_s][:limit]

    async def close(self) -> None:
        return None


async def test_double_routes_deterministically_and_refuses_islands() -> None:
    maps = FakeMaps()
    now = dt.datetime(2026, 12, 7, 8, tzinfo=dt.UTC)
    first = await maps.route(BERLIN, WOLFSBURG, now)
    assert first == await maps.route(BERLIN, WOLFSBURG, now)
    assert 200_000 < first.length_m < 260_000
    assert first.travel_s > first.traffic_delay_s
    with pytest.raises(NoRouteError):
        await maps.route(BERLIN, REYKJAVIK, now)
    assert await maps.geocode("   ") is None
    assert maps.calls == ["route", "route", "route"]
