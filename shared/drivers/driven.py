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
    """The cars that name them as their driver, since they named them (`driver.since`, a linked driver's or a driver
    account's signed in at the car; for a car named before that was recorded, since they accepted the invitation or
    were linked, whichever came first; with neither, an account signed in before 2026-12-08: only the car's current
    state, no date, no history); a car whose handover away from them is unfinished, until it; and the cars they
    drove before, for the time they drove them (shared/drivers/periods.py)."""
    memberships = await driver_memberships(store, user_id)
    link = await driver_link(store, user_id)

    def since(car: str, recorded: object) -> str:
        return recorded if isinstance(recorded, str) else began(user_id, car, memberships, link)

    query = "SELECT c.vehicleId, c.driver FROM c WHERE c.driver.userId = @u"
    driving: list[Period] = []
    for doc in await store.query(VEHICLES, query, {"@u": user_id}):
        car = doc.get("vehicleId")
        if isinstance(car, str) and driver_of(doc) == user_id:
            driving.append(Period(car, since(car, doc["driver"].get(handover.SINCE))))
    # A car their membership or link names but that does not name them: one whose handover away from them a
    # failure cut short (their time ended when it named its next driver), else one they never became the driver
    # of (an acceptance cut short before the car named them), whose data is another driver's.
    named = {doc["vehicleId"] for doc in memberships if isinstance(doc.get("vehicleId"), str)}
    if link is not None and isinstance(link.get("vehicleId"), str):
        named.add(link["vehicleId"])
    # and a car whose handover away from them is unfinished though nothing of theirs names it (a driver account
    # signed in at it: no membership, no link)
    named.update(await handover.unfinished(store, user_id))
    for car in sorted(named - {p.vehicle_id for p in driving}):
        stored = await store.read(VEHICLES, car, safe_id(car))
        vehicle = stored.document if stored is not None else {}
        left = [e for e in handover.pending(vehicle) if e["userId"] == user_id]  # oldest first
        if left and driver_of(vehicle) != user_id:
            driving.append(Period(car, since(car, left[0].get(handover.SINCE)), left[0]["at"]))
    kept = [p for p in driving if p.until is None or p.since < p.until]
    return merged([*kept, *await former_periods(store, user_id)])


async def drives(store: DocumentStore, vehicle_id: str, user_id: str) -> bool:
    """Whether the car names the user as its driver now (one point read)."""
    stored = await store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
    return stored is not None and driver_of(stored.document) == user_id


async def named_before_since(store: DocumentStore, vehicle_id: str, user_id: str) -> bool:
    """Whether the car names the user as its driver without `since` (named before it was recorded): then their
    membership's and link's dates still date their time (shared/drivers/periods.py `began`) and must be kept."""
    stored = await store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
    driver = stored.document.get("driver") if stored is not None else None
    return isinstance(driver, dict) and driver.get("userId") == user_id and handover.SINCE not in driver


async def named_since(store: DocumentStore, vehicle: Mapping[str, Any], user_id: str) -> str:
    """When the car's data became theirs, for the driver the car names now: `driver.since`, or for a car named
    before that was recorded, their membership's or link's date (`began`; UNKNOWN when neither dates it, so
    nothing dated is theirs). The one rule the export (`cars_driven`) and a driver's reads (shared/auth/access.py)
    date a current driver's time by."""
    driver = vehicle.get("driver")
    recorded = driver.get(handover.SINCE) if isinstance(driver, dict) else None
    if isinstance(recorded, str):
        return recorded
    car = str(vehicle.get("vehicleId") or "")
    return began(user_id, car, await driver_memberships(store, user_id), await driver_link(store, user_id))


def driver_of(vehicle: Mapping[str, Any]) -> str | None:
    driver = vehicle.get("driver")
    return driver.get("userId") if isinstance(driver, dict) else None
