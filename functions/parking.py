"""Admin HTTP API for contained messages (dead letters and parked messages): list them, redrive them after a
fix (docs/api.md, docs/architecture.md "Failure modes"). Function-level auth, as the rest of the API."""

from __future__ import annotations

import logging

import azure.functions as func
import orjson

from shared.drivers.problems import PROBLEM_JSON, Problem
from shared.parking.admin import list_records, redrive_records
from shared.parking.redrive import RedriveError

bp = func.Blueprint()
JSON = "application/json"


def _problem(problem: Problem) -> func.HttpResponse:
    return func.HttpResponse(problem.to_json(), status_code=problem.status, mimetype=PROBLEM_JSON)


@bp.function_name("admin_parked")
@bp.route(route="admin/parked", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def admin_parked(req: func.HttpRequest) -> func.HttpResponse:
    from shared.stores.blob_deadletters import blob_dead_letters_from_env

    try:
        result = await list_records(dict(req.params), blob_dead_letters_from_env.get())
    except RedriveError as exc:
        return _problem(Problem(400, "Invalid query", str(exc)))
    return func.HttpResponse(orjson.dumps(result), status_code=200, mimetype=JSON)


@bp.function_name("admin_parked_redrive")
@bp.route(route="admin/parked/redrive", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def admin_parked_redrive(req: func.HttpRequest) -> func.HttpResponse:
    from shared.stores.blob_deadletters import blob_dead_letters_from_env
    from shared.telemetry.runtime import ingestor

    try:
        result = await redrive_records(req.get_body(), blob_dead_letters_from_env.get(), ingestor.get())
    except RedriveError as exc:
        return _problem(Problem(400, "Invalid redrive", str(exc)))
    logging.info("redrive %s", result)
    return func.HttpResponse(orjson.dumps(result), status_code=200, mimetype=JSON)
