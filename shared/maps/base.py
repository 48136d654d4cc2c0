"""The interface the domain calls (shared/travel). Every method raises only shared/maps/errors.py errors."""

from __future__ import annotations

import contextlib
import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextvars import ContextVar

from shared.maps.types import ChargingStop, EvParams, GeoPoint, Place, Route

_car: ContextVar[str | None] = ContextVar("maps_car", default=None)


@contextlib.contextmanager
def calls_for_car(vehicle_id: str) -> Iterator[None]:
    """Maps calls in the block are made for this car. Only the local sandbox is told (header x-fleet-caller,
    never sent to Azure) so that tests and the demo can count transactions per car against the budget."""
    token = _car.set(vehicle_id)
    try:
        yield
    finally:
        _car.reset(token)


def current_car() -> str | None:
    return _car.get()


class MapsClient(ABC):
    @abstractmethod
    async def geocode(self, query: str) -> Place | None:
        """The best match for a free-text place (an event's location), or None when nothing matches or the text
        cannot be parsed. One Maps transaction per call (none for blank text)."""

    @abstractmethod
    async def route(
        self, origin: GeoPoint, destination: GeoPoint, depart_at: dt.datetime, ev: EvParams | None = None
    ) -> Route:
        """The fastest driving route with traffic for `depart_at`; with `ev`, the charge left on arrival.
        NoRouteError when none exists."""

    @abstractmethod
    async def charging_stops(self, route: Route, max_detour_s: int = 900, limit: int = 3) -> list[ChargingStop]:
        """EV charging stations along `route` within `max_detour_s` of detour, best first."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections (and the credential)."""
