"""Geofences: a fleet's (and its speed alert), a car's own ("home", "work"), and a car's geofence events.

Writes need `geofences.manage` on the fleet or on the car (audited); reads `vehicles.read` there. The behaviour is
shared/geofences/service.py; semantics (event time, lateness window, retraction, consent, curfew) docs/geofences.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Path, Query, Response

from shared.api import geofence_models as gm
from shared.api import runtime
from shared.api.guard import guard
from shared.api.routes.params import BrandId, FleetId, VehicleId
from shared.auth.access import Access
from shared.auth.policy import Permission, requires
from shared.fleet import models as m
from shared.fleet.service import FleetService
from shared.geofences.service import GeofenceService

router = APIRouter()
CREATED: Final[dict[int | str, dict[str, Any]]] = {201: {"description": "Created"}}
GeofenceId = Annotated[gm.GeofenceId, Path()]


async def geofence_service(fleet: Annotated[FleetService, Depends(runtime.fleet_service)]) -> GeofenceService:
    """On the fleet service's store and clock, with its privacy policy (the car's brand's bases)."""
    return GeofenceService(fleet.store, fleet.clock, fleet.policy)


Geofences = Annotated[GeofenceService, Depends(geofence_service)]
FleetManager = Annotated[Access, guard(requires(Permission.MANAGE_GEOFENCES, on="fleet"))]
FleetReader = Annotated[Access, guard(requires(Permission.READ_VEHICLES, on="fleet"))]
VehicleManager = Annotated[Access, guard(requires(Permission.MANAGE_GEOFENCES, on="vehicle"))]
VehicleReader = Annotated[Access, guard(requires(Permission.READ_VEHICLES, on="vehicle"))]


def _created(response: Response, result: tuple[dict[str, Any], bool]) -> dict[str, Any]:
    body, created = result
    response.status_code = 201 if created else 200
    return body


# --- a fleet's geofences --------------------------------------------------------------------------------------


@router.get(
    "/brands/{brandId}/fleets/{fleetId}/geofences",
    response_model=gm.GeofenceList,
    summary="A fleet's geofences",
    tags=["brands"],
)
async def list_fleet_geofences(access: FleetReader, brandId: BrandId, fleetId: FleetId, geofences: Geofences) -> Any:
    return await geofences.list_fleet_geofences(brandId, fleetId)


@router.put(
    "/brands/{brandId}/fleets/{fleetId}/geofences/{geofenceId}",
    response_model=gm.Geofence,
    summary="Create or replace a fleet's geofence",
    responses=CREATED,
    tags=["brands"],
)
async def put_fleet_geofence(
    access: FleetManager,
    brandId: BrandId,
    fleetId: FleetId,
    geofenceId: GeofenceId,
    body: gm.GeofenceDefinition,
    geofences: Geofences,
    response: Response,
) -> Any:
    """201 when created, 200 when replaced. Ingestion sees the change within a minute (each instance refreshes a
    fleet's geofences at most every 60 s)."""
    return _created(response, await geofences.put_fleet_geofence(brandId, fleetId, geofenceId, body.raw()))


@router.get(
    "/brands/{brandId}/fleets/{fleetId}/geofences/{geofenceId}",
    response_model=gm.Geofence,
    summary="A fleet's geofence",
    tags=["brands"],
)
async def get_fleet_geofence(
    access: FleetReader, brandId: BrandId, fleetId: FleetId, geofenceId: GeofenceId, geofences: Geofences
) -> Any:
    return await geofences.get_fleet_geofence(brandId, fleetId, geofenceId)


@router.delete(
    "/brands/{brandId}/fleets/{fleetId}/geofences/{geofenceId}",
    status_code=204,
    summary="Delete a fleet's geofence",
    tags=["brands"],
)
async def delete_fleet_geofence(
    access: FleetManager, brandId: BrandId, fleetId: FleetId, geofenceId: GeofenceId, geofences: Geofences
) -> None:
    """Idempotent. A car inside it when it goes gets one `exit` event with its next position."""
    await geofences.delete_fleet_geofence(brandId, fleetId, geofenceId)


