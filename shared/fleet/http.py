"""The HTTP boundary of the fleet API, free of the Functions runtime and light to import (no pydantic).

A trigger turns its `func.HttpRequest` into an `ApiRequest`, calls `handle(route, request)` and turns the
`ApiResponse` back. Everything else (validation, the operation, problem responses) happens behind `handle`,
imported on the first request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from shared.fleet.service import FleetService

from shared.drivers.problems import PROBLEM_JSON, Problem

log = logging.getLogger(__name__)

# The route templates the triggers bind (functions/fleet_api.py); api.py has the operations behind each.
VEHICLES: Final = "vehicles"
VEHICLE: Final = "vehicles/{vehicleId}"
TELEMETRY: Final = "vehicles/{vehicleId}/telemetry"
TRIPS: Final = "vehicles/{vehicleId}/trips"
ALERTS: Final = "vehicles/{vehicleId}/alerts"
ALERT_ACK: Final = "vehicles/{vehicleId}/alerts/{alertId}/ack"
AGENDA: Final = "vehicles/{vehicleId}/agenda"
MEETINGS: Final = "vehicles/{vehicleId}/meetings"
CONSENT: Final = "vehicles/{vehicleId}/consent"
DRIVER: Final = "drivers/{userId}"
OPENAPI: Final = "openapi.json"
DASHBOARD: Final = "dashboard/{asset?}"

JSON: Final = "application/json"


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    route_params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    url: str = ""


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


async def handle(route: str, request: ApiRequest, service: FleetService | None = None) -> ApiResponse:
    """Answer one request to `route`; never raises (an unexpected error is logged and answered 500).
    `service`: the process's FleetService (shared/fleet/runtime.py) unless a test passes its own."""
    try:
        if route == DASHBOARD:
            from shared.dashboard import serve

            return serve(request.route_params.get("asset"))
        from shared.fleet.api import dispatch

        return await dispatch(route, request, service)
    except Exception:
        log.exception("fleet API %s %s failed", request.method, route)
        return ApiResponse(
            500, Problem(500, "Internal error", "the request failed; it was logged").to_json(), PROBLEM_JSON
        )
