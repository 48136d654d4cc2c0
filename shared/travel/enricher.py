"""The calendar sync's `AgendaEnricher` (shared/calendar/sync.py): travel to each meeting from where this car is.

Per car and sync: read the vehicle document (position, charge, ignition, trips, the driver's time zone and the
consent the telemetry policy enforces), load the car's travel state, plan, add `travel` and local times to the
agenda items, send the late notice when one is due, and save the new state. The sync builds and hashes the
agenda as before, so a car gets a twin patch only when its figures changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.containers import VEHICLES
from shared.device_messages import safe_id
from shared.maps.base import MapsClient, calls_for_car
from shared.stores.base import DocumentStore
from shared.travel.agenda_travel import add_travel
from shared.travel.config import TravelSettings
from shared.travel.notices import late_notices, record_sent
from shared.travel.planner import CarSnapshot, TravelPlan, plan_travel
from shared.travel.stores import PlaceCache, TravelStateStore

# Sends one C2D message (the notice's payload) to the car; raises when it could not (the notice stays due).
Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


async def location_consented(store: DocumentStore, vehicle: Mapping[str, Any]) -> bool:
    """Whether the car's position may be used: the same decision ingestion enforces (flags, consent records,
    the brand's bases), so travel never uses a position the platform would have withheld."""
    from shared.privacy.consent import brand_bases
    from shared.telemetry.privacy import policy_for

    brand = vehicle.get("brandId")
    bases = await brand_bases(store, brand if isinstance(brand, str) else None)
    return "position" not in policy_for(vehicle, tuple(sorted(bases.items()))).withheld


@dataclass
class TravelEnricher:
    store: DocumentStore
    maps: Callable[[], MapsClient]  # e.g. the per-loop client of shared/maps/runtime.py
    states: TravelStateStore
    places: PlaceCache
    settings: TravelSettings
    notify: Notify | None = None
    model_of: Callable[[Mapping[str, Any]], str | None] = lambda vehicle: None  # the car's model id, if known
    last_plan: TravelPlan | None = None  # the latest run's plan (calls made: the demo's budget report)

    async def __call__(
        self, vehicle_id: str, user_id: str, items: list[dict[str, Any]], now: dt.datetime
    ) -> list[dict[str, Any]]:
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        vehicle = stored.document if stored is not None else {"vehicleId": vehicle_id}
        driver = vehicle.get("driver")
        zone = driver.get("timeZone") if isinstance(driver, Mapping) else None
        consent = await location_consented(self.store, vehicle) if stored is not None else False
        car = CarSnapshot.from_vehicle(vehicle, consent, self.model_of(vehicle))
        with calls_for_car(vehicle_id):  # the local sandbox counts Maps transactions per car (never sent to Azure)
            plan = await plan_travel(
                items,
                car,
                await self.states.load(vehicle_id),
                now,
                user_id=user_id,
                maps=self.maps(),
                places=self.places,
                settings=self.settings,
            )
        self.last_plan = plan
        enriched = add_travel(items, plan.travel, zone if isinstance(zone, str) else None)
        # Saved before notifying: a failed send must not lose the calls already counted against the budget.
        await self.states.save(vehicle_id, plan.state)
        if self.notify is not None:
            for notice in late_notices(enriched, plan.state["notices"], now):
                await self.notify(vehicle_id, notice.payload)
                await self.states.save(vehicle_id, record_sent(plan.state, [notice]))
        return enriched
