"""The HTTP application as a whole: the route-by-requirement table, the one mapping from domain errors to
problem answers, authentication and audit through the guard, and the lazy ASGI entry point."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.api import runtime
from shared.api.app import create_fastapi
from shared.api.asgi import LazyApp
from shared.api.guard import requirements
from shared.api.problems import answer_for, status_of, www_authenticate
from shared.auth.policy import PUBLIC, SIGNED_IN, Permission, Requirement, requires
from shared.auth.principal import Principal
from shared.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    AuthenticationError,
    ConfigurationError,
    FeatureDisabledError,
    InvalidRequestError,
    StoreError,
    UnknownResourceError,
)
from shared.fleet.service import FleetService
from tests.fleet_support import Fleet, OpenGatekeeper

ROOT = Path(__file__).parents[2]
P = Permission

# The route list of the design (issue 11): path → requirement. The app's table must equal it.
PLAN: dict[tuple[str, str], Requirement] = {
    ("GET", "/api/me"): SIGNED_IN,
    ("GET", "/api/vehicles"): SIGNED_IN,
    ("POST", "/api/brands/{brandId}/fleets/{fleetId}/vehicles"): requires(P.REGISTER_VEHICLE, on="fleet"),
    ("GET", "/api/vehicles/{vehicleId}"): requires(P.READ_VEHICLES, on="vehicle"),
    ("DELETE", "/api/vehicles/{vehicleId}"): requires(P.ERASE_VEHICLE, on="vehicle"),
    ("POST", "/api/vehicles/{vehicleId}/revoke"): requires(P.REVOKE_VEHICLE, on="vehicle"),
    ("POST", "/api/vehicles/{vehicleId}/reinstate"): requires(P.REVOKE_VEHICLE, on="vehicle"),
    ("PUT", "/api/vehicles/{vehicleId}/provisioning/region"): requires(P.REVOKE_VEHICLE, on="vehicle"),
    ("GET", "/api/vehicles/{vehicleId}/telemetry"): requires(P.READ_VEHICLES, on="vehicle"),
    ("GET", "/api/vehicles/{vehicleId}/trips"): requires(P.READ_VEHICLES, on="vehicle"),
    ("GET", "/api/vehicles/{vehicleId}/alerts"): requires(P.READ_VEHICLES, on="vehicle"),
    ("POST", "/api/vehicles/{vehicleId}/alerts/{alertId}/ack"): requires(P.ACK_ALERT, on="vehicle"),
    ("GET", "/api/commands/catalogue"): SIGNED_IN,
    ("POST", "/api/vehicles/{vehicleId}/commands"): requires(P.SEND_COMMAND, on="vehicle"),
    ("GET", "/api/vehicles/{vehicleId}/commands"): requires(P.READ_VEHICLES, on="vehicle"),
    ("GET", "/api/vehicles/{vehicleId}/commands/{commandId}"): requires(P.READ_VEHICLES, on="vehicle"),
    ("POST", "/api/vehicles/{vehicleId}/commands/{commandId}/cancel"): requires(P.SEND_COMMAND, on="vehicle"),
    ("GET", "/api/vehicles/{vehicleId}/agenda"): requires(P.READ_DRIVER_DATA, on="vehicle"),
    ("GET", "/api/brands/{brandId}/fleets/{fleetId}/geofences"): requires(P.READ_VEHICLES, on="fleet"),
    ("PUT", "/api/brands/{brandId}/fleets/{fleetId}/geofences/{geofenceId}"): requires(P.MANAGE_GEOFENCES, on="fleet"),
    ("GET", "/api/brands/{brandId}/fleets/{fleetId}/geofences/{geofenceId}"): requires(P.READ_VEHICLES, on="fleet"),
    ("DELETE", "/api/brands/{brandId}/fleets/{fleetId}/geofences/{geofenceId}"): requires(
        P.MANAGE_GEOFENCES, on="fleet"
    ),
    ("GET", "/api/brands/{brandId}/fleets/{fleetId}/geofence-settings"): requires(P.READ_VEHICLES, on="fleet"),
    ("PUT", "/api/brands/{brandId}/fleets/{fleetId}/geofence-settings"): requires(P.MANAGE_GEOFENCES, on="fleet"),
    ("GET", "/api/vehicles/{vehicleId}/geofences"): requires(P.READ_VEHICLES, on="vehicle"),
    ("PUT", "/api/vehicles/{vehicleId}/geofences/{geofenceId}"): requires(P.MANAGE_GEOFENCES, on="vehicle"),
    ("GET", "/api/vehicles/{vehicleId}/geofences/{geofenceId}"): requires(P.READ_VEHICLES, on="vehicle"),
    ("DELETE", "/api/vehicles/{vehicleId}/geofences/{geofenceId}"): requires(P.MANAGE_GEOFENCES, on="vehicle"),
    ("GET", "/api/vehicles/{vehicleId}/geofence-events"): requires(P.READ_VEHICLES, on="vehicle"),
    ("GET", "/api/vehicles/{vehicleId}/meetings"): requires(P.READ_DRIVER_DATA, on="vehicle"),
    ("PATCH", "/api/vehicles/{vehicleId}/consent"): requires(P.CHANGE_CONSENT, on="vehicle"),
    ("GET", "/api/vehicles/{vehicleId}/consent"): requires(P.READ_CONSENT, on="vehicle"),
    ("PUT", "/api/vehicles/{vehicleId}/consent"): requires(P.CHANGE_CONSENT, on="vehicle"),
    ("POST", "/api/vehicles/{vehicleId}/consent/records"): requires(P.RECORD_CONSENT, on="vehicle"),
    ("POST", "/api/vehicles/{vehicleId}/driver/invitations"): requires(P.INVITE_DRIVER, on="vehicle"),
    ("POST", "/api/invitations/{invitationId}/accept"): requires(P.ACCEPT_INVITATION, on="user"),
    ("GET", "/api/me/cars"): requires(P.MANAGE_OWN_ACCOUNT, on="user"),
    ("DELETE", "/api/me/cars/{vehicleId}"): requires(P.MANAGE_OWN_ACCOUNT, on="user"),
    ("PUT", "/api/vehicles/{vehicleId}/driver"): requires(P.LINK_SELF, on="vehicle"),
    ("DELETE", "/api/vehicles/{vehicleId}/driver"): requires(P.UNLINK_DRIVER, on="vehicle"),
    ("DELETE", "/api/drivers/{userId}"): requires(P.ERASE_DRIVER, on="driver"),
    ("GET", "/api/drivers/{userId}/export"): requires(P.EXPORT_DRIVER_DATA, on="driver"),
    ("GET", "/api/brands"): SIGNED_IN,
    # CREATE_BRAND (new) / MANAGE_BRAND (existing): the route checks MANAGE_BRAND, the service creation
    ("PUT", "/api/brands/{brandId}"): requires(P.MANAGE_BRAND, on="brand"),
    ("GET", "/api/brands/{brandId}"): requires(P.READ_BRAND, on="brand"),
    ("GET", "/api/brands/{brandId}/fleets"): requires(P.READ_BRAND, on="brand"),
    ("PUT", "/api/brands/{brandId}/fleets/{fleetId}"): requires(P.MANAGE_FLEETS, on="brand"),
    ("GET", "/api/brands/{brandId}/members"): requires(P.MANAGE_MEMBERS, on="brand"),
    ("PUT", "/api/brands/{brandId}/members"): requires(P.MANAGE_MEMBERS, on="brand"),
    ("DELETE", "/api/brands/{brandId}/members/{principalId}/{membershipId}"): requires(P.MANAGE_MEMBERS, on="brand"),
    ("GET", "/api/brands/{brandId}/audit"): requires(P.READ_AUDIT, on="brand"),
    ("GET", "/api/brands/{brandId}/cost"): requires(P.READ_BRAND, on="brand"),  # the cost meter: its admins
    ("PUT", "/api/brands/{brandId}/collection-policy"): requires(P.MANAGE_FLEETS, on="brand"),
    ("GET", "/api/brands/{brandId}/collection-policy"): requires(P.READ_BRAND, on="brand"),
    ("PUT", "/api/brands/{brandId}/fleets/{fleetId}/collection-policy"): requires(P.MANAGE_FLEETS, on="fleet"),
    ("GET", "/api/brands/{brandId}/fleets/{fleetId}/collection-policy"): requires(P.READ_VEHICLES, on="fleet"),
    ("GET", "/api/audit"): requires(P.READ_AUDIT, on="platform"),
    ("GET", "/api/admin/parked"): requires(P.MANAGE_PARKED, on="platform"),
    ("POST", "/api/admin/parked/redrive"): requires(P.MANAGE_PARKED, on="platform"),
    ("GET", "/api/openapi.json"): PUBLIC,
    ("GET", "/api/health/ready"): PUBLIC,  # the platform's probes carry no token; the answer is ok/down per dependency
    ("GET", "/api/dashboard"): PUBLIC,
    ("GET", "/api/dashboard/"): PUBLIC,
    ("GET", "/api/dashboard/{asset}"): PUBLIC,
}


def test_every_route_declares_a_requirement_and_the_table_is_the_designs() -> None:
    table = requirements(create_fastapi().routes)
    assert [route for route, requirement in table.items() if requirement is None] == []
    assert table == PLAN


def test_a_route_without_a_guard_is_found() -> None:
    app = create_fastapi()

    @app.get("/api/forgotten")
    async def forgotten() -> None:
        return None

    assert requirements(app.routes)["GET", "/api/forgotten"] is None


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidRequestError("bad"), 400),
        (UnknownResourceError("no car"), 404),
        (AlreadyExistsError("exists"), 409),
        (FeatureDisabledError("off"), 403),
        (AuthenticationError("expired"), 401),
        (AccessDeniedError("no role"), 403),
        (StoreError("cosmos 503"), 503),
        (ConfigurationError("unset"), 503),
        (RuntimeError("bug"), 500),
    ],
)
def test_one_table_maps_domain_errors_to_statuses(error: Exception, status: int) -> None:
    answer = answer_for(error)
    assert status_of(error) == answer.problem.status == status
    assert answer.headers["Cache-Control"] == "no-store"
    assert ("Retry-After" in answer.headers) == (status == 503)
    if status >= 500:
        assert str(error) not in answer.problem.detail  # a backing service's or a bug's words stay in the log


def test_the_challenge_names_the_reason_only_when_a_token_was_sent() -> None:
    assert www_authenticate(None) == 'Bearer realm="fleet-api"'
    assert www_authenticate('bad "sig"') == (
        'Bearer realm="fleet-api", error="invalid_token", error_description="bad \'sig\'"'
    )


def test_the_problem_module_and_the_webhook_do_not_import_fastapi() -> None:
    code = "import sys, shared.api.problems, functions.calendar; print('fastapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class Refusing(OpenGatekeeper):
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def authorize(self, principal: Principal, requirement: Requirement, params: Mapping[str, str]) -> Any:
        raise self.error


@pytest.fixture
async def fleet() -> Fleet:
    fleet = Fleet()
    await fleet.add_fleet()
    await fleet.drive("car-001", range(2), speed=10.0)
    return fleet


async def test_without_a_token_the_answer_is_401_with_a_bare_challenge(fleet: Fleet) -> None:
    answer = await fleet.call("GET", "/api/vehicles", token=None)
    assert answer.status == 401
    assert answer.content_type == "application/problem+json"
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="fleet-api"'
    malformed = await fleet.call("GET", "/api/vehicles", token="Basic dXNlcg==")
    assert malformed.status == 401
    assert 'error="invalid_token"' in malformed.headers["WWW-Authenticate"]
    assert "dXNlcg" not in malformed.headers["WWW-Authenticate"]


def unwired() -> Any:
    raise ConfigurationError("AUTH_AUDIENCE is not set")


async def test_public_routes_need_no_token_and_no_gatekeeper(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = Fleet()
    fleet.overrides[runtime.gatekeeper] = unwired  # AUTH_* missing: raises if asked
    assert (await fleet.call("GET", "/api/openapi.json", token=None)).status == 200
    assert (await fleet.call("GET", "/api/dashboard", token=None)).status == 200
    refused = await fleet.call("GET", "/api/vehicles")
    assert refused.status == 503  # an unwired gatekeeper refuses: never open by default
    assert refused.headers["Retry-After"] == "5"


async def test_an_audited_route_records_success_failure_and_refusal(fleet: Fleet) -> None:
    # WHEN a car is erased THEN the success is recorded with the route's status
    assert (await fleet.call("DELETE", "/api/vehicles/car-001", headers={"User-Agent": "ops/1"})).status == 200
    [done] = fleet.audit.records
    assert (done["route"], done["params"], done["outcome"], done["status"]) == (
        "delete_vehicle", {"vehicleId": "car-001"}, "succeeded", 200,
    )  # fmt: skip
    # WHEN the operation fails THEN the failure is recorded with the status answered
    assert (await fleet.call("POST", "/api/vehicles/car-001/alerts/none/ack")).status == 404
    assert fleet.audit.records[-1]["outcome"] == "failed"
    assert fleet.audit.records[-1]["status"] == 404
    # WHEN the gatekeeper refuses THEN the attempt is recorded and nothing happens
    for error, status in ((AccessDeniedError("reader"), 403), (UnknownResourceError("other brand"), 404)):
        fleet.gatekeeper = Refusing(error)
        answer = await fleet.call("DELETE", "/api/drivers/7d3c0a51-2b7e-4c1f-9a43-3f1d2c6e8a01")
        assert answer.status == status
        assert fleet.audit.records[-1]["outcome"] == "denied"
        assert fleet.audit.records[-1]["status"] == status
        assert isinstance(fleet.audit.records[-1]["actor"], Principal)
    assert fleet.forgotten == []
    # AND reads are not audited
    fleet.gatekeeper = OpenGatekeeper()
    before = len(fleet.audit.records)
    assert (await fleet.call("GET", "/api/vehicles")).status == 200
    assert len(fleet.audit.records) == before


async def test_backing_failures_are_503_and_bugs_500_without_a_trace(fleet: Fleet, caplog: Any) -> None:
    class Broken(FleetService):
        async def get_vehicle(self, vehicle_id: str, *_: Any) -> dict[str, Any]:
            raise StoreError("cosmos said 503 to https://account.documents.azure.com")

        async def agenda(self, vehicle_id: str) -> dict[str, Any]:
            raise ZeroDivisionError("secret internals")

    service = fleet.service
    broken = Broken(service.store, service.gateway, service.links, service.forget_calendar)
    fleet.overrides[runtime.fleet_service] = lambda: broken
    unavailable = await fleet.call("GET", "/api/vehicles/car-001")
    assert unavailable.status == 503
    assert unavailable.headers["Retry-After"] == "5"
    assert b"azure.com" not in unavailable.body
    bug = await fleet.call("GET", "/api/vehicles/car-001/agenda")
    assert bug.status == 500
    assert bug.content_type == "application/problem+json"
    assert b"secret" not in bug.body
    assert b"Traceback" not in bug.body
    assert "ZeroDivisionError" in caplog.text  # logged with its stack trace


async def test_a_body_over_4_kb_is_413_before_anything_reads_it(fleet: Fleet) -> None:
    body = b'{"note": "' + b"x" * 5000 + b'"}'
    answer = await fleet.call("POST", "/api/vehicles/car-001/alerts/a/ack", body=body)
    assert answer.status == 413
    assert answer.json["title"] == "Body too large"


async def test_the_lazy_entry_point_answers_lifespan_and_builds_the_app_on_first_request(fleet: Fleet) -> None:
    lazy = LazyApp()
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    await lazy({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert lazy._app is None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=lazy), base_url="http://t") as client:
        assert (await client.get("/api/openapi.json")).status_code == 200
    assert lazy._app is not None


class CreatingTenancy:
    async def put_fleet(self, brand_id: str, fleet_id: str, name: str) -> tuple[dict[str, Any], bool]:
        return {"brandId": brand_id, "fleetId": fleet_id, "name": name}, True


async def test_a_created_resource_is_201_and_audited_as_such(fleet: Fleet) -> None:
    fleet.overrides[runtime.tenancy] = CreatingTenancy
    answer = await fleet.call("PUT", "/api/brands/contoso/fleets/hamburg", body={"name": "Hamburg"})
    assert (answer.status, answer.json["fleetId"]) == (201, "hamburg")
    assert (fleet.audit.records[-1]["route"], fleet.audit.records[-1]["status"]) == ("put_fleet", 201)
