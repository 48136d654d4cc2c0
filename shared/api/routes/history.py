"""A car's history and alerts: telemetry, trips, alerts and their acknowledgement."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query

from shared.api import runtime
from shared.api.guard import guard
from shared.api.routes.params import AlertId, VehicleId
from shared.auth.access import Access
from shared.auth.policy import Permission, requires
from shared.fleet import models as m
from shared.fleet.service import FleetService

router = APIRouter()
Fleet = Annotated[FleetService, Depends(runtime.fleet_service)]
Reader = Annotated[Access, guard(requires(Permission.READ_VEHICLES, on="vehicle"))]


@router.get(
    "/vehicles/{vehicleId}/telemetry",
    response_model=m.TelemetryPage,
    summary="A car's telemetry history",
    tags=["history"],
)
async def get_telemetry(
    access: Reader, vehicleId: VehicleId, query: Annotated[m.TelemetryQuery, Query()], fleet: Fleet
) -> Any:
    return await fleet.telemetry(
        vehicleId, query.from_, query.to, query.limit, query.continuationToken, access.reads_from()
    )


@router.get(
    "/vehicles/{vehicleId}/trips", response_model=m.TripPage, summary="A car's trips, newest first", tags=["history"]
)
async def list_trips(access: Reader, vehicleId: VehicleId, query: Annotated[m.PageQuery, Query()], fleet: Fleet) -> Any:
    return await fleet.trips(vehicleId, query.limit, query.continuationToken, access.reads_from())


@router.get(
    "/vehicles/{vehicleId}/alerts", response_model=m.AlertPage, summary="A car's alerts, newest first", tags=["alerts"]
)
async def list_alerts(
    access: Reader, vehicleId: VehicleId, query: Annotated[m.PageQuery, Query()], fleet: Fleet
) -> Any:
    return await fleet.alerts(
        vehicleId, query.limit, query.continuationToken, access.reads_from(), access.others_places()
    )


@router.post(
    "/vehicles/{vehicleId}/alerts/{alertId}/ack",
    response_model=m.Alert,
    summary="Acknowledge an alert",
    tags=["alerts"],
)
async def acknowledge_alert(
    access: Annotated[Access, guard(requires(Permission.ACK_ALERT, on="vehicle"))],
    vehicleId: VehicleId,
    alertId: AlertId,
    fleet: Fleet,
    body: Annotated[m.AlertAck | None, Body()] = None,
) -> Any:
    """Idempotent: the first acknowledgement stands. The body may be empty."""
    return await fleet.acknowledge(vehicleId, alertId, body.note if body else None)
