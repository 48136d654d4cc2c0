"""The command catalogue (`catalogue.json` beside this module): what may be sent to a car, by whom, when, for how long.

One source of truth: the API validates names, parameters, roles and preconditions with it; the car contract in
docs/messages.md and docs/schemas/command-v1.schema.json are generated from it (`python -m shared.commands.catalogue
--schema`, a unit test compares them); the simulator's coverage is tested against it.

Parameters are JSON Schema, validated here by a small checker of the subset the catalogue uses (a test holds it
to `jsonschema`'s verdict on generated input) rather than a JSON Schema library: the API's cold start stays light
and the error messages name the field.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from shared.auth.policy import Role
from shared.errors import InvalidRequestError

CATALOGUE_PATH: Final = Path(__file__).with_name("catalogue.json")
Precondition = Literal["stationary", "plugged_in", "location_consent"]
PRECONDITIONS: Final[tuple[Precondition, ...]] = ("stationary", "plugged_in", "location_consent")
MAX_SAFE_INTEGER: Final = 2**53 - 1  # the largest integer every JSON parser (a double) holds exactly
SUPPORTED_KEYWORDS: Final = frozenset({
    "type", "properties", "required", "additionalProperties", "minimum", "maximum", "minLength", "maxLength",
    "enum", "default", "description",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Confirmation:
    """The signal of the car's telemetry that shows the command took effect."""

    signal: str
    equals: Any = None  # a fixed value ...
    parameter: str | None = None  # ... or the value of this parameter ...
    fresh: bool = False  # ... or any value stamped after the command succeeded

    def expected(self, params: Mapping[str, Any]) -> Any:
        return params.get(self.parameter) if self.parameter else self.equals


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    title: str
    roles: frozenset[Role]
    parameters: Mapping[str, Any]
    preconditions: tuple[Precondition, ...]
    ttl_seconds: int
    confirm: Confirmation | None

    def validate(self, params: Any) -> dict[str, Any]:
        """The parameters with defaults filled in; InvalidRequestError naming every bad field otherwise."""
        errors = schema_errors(self.parameters, params, "params")
        if errors:
            raise InvalidRequestError(
                f"invalid parameters for {self.name}", [{"field": f, "message": m} for f, m in errors]
            )
        filled = dict(params)
        for key, prop in self.parameters.get("properties", {}).items():
            if key not in filled and "default" in prop:
                filled[key] = prop["default"]
        return filled


