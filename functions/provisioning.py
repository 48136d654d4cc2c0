"""DPS's custom allocation webhook: the Device Provisioning Service asks which IoT hub a car goes to; and the sweep
of direct-mode registrations abandoned half-way (a timer, at the end).

DPS cannot send a bearer token: it calls Azure Functions webhooks with the function key in the URL (the
enrollment's custom allocation definition holds `https://<app>/api/provisioning/allocate?code=<key>`; docs
"Understand custom allocation policies": the policy authenticates with a function key, authorization level
Function). That key is the one credential DPS supports, so this function, unlike the API, is FUNCTION level;
the key lives in the enrollment and the host, never in code or logs (nothing here logs the URL or headers).

200 with the AllocationResponse; anything else fails the device's registration (DPS gives the device a failed
registration and assigns no hub): 400 for a body that is not an allocation request, 403 for a refused car
(unknown, revoked, wrong attestation, no hub in its region), 503 when the store did not answer in time. Problem
bodies are our own text: no stack trace, no input echoed beyond the registration id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import azure.functions as func
import orjson

from shared.api.problems import NO_STORE, PROBLEM_JSON, Problem
from shared.errors import FleetError
from shared.provisioning import runtime
from shared.provisioning.allocation import Refusal

bp = func.Blueprint()
# DPS waits a bounded time for the webhook; answer well within it, or say 503 so the device retries later.
BUDGET_SECONDS: Final = 10.0
MAX_BODY_BYTES: Final = 64 * 1024
# Every 10 minutes: a registration's claim lapses after 5 (shared/fleet/service.py, REGISTRATION_LEASE_SECONDS), so an
# identity a crashed registration left is gone within 15. A literal, not a setting: nothing to tune per deployment.
REGISTRATION_SWEEP_SCHEDULE: Final = "0 */10 * * * *"


@bp.function_name("provisioning_allocate")
@bp.route(route="provisioning/allocate", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def provisioning_allocate(req: func.HttpRequest) -> func.HttpResponse:
    body = req.get_body()
    if len(body) > MAX_BODY_BYTES:
        return _problem(Problem(413, "Allocation request too large", f"over {MAX_BODY_BYTES} bytes"))
    try:
        answer = await asyncio.wait_for(runtime.allocate(body), BUDGET_SECONDS)
    except (TimeoutError, FleetError) as exc:
        logging.warning("provisioning: allocation not decided: %s", type(exc).__name__)
        problem = Problem(503, "Allocation unavailable", "try again later")
        return func.HttpResponse(
            problem.to_json(), status_code=503, mimetype=PROBLEM_JSON, headers={"Retry-After": "5"}
        )
    if isinstance(answer, Refusal):
        status = 400 if answer.client_error else 403
        title = "Invalid allocation request" if answer.client_error else "Registration refused"
        logging.warning("provisioning: refused (%s): %s", answer.reason, answer.detail)
        return _problem(Problem(status, title, f"{answer.reason}: {answer.detail}"))
    logging.info("provisioning: allocated to %s", answer.hub)
    return func.HttpResponse(
        orjson.dumps(answer.response()), status_code=200, mimetype="application/json", headers=NO_STORE
    )


def _problem(problem: Problem) -> func.HttpResponse:
    return func.HttpResponse(problem.to_json(), status_code=problem.status, mimetype=PROBLEM_JSON, headers=NO_STORE)


@bp.function_name("registration_sweep")
@bp.timer_trigger(arg_name="timer", schedule=REGISTRATION_SWEEP_SCHEDULE, run_on_startup=False, use_monitor=True)
async def registration_sweep(timer: func.TimerRequest) -> None:
    """Direct-mode registrations abandoned after their identity was made (the attempt died before it completed or
    cleaned up, and no retry came): the identity deleted, the claim removed
    (FleetService.sweep_abandoned_registrations). A failure raises: the next run tries again."""
    from shared.fleet.runtime import fleet_service  # the API's wiring: loaded only when the timer fires

    swept = await fleet_service.get().sweep_abandoned_registrations()
    logging.info("registration sweep: %d abandoned registrations swept", len(swept))
