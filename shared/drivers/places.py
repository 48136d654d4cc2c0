"""A car's own places (its geofences: "home", "work") are its drivers'. Each belongs to the driver whose time
with the car holds when its shape was set (`placedAt`, kept by edits of anything else: shared/geofences/service.py);
one set while nobody drove the car (fleet staff's, or undated) is nobody's and stays with the car.

That one rule says what a driver's export holds (shared/privacy/export.py) and what leaves with them: when the
handover away from them is finished (shared/drivers/handover.py: the next driver never sees, nor drives into
alerts of, the former driver's home) and when they are erased (shared/privacy/erasure.py)."""

from __future__ import annotations

from shared.containers import TENANCY
from shared.drivers.periods import Period
from shared.geofences.store import KIND_VEHICLE_GEOFENCE, OWN_PLACES, placed_at
from shared.stores.base import Document, DocumentStore


async def placed_in(store: DocumentStore, period: Period) -> list[Document]:
    """The car's own geofences whose shape was set within the period."""
    found = await store.query(TENANCY, OWN_PLACES, {"@k": KIND_VEHICLE_GEOFENCE, "@v": period.vehicle_id})
    return [
        d
        for d in found
        if d.get("kind") == KIND_VEHICLE_GEOFENCE
        and d.get("vehicleId") == period.vehicle_id
        and isinstance(d.get("brandId"), str)
        and period.holds(placed_at(d))
    ]


async def forget_places(store: DocumentStore, period: Period) -> int:
    """Delete the car's places that are the period's driver's; how many went (idempotent: none the second time)."""
    deleted = 0
    for doc in await placed_in(store, period):
        if await store.delete(TENANCY, str(doc["brandId"]), str(doc["id"])):
            deleted += 1
    return deleted