def _number(value: Any) -> bool:
    """A finite JSON number. A JSON integer is a Python int of any size (math.isfinite of one beyond a float's
    range raises OverflowError): it is a number, and `schema_errors` refuses one too large for any parameter."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _type_ok(expected: str, value: Any) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":  # JSON Schema: a number with zero fractional part (1.0 is an integer)
        return _number(value) and (isinstance(value, int) or value == int(value))
    if expected == "number":
        return _number(value)
    raise ValueError(f"unsupported type {expected}")


def schema_errors(schema: Mapping[str, Any], value: Any, where: str) -> list[tuple[str, str]]:
    """(field, message) for every way `value` breaks `schema` (the subset in SUPPORTED_KEYWORDS)."""
    kind = schema.get("type")
    if kind is not None and not _type_ok(kind, value):
        return [(where, f"must be a JSON {kind}")]
    errors: list[tuple[str, str]] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append((where, f"must be one of {', '.join(map(str, schema['enum']))}"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:  # exact for an int of any size
            errors.append((where, f"must be at least {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            errors.append((where, f"must be at most {schema['maximum']}"))
        if not errors and abs(value) > MAX_SAFE_INTEGER:  # unbounded: JSON parsers and Cosmos would lose digits
            errors.append((where, f"is out of range (at most {MAX_SAFE_INTEGER} either way)"))
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append((where, f"must have at least {schema['minLength']} characters"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append((where, f"must have at most {schema['maxLength']} characters"))
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        errors += [(f"{where}.{k}", "is required") for k in schema.get("required", ()) if k not in value]
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(properties[key], item, f"{where}.{key}")
            elif schema.get("additionalProperties", True) is False:
                errors.append((f"{where}.{key}", "is not a parameter of this command"))
    return errors


def _unsupported(schema: Mapping[str, Any], where: str) -> list[str]:
    found = [f"{where}: {k}" for k in schema if k not in SUPPORTED_KEYWORDS]
    for key, prop in schema.get("properties", {}).items():
        found += _unsupported(prop, f"{where}.{key}")
    return found


def _spec(raw: Mapping[str, Any]) -> CommandSpec:
    unsupported = _unsupported(raw["parameters"], raw["name"])
    if unsupported:
        raise ValueError(f"catalogue uses JSON Schema keywords the checker does not know: {unsupported}")
    unknown = set(raw["preconditions"]) - set(PRECONDITIONS)
    if unknown:
        raise ValueError(f"{raw['name']}: unknown preconditions {sorted(unknown)}")
    confirm = raw.get("confirm")
    return CommandSpec(
        name=raw["name"],
        title=raw["title"],
        roles=frozenset(Role(r) for r in raw["roles"]),
        parameters=raw["parameters"],
        preconditions=tuple(raw["preconditions"]),
        ttl_seconds=int(raw["ttlSeconds"]),
        confirm=Confirmation(
            confirm["signal"], confirm.get("equals"), confirm.get("parameter"), bool(confirm.get("fresh"))
        )
        if confirm
        else None,
    )


@cache
def catalogue() -> dict[str, CommandSpec]:
    """Command name → spec, in catalogue order."""
    raw = orjson.loads(CATALOGUE_PATH.read_bytes())
    return {c["name"]: _spec(c) for c in raw["commands"]}


def command(name: Any) -> CommandSpec:
    """The spec of a command name; InvalidRequestError (unknown_command) for anything else."""
    spec = catalogue().get(name) if isinstance(name, str) else None
    if spec is None:
        raise InvalidRequestError(
            "unknown command", [{"field": "name", "message": f"must be one of {', '.join(catalogue())}"}]
        )
    return spec


def car_schema() -> dict[str, Any]:
    """The JSON Schema of what a car receives (a direct method's payload or a queued C2D message's body), one
    branch per command with its parameters: docs/schemas/command-v1.schema.json."""
    branches = [
        {
            "title": spec.title,
            "properties": {"name": {"const": spec.name}, "params": dict(spec.parameters)},
        }
        for spec in catalogue().values()
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/automotive-cloud/fleet/docs/schemas/command-v1.schema.json",
        "title": "Command v1: the payload of a direct method or the body of a queued (C2D) command",
        "description": "Generated from shared/commands/catalogue.json (python -m shared.commands.catalogue --schema).",
        "type": "object",
        "additionalProperties": False,
        "required": ["v", "commandId", "name", "params", "issuedAt", "expiresAt"],
        "properties": {
            "v": {"const": 1},
            "commandId": {"type": "string", "format": "uuid"},
            "name": {"enum": list(catalogue())},
            "params": {"type": "object"},
            "issuedAt": {"type": "string", "format": "date-time"},
            "expiresAt": {"type": "string", "format": "date-time"},
        },
        "oneOf": branches,
    }


def markdown() -> str:
    """The catalogue table of docs/commands.md."""
    rows = [
        "| Command | What it does | Parameters | Who may send it | Preconditions | Waits for a sleeping car "
        "| Confirmed by |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in catalogue().values():
        props = spec.parameters.get("properties", {})
        required = set(spec.parameters.get("required", ()))
        params = ", ".join(f"`{k}`{'' if k in required else '?'} ({_describe(p)})" for k, p in props.items()) or "none"
        confirm = "nothing observable"
        if spec.confirm is not None:
            what = (
                "a fresh value"
                if spec.confirm.fresh
                else f"= `{spec.confirm.parameter}`"
                if spec.confirm.parameter
                else f"= `{orjson.dumps(spec.confirm.equals).decode()}`"
            )
            confirm = f"`{spec.confirm.signal}` {what}"
        roles = ", ".join(r.value for r in Role if r in spec.roles)
        pre = ", ".join(spec.preconditions) or "none"
        rows.append(f"| `{spec.name}` | {spec.title} | {params} | {roles} | {pre} | {spec.ttl_seconds} s | {confirm} |")
    return "\n".join(rows) + "\n"


def _describe(prop: Mapping[str, Any]) -> str:
    parts = [str(prop.get("type", "any"))]
    if "minimum" in prop or "maximum" in prop:
        parts.append(f"{prop.get('minimum', '')}..{prop.get('maximum', '')}")
    if "maxLength" in prop:
        parts.append(f"≤ {prop['maxLength']} chars")
    if "default" in prop:
        parts.append(f"default {orjson.dumps(prop['default']).decode()}")
    return ", ".join(parts)


if __name__ == "__main__":  # pragma: no cover - docs generator
    if "--schema" in sys.argv:
        sys.stdout.write(orjson.dumps(car_schema(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(markdown())
