"""Cars: the caller's list, registration into a fleet, one car's live state, erasure."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query

from shared.api import models as am
from shared.api import runtime
from shared.api.guard import guard
from shared.api.problems import PROBLEM_JSON
from shared.api.routes.params import BrandId, FleetId, VehicleId
from shared.auth.access import Access
from shared.auth.policy import SIGNED_IN, Permission, requires
from shared.cost.rollup import DEFAULT_HISTORY_DAYS, MAX_HISTORY_DAYS
from shared.fleet import models as m
from shared.fleet.service import FleetService

router = APIRouter(tags=["vehicles"])
# Revocation applies to cars pre-registered for DPS; a car registered in direct mode answers 409 (a problem).
NOT_FOR_DIRECT_MODE: Final[dict[int | str, dict[str, Any]]] = {
    409: {
        "description": "The car was registered in direct mode, not for DPS",
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
    }
}
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
    response_model=m.DeviceConnection | m.Preregistration,
    summary="Register a car in a fleet (direct mode) or pre-register it for DPS",
)
async def register_vehicle(
    access: Annotated[Access, guard(requires(Permission.REGISTER_VEHICLE, on="fleet"))],
    brandId: BrandId,
    fleetId: FleetId,
    body: m.VehicleRegistration,
    fleet: Fleet,
) -> Any:
    """Without `provisioning` (direct mode, for development): creates the car's IoT Hub device identity (SAS) and
    its vehicle document and returns what the car needs to connect; the key is shown once. With `provisioning`
    (the production path): pre-registers the car for the Device Provisioning Service: no identity (DPS creates it
    at first boot, on the hub of the car's region), no secret; the answer is what its provisioning client needs
    (a derived development key only for symmetric-key cars where PROVISIONING_DEVELOPMENT_KEYS is true)."""
    choice = body.provisioning.model_dump() if body.provisioning is not None else None
    return await fleet.register(brandId, fleetId, body.vehicleId, body.label, choice)


@router.get("/vehicles/{vehicleId}", response_model=m.VehicleDetail, summary="A car's live state, driver and consent")
async def get_vehicle(
    access: Annotated[Access, guard(requires(Permission.READ_VEHICLES, on="vehicle"))],
    vehicleId: VehicleId,
    fleet: Fleet,
) -> Any:
    return await fleet.get_vehicle(vehicleId, access.reads_from(), access.others_places())


@router.get(
    "/brands/{brandId}/cost", response_model=m.BrandCost, summary="A brand's cost meter per day", tags=["brands"]
)
async def get_brand_cost(
    access: Annotated[Access, guard(requires(Permission.READ_BRAND, on="brand"))],
    brandId: BrandId,
    fleet: Fleet,
    days: Annotated[
        int, Query(ge=1, le=MAX_HISTORY_DAYS, description="Days of rolled-up history.")
    ] = DEFAULT_HISTORY_DAYS,
) -> Any:
    """What the brand's cars cost: request units, IoT Hub messages and units, function CPU per day (today and
    yesterday) and month (this and the last), per car on average, and the estimated month in USD per car
    (docs/cost.md, "The cost meter"), as of `asOf`: the brand's snapshot, at most COST_SNAPSHOT_MAX_AGE_SECONDS
    old. `estimated` says the request units are estimated from document sizes. `history`: the daily rollup's
    closed days of the last `days` days."""
    return await fleet.brand_cost(brandId, days)


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


@router.post(
    "/vehicles/{vehicleId}/revoke",
    responses=NOT_FOR_DIRECT_MODE,
    response_model=m.Revocation,
    summary="Revoke a stolen or scrapped car's identity",
    tags=["provisioning"],
)
async def revoke_vehicle(
    access: Annotated[Access, guard(requires(Permission.REVOKE_VEHICLE, on="vehicle"))],
    vehicleId: VehicleId,
    fleet: Fleet,
) -> Any:
    """The allocation function refuses the car from now on (it cannot provision again) and its device is disabled
    on its IoT hub (its connection is closed and it cannot connect). Idempotent; the car's data stays (DELETE
    erases it). Only for cars pre-registered for DPS: 409 for one registered directly."""
    return await fleet.revoke(vehicleId)


@router.post(
    "/vehicles/{vehicleId}/reinstate",
    responses=NOT_FOR_DIRECT_MODE,
    response_model=m.Reinstatement,
    summary="Reinstate a revoked car that was recovered",
    tags=["provisioning"],
)
async def reinstate_vehicle(
    access: Annotated[Access, guard(requires(Permission.REVOKE_VEHICLE, on="vehicle"))],
    vehicleId: VehicleId,
    fleet: Fleet,
) -> Any:
    """Undo a revocation: the allocation function admits the car again and its device is enabled on its hub.
    Idempotent; 409 for a car registered directly."""
    return await fleet.reinstate(vehicleId)


@router.put(
    "/vehicles/{vehicleId}/provisioning/region",
    responses={
        409: {
            "description": "The car was registered in direct mode, not for DPS, or it is revoked",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
        }
    },
    response_model=m.RegionChange,
    summary="Move a car to another region (data residency)",
    tags=["provisioning"],
)
async def move_vehicle_region(
    access: Annotated[Access, guard(requires(Permission.REVOKE_VEHICLE, on="vehicle"))],
    vehicleId: VehicleId,
    body: m.RegionMove,
    fleet: Fleet,
) -> Any:
    """A car sold abroad: its `provisioning.region` becomes `region` (400 for a region no IoT hub serves). The car
    moves at its next provisioning: the allocation function then assigns it a hub of the new region, and DPS
    re-provisions it there migrating its twin (docs/provisioning.md, "Moving a car to another region"). Idempotent;
    409 for a car registered directly or revoked."""
    return await fleet.move_region(vehicleId, body.region)
