"""HTTP API: link (`PUT`) and unlink (`DELETE`) a vehicle's driver. Function-level auth (a function key)."""

from __future__ import annotations

import azure.functions as func
import orjson

from shared.calendar import runtime
from shared.drivers.link import parse_link, validate_vehicle_id
from shared.drivers.problems import PROBLEM_JSON, Problem

bp = func.Blueprint()


@bp.function_name("vehicle_driver")
@bp.route(route="vehicles/{vehicleId}/driver", methods=["PUT", "DELETE"], auth_level=func.AuthLevel.FUNCTION)
async def vehicle_driver(req: func.HttpRequest) -> func.HttpResponse:
    try:
        vehicle_id = validate_vehicle_id(req.route_params.get("vehicleId"))
        if req.method.upper() == "DELETE":
            if not await runtime.driver_links.get().unlink(vehicle_id):
                raise Problem(404, "No driver", f"vehicle {vehicle_id} has no driver")
            return func.HttpResponse(status_code=204)
        link = parse_link(req.get_body())
        result = await runtime.driver_links.get().link(vehicle_id, link)
    except Problem as problem:
        return func.HttpResponse(problem.to_json(), status_code=problem.status, mimetype=PROBLEM_JSON)
    return func.HttpResponse(orjson.dumps(result), status_code=200, mimetype="application/json")
