"""The OpenAPI document: FastAPI's, from the routes and the pydantic models that validate them, completed with
what only this application knows: the security schemes (Entra ID), each route's requirement and security, and
the problem responses of shared/api/problems.py. Served at GET /api/openapi.json.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic.json_schema import models_json_schema

from shared.api.guard import api_routes, requirement_of
from shared.api.problems import PROBLEM_JSON
from shared.auth.policy import API_SCOPE, Requirement
from shared.errors import ConfigurationError
from shared.fleet.models import ProblemDetails

REF: Final = "#/components/schemas/{model}"
ENTRA: Final = "entra"
BEARER: Final = "bearer"
REASONS: Final = {
    400: "Invalid path or query parameters, or a body that is not a JSON object",
    401: "No valid access token (see the WWW-Authenticate header)",
    403: "The caller's roles or memberships do not allow this here, or the brand has the feature off",
    404: "No such resource, or one outside the caller's brands",
    409: "Already exists",
    413: "Body too large (4 KB)",
    422: "Invalid body fields (see `errors`)",
    503: "A backing service (Cosmos DB, IoT Hub, Graph) failed; retry after `Retry-After` seconds",
}
TARGETS: Final = {
    "caller": "any signed-in caller (the answer shows only what they may see)",
    "user": "a signed-in user acting as themselves (not an application)",
    "platform": "the platform",
    "brand": "the brand",
    "fleet": "the fleet",
    "vehicle": "the car",
    "driver": "the driver",
}


def _auth_settings() -> tuple[str, str]:
    """The Entra authority users sign in with and the scope to ask for (AUTH_DASHBOARD_AUTHORITY, AUTH_API_SCOPE;
    without AUTH_AUDIENCE the scope's bare name, so the document still serves on an unconfigured instance)."""
    from shared.settings_model import app_settings, auth_settings

    authority = str(app_settings().auth_dashboard_authority).rstrip("/")
    try:
        scope = auth_settings().api_scope
    except ConfigurationError:
        scope = API_SCOPE
    return authority, scope


def describe(requirement: Requirement) -> str:
    if requirement.target == "public":
        return "Public: no token needed."
    if requirement.permission is None:
        return f"Requires: {TARGETS[requirement.target]}."
    audited = " Audited." if requirement.audited else ""
    return f"Requires: `{requirement.permission.value}` on {TARGETS[requirement.target]}.{audited}"


def _collapse_optional(parameter: dict[str, Any]) -> None:
    """`X | None = None` as a query parameter: one that may be left out, never sent as null."""
    schema = parameter.get("schema", {})
    options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1 and len(schema["anyOf"]) == 2:
        schema.pop("anyOf")
        schema.pop("default", None)
        schema.update(options[0])


def _complete(operation: dict[str, Any], route: APIRoute, requirement: Requirement, scope: str) -> None:
    operation["x-requirement"] = {
        "target": requirement.target,
        "permission": requirement.permission.value if requirement.permission else None,
        "audited": requirement.audited,
    }
    text = describe(requirement)
    operation["description"] = f"{operation['description']}\n\n{text}" if operation.get("description") else text
    for parameter in operation.get("parameters", []):
        _collapse_optional(parameter)
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)  # FastAPI's own validation error shape; ours is a problem
    if requirement.target == "public":
        operation["security"] = []
        return
    operation["security"] = [{ENTRA: [scope]}, {BEARER: []}]
    statuses = {400, 401, 403, 404, 503}
    if route.body_field is not None:
        statuses |= {409, 413, 422}
    problem = {"$ref": REF.format(model=ProblemDetails.__name__)}
    for status in sorted(statuses):
        responses[str(status)] = {"description": REASONS[status], "content": {PROBLEM_JSON: {"schema": problem}}}
    responses["401"]["headers"] = {
        "WWW-Authenticate": {
            "description": 'Bearer realm="fleet-api", error="invalid_token", ...',
            "schema": {"type": "string"},
        }
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The document of `app` (cached on the app, as FastAPI does)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, openapi_version=app.openapi_version, description=app.description,
        routes=app.routes, tags=app.openapi_tags,
    )  # fmt: skip
    authority, scope = _auth_settings()
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    _, definitions = models_json_schema([(ProblemDetails, "serialization")], ref_template=REF)
    schemas.update(definitions.get("$defs", {}))
    components["securitySchemes"] = {
        ENTRA: {
            "type": "oauth2",
            "description": "Microsoft Entra ID: users sign in (authorization code + PKCE) and get the delegated "
            "scope; daemon clients use the client credentials flow and carry app roles (send as bearer).",
            "flows": {
                "authorizationCode": {
                    "authorizationUrl": f"{authority}/oauth2/v2.0/authorize",
                    "tokenUrl": f"{authority}/oauth2/v2.0/token",
                    "scopes": {scope: "Use the fleet API as the signed-in user"},
                }
            },
        },
        BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    }
    for path, route in api_routes(app.routes):
        if not route.include_in_schema:
            continue
        requirement = requirement_of(route)
        if requirement is None:
            raise ValueError(f"{path} declares no requirement")
        for method in route.methods or ():
            _complete(document["paths"][path][method.lower()], route, requirement, scope)
    app.openapi_schema = document
    return document
