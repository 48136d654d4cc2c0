"""The OpenAPI 3.1 document, generated from the operation table and the pydantic models that validate requests
(OpenAPI 3.1 schemas are JSON Schema 2020-12, which is what pydantic emits): there is no second copy to edit.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from shared.drivers.problems import PROBLEM_JSON
from shared.fleet import models as m
from shared.fleet.api import OPERATIONS, Operation
from shared.fleet.http import JSON

REF: Final = "#/components/schemas/{model}"
TAGS: Final = ("vehicles", "history", "alerts", "driver", "privacy", "dashboard", "meta")
REASONS: Final = {
    400: "Invalid path, query or JSON",
    401: "Missing or wrong function key (Azure only; the local host does not check keys)",
    404: "No such vehicle, alert or driver link",
    405: "Method not allowed",
    409: "Already exists",
    413: "Body too large (4 KB)",
    422: "Invalid body fields (see `errors`)",
    503: "A backing service (Cosmos DB, IoT Hub, Graph) failed; retry after `Retry-After` seconds",
}


def _parameters(model: type[BaseModel] | None, where: str) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:  # `X | None = None`: a parameter that may be left out, never sent as null
            prop.pop("default", None)
            prop.update(options[0])
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required}
        if description:
            param["description"] = description
        param["schema"] = prop
        out.append(param)
    return out


def _operation(op: Operation, refs: dict[tuple[type[BaseModel], str], str]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if op.status == 204:
        responses["204"] = {"description": "Done (also when there was nothing to do)"}
    elif op.response is not None:
        schema = {"$ref": refs[op.response, "serialization"]}
        responses[str(op.status)] = {"description": op.summary, "content": {JSON: {"schema": schema}}}
    else:
        responses[str(op.status)] = {"description": op.summary, "content": {JSON: {"schema": {"type": "object"}}}}
    problem = {"$ref": refs[m.ProblemDetails, "serialization"]}
    for status in sorted({*op.problems, 401, 503}):
        responses[str(status)] = {"description": REASONS[status], "content": {PROBLEM_JSON: {"schema": problem}}}
    responses["401"].pop("content")  # the host answers 401 itself, with no body
    body: dict[str, Any] = {}
    if op.body is not None:
        body = {
            "requestBody": {
                "required": op.operation_id != "acknowledgeAlert",
                "content": {JSON: {"schema": {"$ref": refs[op.body, "validation"]}}},
            }
        }
    spec = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": _parameters(op.path, "path") + _parameters(op.query, "query"),
        **body,
        "responses": responses,
    }
    if op.description:
        spec["description"] = op.description
    return spec


def _dashboard() -> dict[str, Any]:
    html = {"description": "The dashboard page", "content": {"text/html": {"schema": {"type": "string"}}}}
    anonymous: list[dict[str, list[str]]] = []
    asset = {
        "name": "asset",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": ["app.js", "app.css"]},
    }
    return {
        "/dashboard": {
            "get": {
                "operationId": "getDashboard",
                "summary": "The fleet dashboard (anonymous page; it asks for the function key)",
                "tags": ["dashboard"],
                "security": anonymous,
                "responses": {"200": html},
            }
        },
        "/dashboard/{asset}": {
            "get": {
                "operationId": "getDashboardAsset",
                "summary": "The dashboard's script and style sheet",
                "tags": ["dashboard"],
                "security": anonymous,
                "parameters": [asset],
                "responses": {
                    "200": {"description": "The asset", "content": {"*/*": {"schema": {"type": "string"}}}},
                    "404": {"description": "No such asset"},
                },
            }
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    wanted: list[tuple[type[BaseModel], Any]] = [(m.ProblemDetails, "serialization")]
    for op in OPERATIONS:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        if op.response is not None:
            wanted.append((op.response, "serialization"))
    key_map, definitions = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    refs: dict[tuple[type[BaseModel], str], str] = {}
    for (model, mode), value in key_map.items():
        if isinstance(model, type) and issubclass(model, BaseModel):
            refs[model, mode] = value["$ref"]
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault("/" + op.route, {})[op.method.lower()] = _operation(op, refs)
    paths.update(_dashboard())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Fleet API",
            "version": "1.0.0",
            "description": "Cars, their live state, history, alerts and drivers' privacy controls. "
            "Errors are RFC 7807 `application/problem+json`. See docs/api.md.",
        },
        "servers": [{"url": "/api"}],
        "security": [{"functionKey": []}, {"functionKeyQuery": []}],
        "tags": [{"name": name} for name in TAGS],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "functionKey": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"},
            },
        },
    }
