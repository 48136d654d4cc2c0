"""Cars: the caller's list, registration into a fleet, one car's live state, erasure."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from shared.api import models as am
from shared.api import runtime
from shared.api.guard import guard
from shared.api.routes.params import BrandId, FleetId, VehicleId
from shared.auth.access import Access
from shared.auth.policy import SIGNED_IN, Permission, requires
from shared.fleet import models as m
from shared.fleet.service import FleetService

router = APIRouter(tags=["vehicles"])
Fleet = Annotated[FleetService, Depends(runtime.fleet_service)]


@router.get("/vehicles", response_model=m.VehiclePage, summary="The cars the caller may see, with live state")
async def list_vehicles(
    access: Annotated[Access, guard(SIGNED_IN)], query: Annotated[am.VehicleListQuery, Query()], fleet: Fleet
) -> Any:
    visible = access.visibility()
    return await fleet.list_vehicles(visible, query.limit, query.continuationToken, query.brandId, query.fleetId)


@router.post(
    "/brands/{brandId}/fleets/{fleetId}/vehicles",
    status_code=201,
    response_model=m.DeviceConnection,
    summary="Register a car in a fleet",
)
async def register_vehicle(
    access: Annotated[Access, guard(requires(Permission.REGISTER_VEHICLE, on="fleet"))],
    brandId: BrandId,
    fleetId: FleetId,
    body: m.VehicleRegistration,
    fleet: Fleet,
) -> Any:
    """Creates the car's IoT Hub device identity (SAS) and its vehicle document; returns what the car needs to
    connect. The key is shown once: store it in the car."""
    return await fleet.register(brandId, fleetId, body.vehicleId, body.label)


@router.get("/vehicles/{vehicleId}", response_model=m.VehicleDetail, summary="A car's live state, driver and consent")
async def get_vehicle(
    access: Annotated[Access, guard(requires(Permission.READ_VEHICLES, on="vehicle"))],
    vehicleId: VehicleId,
    fleet: Fleet,
) -> Any:
    return await fleet.get_vehicle(vehicleId)


@router.delete("/vehicles/{vehicleId}", response_model=m.ErasureReceipt, summary="Erase a car", tags=["privacy"])
async def delete_vehicle(
    access: Annotated[Access, guard(requires(Permission.ERASE_VEHICLE, on="vehicle"))],
    vehicleId: VehicleId,
    fleet: Fleet,
) -> Any:
    """Right to erasure: a tombstone first (so ingestion in flight stops), then the device identity, every
    document of the car in every container, its dead letters and parked messages, its driver's link, calendar
    and Teams meetings. Idempotent; answers the receipt of what this call deleted where."""
    return await fleet.erase_vehicle(vehicleId)