@router.get(
    "/brands/{brandId}/fleets/{fleetId}/geofence-settings",
    response_model=gm.FleetGeofenceSettingsView,
    summary="A fleet's speed alert",
    tags=["brands"],
)
async def get_geofence_settings(access: FleetReader, brandId: BrandId, fleetId: FleetId, geofences: Geofences) -> Any:
    return await geofences.get_settings(brandId, fleetId)


@router.put(
    "/brands/{brandId}/fleets/{fleetId}/geofence-settings",
    response_model=gm.FleetGeofenceSettingsView,
    summary="Set a fleet's speed alert",
    tags=["brands"],
)
async def put_geofence_settings(
    access: FleetManager, brandId: BrandId, fleetId: FleetId, body: gm.FleetGeofenceSettings, geofences: Geofences
) -> Any:
    """A `speeding` alert when a car of the fleet is over `speedLimitKmh` for longer than `speedLimitSeconds`;
    it clears 5 km/h under the limit. `speedLimitKmh: null` turns it off."""
    return await geofences.put_settings(brandId, fleetId, body.model_dump())


# --- a car's own geofences -------------------------------------------------------------------------------------


@router.get(
    "/vehicles/{vehicleId}/geofences",
    response_model=gm.GeofenceList,
    summary="A car's own geofences",
    tags=["vehicles"],
)
async def list_vehicle_geofences(access: VehicleReader, vehicleId: VehicleId, geofences: Geofences) -> Any:
    return await geofences.list_vehicle_geofences(vehicleId, access.others_places())


@router.put(
    "/vehicles/{vehicleId}/geofences/{geofenceId}",
    response_model=gm.Geofence,
    summary="Create or replace a car's own geofence (home, work)",
    responses=CREATED,
    tags=["vehicles"],
)
async def put_vehicle_geofence(
    access: VehicleManager,
    vehicleId: VehicleId,
    geofenceId: GeofenceId,
    body: gm.GeofenceDefinition,
    geofences: Geofences,
    response: Response,
) -> Any:
    """The driver's (or the fleet's staff's) private geofences for one car, evaluated with its fleet's."""
    hidden = access.others_places()  # a former driver's places: not there for the car's next driver
    return _created(response, await geofences.put_vehicle_geofence(vehicleId, geofenceId, body.raw(), hidden))


@router.get(
    "/vehicles/{vehicleId}/geofences/{geofenceId}",
    response_model=gm.Geofence,
    summary="A car's own geofence",
    tags=["vehicles"],
)
async def get_vehicle_geofence(
    access: VehicleReader, vehicleId: VehicleId, geofenceId: GeofenceId, geofences: Geofences
) -> Any:
    return await geofences.get_vehicle_geofence(vehicleId, geofenceId, access.others_places())


@router.delete(
    "/vehicles/{vehicleId}/geofences/{geofenceId}",
    status_code=204,
    summary="Delete a car's own geofence",
    tags=["vehicles"],
)
async def delete_vehicle_geofence(
    access: VehicleManager, vehicleId: VehicleId, geofenceId: GeofenceId, geofences: Geofences
) -> None:
    await geofences.delete_vehicle_geofence(vehicleId, geofenceId, access.others_places())


# --- a car's events ----------------------------------------------------------------------------------------------


@router.get(
    "/vehicles/{vehicleId}/geofence-events",
    response_model=gm.GeofenceEventPage,
    summary="A car's geofence events, newest first",
    tags=["history"],
)
async def list_geofence_events(
    access: VehicleReader, vehicleId: VehicleId, query: Annotated[m.PageQuery, Query()], geofences: Geofences
) -> Any:
    """Crossings (enter, exit), curfews (curfew, curfew_end) and location consent (suspended, resumed). A crossing
    late data moved is listed `retracted` at its old time, and again at its new one."""
    return await geofences.events(
        vehicleId, query.limit, query.continuationToken, access.reads_from(), access.others_places()
    )
