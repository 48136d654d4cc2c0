"""The one table of the fleet API's operations: route, method, the models of its parameters, body and response,
and the FleetService call behind it. `dispatch` validates a request against that table; openapi.py turns the
same table into the OpenAPI document. Adding an operation here is all it takes to validate and document it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import orjson
from pydantic import BaseModel, ValidationError

from shared.drivers.problems import PROBLEM_JSON, Problem
from shared.errors import FleetError
from shared.fleet import http as routes
from shared.fleet import models as m
from shared.fleet.http import JSON, ApiRequest, ApiResponse
from shared.fleet.service import FleetService

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 4096
KEY_PARAMETER: Final = "code"  # the function key in the query string: the host's, not ours


@dataclass(frozen=True)
class Call:
    path: Any
    query: Any
    body: Any


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    route: str
    summary: str
    tag: str
    run: Callable[[FleetService, Call], Awaitable[Any]]
    path: type[BaseModel] | None = None
    query: type[BaseModel] = m.NoQuery
    body: type[BaseModel] | None = None
    status: int = 200
    response: type[BaseModel] | None = None
    problems: tuple[int, ...] = (400, 404)
    description: str = ""


def _page(call: Call) -> tuple[int, str | None]:
    return call.query.limit, call.query.continuationToken


async def _no_content(awaitable: Awaitable[None]) -> None:
    await awaitable


OPERATIONS: Final[tuple[Operation, ...]] = (
    Operation(
        "registerVehicle", "POST", routes.VEHICLES, "Register a car", "vehicles",
        lambda s, c: s.register(c.body.vehicleId, c.body.label),
        body=m.VehicleRegistration, status=201, response=m.DeviceConnection, problems=(400, 409, 413, 422),
        description="Creates the car's IoT Hub device identity (SAS) and its vehicle document; returns what the "
        "car needs to connect. The key is shown once: store it in the car.",
    ),
    Operation(
        "listVehicles", "GET", routes.VEHICLES, "List the fleet with live state", "vehicles",
        lambda s, c: s.list_vehicles(*_page(c)), query=m.PageQuery, response=m.VehiclePage, problems=(400,),
    ),
    Operation(
        "getVehicle", "GET", routes.VEHICLE, "A car's live state, driver and consent", "vehicles",
        lambda s, c: s.get_vehicle(c.path.vehicleId), path=m.VehiclePath, response=m.VehicleDetail,
    ),
    Operation(
        "deleteVehicle", "DELETE", routes.VEHICLE, "Erase a car", "privacy",
        lambda s, c: _no_content(s.erase_vehicle(c.path.vehicleId)), path=m.VehiclePath, status=204,
        problems=(400,),
        description="Right to erasure: removes the device identity and every document of the car in every "
        "container, and unlinks its driver. Idempotent.",
    ),
    Operation(
        "getTelemetry", "GET", routes.TELEMETRY, "A car's telemetry history", "history",
        lambda s, c: s.telemetry(c.path.vehicleId, c.query.from_, c.query.to, *_page(c)),
        path=m.VehiclePath, query=m.TelemetryQuery, response=m.TelemetryPage,
    ),
    Operation(
        "listTrips", "GET", routes.TRIPS, "A car's trips, newest first", "history",
        lambda s, c: s.trips(c.path.vehicleId, *_page(c)), path=m.VehiclePath, query=m.PageQuery,
        response=m.TripPage,
    ),
    Operation(
        "listAlerts", "GET", routes.ALERTS, "A car's alerts, newest first", "alerts",
        lambda s, c: s.alerts(c.path.vehicleId, *_page(c)), path=m.VehiclePath, query=m.PageQuery,
        response=m.AlertPage,
    ),
    Operation(
        "acknowledgeAlert", "POST", routes.ALERT_ACK, "Acknowledge an alert", "alerts",
        lambda s, c: s.acknowledge(c.path.vehicleId, c.path.alertId, c.body.note), path=m.AlertPath,
        body=m.AlertAck, response=m.Alert, problems=(400, 404, 413, 422),
        description="Idempotent: the first acknowledgement stands. The body may be empty.",
    ),
    Operation(
        "getAgenda", "GET", routes.AGENDA, "The driver's agenda as the car sees it", "driver",
        lambda s, c: s.agenda(c.path.vehicleId), path=m.VehiclePath, response=m.Agenda,
    ),
    Operation(
        "listMeetings", "GET", routes.MEETINGS, "Teams meetings created for the driver", "driver",
        lambda s, c: s.meetings(c.path.vehicleId, *_page(c)), path=m.VehiclePath, query=m.PageQuery,
        response=m.MeetingPage,
    ),
    Operation(
        "changeConsent", "PATCH", routes.CONSENT, "Change the driver's privacy choices", "privacy",
        lambda s, c: s.change_consent(c.path.vehicleId, c.body.location, c.body.calendar), path=m.VehiclePath,
        body=m.ConsentChange, response=m.ConsentResult, problems=(400, 404, 413, 422),
        description="location=false: positions are dropped at ingestion and removed from the stored state. "
        "calendar=false: no calendar sync, Graph subscription removed, agenda cleared from the car.",
    ),
    Operation(
        "deleteDriver", "DELETE", routes.DRIVER, "Erase a driver", "privacy",
        lambda s, c: _no_content(s.erase_driver(str(c.path.userId))), path=m.DriverPath, status=204,
        problems=(400,),
        description="Right to erasure: the driver's calendar data, meetings and Graph subscription; unlinked "
        "from every car. Idempotent.",
    ),
    Operation(
        "getOpenApi", "GET", routes.OPENAPI, "This document", "meta", lambda s, c: _openapi(), problems=(400,),
    ),
)  # fmt: skip


async def _openapi() -> dict[str, Any]:
    from shared.fleet.openapi import openapi_document

    return openapi_document()


@cache
def _table() -> dict[tuple[str, str], Operation]:
    return {(op.route, op.method): op for op in OPERATIONS}


def problem_response(problem: Problem) -> ApiResponse:
    return ApiResponse(problem.status, problem.to_json(), PROBLEM_JSON, {"Cache-Control": "no-store"})


def _errors(exc: ValidationError, prefix: str) -> list[dict[str, str]]:
    out = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or prefix
        out.append({"field": where if where.startswith(prefix) else f"{prefix}.{where}", "message": error["msg"]})
    return out


def _validate(model: type[BaseModel], data: dict[str, str], where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Problem(400, f"Invalid {where}", f"the {where} is invalid", _errors(exc, where)) from None


def _body(model: type[BaseModel], body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise Problem(413, "Body too large", f"at most {MAX_BODY_BYTES} bytes")
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        raise Problem(400, "Invalid JSON", "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise Problem(400, "Invalid body", "the body must be a JSON object")
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        raise Problem(422, "Invalid body", "the body is invalid", _errors(exc, "body")) from None


async def dispatch(route: str, request: ApiRequest, service: FleetService | None = None) -> ApiResponse:
    op = _table().get((route, request.method.upper()))
    if op is None:
        return problem_response(Problem(405, "Method not allowed", f"{request.method} is not allowed here"))
    try:
        call = Call(
            _validate(op.path, dict(request.route_params), "path") if op.path else None,
            _validate(op.query, {k: v for k, v in request.query.items() if k != KEY_PARAMETER}, "query"),
            _body(op.body, request.body) if op.body else None,
        )
        if service is None:
            from shared.fleet.runtime import fleet_service

            service = fleet_service.get()
        result = await op.run(service, call)
    except Problem as problem:
        return problem_response(problem)
    except FleetError as exc:  # Cosmos or IoT Hub failed after the SDKs' retries (StoreError and kin)
        log.warning("%s: %s", op.operation_id, exc)
        response = problem_response(Problem(503, "Service unavailable", "a backing service failed; retry later"))
        response.headers["Retry-After"] = "5"
        return response
    if op.status == 204:
        return ApiResponse(204)
    if op.response is not None:
        body = op.response.model_validate(result).model_dump_json(by_alias=True).encode()
    else:
        body = orjson.dumps(result)
    return ApiResponse(op.status, body, JSON, {"Cache-Control": "no-store"})
