"""The calendar sync's `AgendaEnricher` (shared/calendar/sync.py): travel to each meeting from where this car is.

Per car and sync: read the vehicle document (position, charge, ignition, trips, the driver's time zone and the
consent the telemetry policy enforces), load the car's travel state, plan, add `travel` and local times to the
agenda items, send the late notice when one is due, and save the new state. The sync builds and hashes the
agenda as before, so a car gets a twin patch only when its figures changed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from shared.containers import VEHICLES
from shared.device_messages import safe_id
from shared.errors import ConflictError, NotFoundError, PreconditionFailedError, StoreError
from shared.maps.base import MapsClient, calls_for_car
from shared.stores.base import DocumentStore
from shared.travel.agenda_travel import add_travel
from shared.travel.config import TravelSettings
from shared.travel.notices import Notice, late_notices, record_sent
from shared.travel.planner import CarSnapshot, TravelPlan, plan_travel
from shared.travel.stores import PlaceCache, TravelStateStore

STATE_RACES: Final = 3  # plans of one car saved at once, before the job gives up (the queue retries it)
log = logging.getLogger(__name__)

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
        spent: list[str] = []  # Maps calls a run that lost the race to save made: counted by the next attempt
        for _ in range(STATE_RACES):
            state, etag = await self.states.read(vehicle_id)
            if spent and state is not None:
                state = {**state, "calls": [*(state.get("calls") or []), *spent]}
            with calls_for_car(vehicle_id):  # the local sandbox counts Maps transactions per car (not in Azure)
                plan = await plan_travel(
                    items,
                    car,
                    state,
                    now,
                    user_id=user_id,
                    maps=self.maps(),
                    places=self.places,
                    settings=self.settings,
                )
            try:
                # Saved before notifying: a failed send must not lose the calls already counted against the budget.
                etag = await self.states.write(vehicle_id, plan.state, etag)
                break
            except NotFoundError:
                # Deleted since it was read: the driver's calendar went (forget_travel) or it expired. Nothing is
                # written back (it would be the gone driver's routes): this run's agenda has no travel, the next
                # run starts afresh.
                return add_travel(items, {}, zone if isinstance(zone, str) else None)
            except (PreconditionFailedError, ConflictError):
                # Another run of this car saved first: plan again from its state (its routes are reused).
                spent += _new_calls(state, plan.state)
        else:
            raise StoreError(f"travel state of {vehicle_id}: kept changing; gave up after {STATE_RACES} tries")
        self.last_plan = plan
        enriched = add_travel(items, plan.travel, zone if isinstance(zone, str) else None)
        if self.notify is not None:
            for notice in late_notices(enriched, plan.state["notices"], now):
                await self._send(self.notify, vehicle_id, plan.state, etag, notice)
        return enriched

    async def _send(self, notify: Notify, vehicle_id: str, state: dict[str, Any], etag: str, notice: Notice) -> None:
        """Claim the notice in the car's state (conditional: a run that overlapped this one may have sent it), send
        it, and give the claim back if the send failed (the next run sends it)."""
        try:
            claimed = await self.states.write(vehicle_id, record_sent(state, [notice]), etag)
        except (PreconditionFailedError, ConflictError, NotFoundError):
            return  # another run wrote the state since: it saw the same figures and decides this notice
        try:
            await notify(vehicle_id, notice.payload)
        except BaseException:
            try:
                await self.states.write(vehicle_id, state, claimed)
            except StoreError as exc:  # the claim stays: this bucket's notice is lost, the next bucket's is not
                log.warning("travel notice of a car not given back: %s", type(exc).__name__)
            raise


def _new_calls(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[str]:
    """The calls a plan added to the budget (its state's `calls` beyond what it started from)."""
    had = Counter(c for c in (before or {}).get("calls") or [] if isinstance(c, str))
    new: list[str] = []
    for call in after.get("calls") or []:
        if had[call] > 0:
            had[call] -= 1
        else:
            new.append(call)
    return new
