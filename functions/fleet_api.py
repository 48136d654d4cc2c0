"""HTTP API for fleet operators and companion apps, and the dashboard page (docs/api.md).

One function per route template; each hands its request to shared/fleet/http.py and maps the answer back.
Function-level auth (a function key) everywhere except the dashboard page, which holds no data: its script
asks for the key and calls the API with it.
"""

from __future__ import annotations

import azure.functions as func

from shared.fleet import http as api

bp = func.Blueprint()
FUNCTION = func.AuthLevel.FUNCTION


async def _answer(route: str, req: func.HttpRequest) -> func.HttpResponse:
    request = api.ApiRequest(req.method.upper(), dict(req.route_params), dict(req.params), req.get_body(), req.url)
    result = await api.handle(route, request)
    return func.HttpResponse(
        result.body, status_code=result.status, headers=result.headers, mimetype=result.content_type
    )


@bp.function_name("fleet_vehicles")
@bp.route(route=api.VEHICLES, methods=["GET", "POST"], auth_level=FUNCTION)
async def fleet_vehicles(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer(api.VEHICLES, req)


@bp.function_name("fleet_vehicle")
@bp.route(route=api.VEHICLE, methods=["GET", "DELETE"], auth_level=FUNCTION)
async def fleet_vehicle(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer(api.VEHICLE, req)


@bp.function_name("fleet_telemetry")
@bp.route(route=api.TELEMETRY, methods=["GET"], auth_level=FUNCTION)
async def fleet_telemetry(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer(api.TELEMETRY, req)


@bp.function_name("fleet_trips")
@bp.route(route=api.TRIPS, methods=["GET"], auth_level=FUNCTION)
async def fleet_trips(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer(api.TRIPS, req)


@bp.function_name("fleet_alerts")
@bp.route(route=api.ALERTS, methods=["GET"], auth_level=FUNCTION)
async def fleet_alerts(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer(api.ALERTS, req)


@bp.function_name("fleet_alert_ack")
@bp.route(route=api.ALERT_ACK, methods=["POST"], auth_level=FUNCTION)
async def fleet_alert_ack(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer(api.ALERT_ACK, req)


@bp.function_name("fleet_agenda")
@bp.route(route=api.AGENDA, methods=["GET"], auth_level=FUNCTION)
async def fleet_agenda(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer(api.AGENDA, req)


@bp.function_name("fleet_meetings")
@bp.route(route=api.MEETINGS, methods=["GET"], auth_level=FUNCTION)
async def fleet_meetings(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer(api.MEETINGS, req)


@bp.function_name("fleet_consent")
@bp.route(route=api.CONSENT, methods=["PATCH"], auth_level=FUNCTION)
async def fleet_consent(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer(api.CONSENT, req)


@bp.function_name("fleet_driver")
@bp.route(route=api.DRIVER, methods=["DELETE"], auth_level=FUNCTION)
async def fleet_driver(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer(api.DRIVER, req)


@bp.function_name("fleet_openapi")
@bp.route(route=api.OPENAPI, methods=["GET"], auth_level=FUNCTION)
async def fleet_openapi(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer(api.OPENAPI, req)


@bp.function_name("fleet_dashboard")
@bp.route(route=api.DASHBOARD, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def fleet_dashboard(req: func.HttpRequest) -> func.HttpResponse:
    return await _answer(api.DASHBOARD, req)
