"""The cars a person drives or drove, each for the time its data is theirs: what their export holds
(shared/privacy/export.py) and what their erasure takes with them (shared/privacy/erasure.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.containers import VEHICLES
from shared.device_messages import safe_id
from shared.drivers import handover
from shared.drivers.periods import Period, began, driver_link, driver_memberships, former_periods, merged
from shared.stores.base import DocumentStore


async def cars_driven(store: DocumentStore, user_id: str) -> list[Period]:
    """The cars they drive: their Driver memberships (since they accepted the invitation) and the cars linked to
    them (since their calendar link, else only the car's current state: no date, no history); and the cars they
    drove before, for the time they drove them (shared/drivers/periods.py)."""
    memberships = await driver_memberships(store, user_id)
    link = await driver_link(store, user_id)
    cars = {doc["vehicleId"] for doc in memberships if isinstance(doc.get("vehicleId"), str)}
    query = "SELECT c.vehicleId, c.driver FROM c WHERE c.driver.userId = @u"
    linked: set[str] = set()
    for doc in await store.query(VEHICLES, query, {"@u": user_id}):
        car = doc.get("vehicleId")
        if isinstance(car, str) and driver_of(doc) == user_id:
            linked.add(car)
    # a car whose membership a failed handover left them: their time ended when it named its next driver
    ended: dict[str, str] = {}
    for car in sorted(cars - linked):
        stored = await store.read(VEHICLES, car, safe_id(car))
        until = handover.departed(stored.document if stored is not None else None).get(user_id)
        if until is not None:
            ended[car] = until
    driving = [Period(car, began(user_id, car, memberships, link), ended.get(car)) for car in cars | linked]
    kept = [p for p in driving if p.until is None or p.since < p.until]
    return merged([*kept, *await former_periods(store, user_id)])


def driver_of(vehicle: Mapping[str, Any]) -> str | None:
    driver = vehicle.get("driver")
    return driver.get("userId") if isinstance(driver, dict) else None
