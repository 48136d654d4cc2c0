"""The collection policy's format: docs/schemas/collection-policy-v1.schema.json, the one statement of it.

The backend refuses what the schema refuses before it stores or pushes a policy; the car's module (edge/policy.py
`parse`) refuses the same documents (tests/unit/test_collection_policy.py holds both to a corpus). The checker is a
small one for the keywords the schema uses (held to `jsonschema`'s verdict by the same test), as
shared/commands/catalogue.py does: no JSON Schema library at the API's cold start, and errors that name the field.

The API takes and stores a policy with `signals` keyed by VSS path (the schema). The module twin cannot carry
that: IoT Hub refuses a property name with '.' (or '$', '#', space, control characters; docs "Understand and use
device twins", tags and properties format) with 400 ArgumentInvalid. `twin_form` is the one statement of what
the twin's desired `collection` holds: the same policy with `signals` an array of `{"path": ..., <rule fields>}`
sorted by path (edge/policy.py `parse` reads it).

`normalized` spells every field out. A twin patch merges objects into the desired properties, so a field a new
policy leaves out would otherwise keep its old value in the twin, and the module, which reads the whole
`collection` object of each patch as the policy, must never see nulls: every field is given. Arrays (`signals`,
`captures`) are replaced whole by a patch, so the patch `{"collection": twin_form(policy)}` makes the twin hold
exactly the new policy, whatever an earlier one named.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Final

import orjson

SCHEMA_PATH: Final = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "collection-policy-v1.schema.json"
SUPPORTED_KEYWORDS: Final = frozenset({
    "$schema", "$id", "$defs", "$ref", "title", "description", "type", "required", "properties",
    "additionalProperties", "propertyNames", "maxProperties", "items", "maxItems", "minimum", "maximum",
    "minLength", "maxLength", "pattern", "anyOf", "const",
})  # fmt: skip
# The module's defaults (edge/policy.py): what a field left out means.
RULE_DEFAULTS: Final[dict[str, Any]] = {
    "rateHz": 1.0, "onChange": False, "deadband": 0.0, "heartbeatSeconds": 60.0, "priority": 0,
}  # fmt: skip
CAPTURE_DEFAULTS: Final[dict[str, Any]] = {"preSeconds": 10.0, "postSeconds": 10.0, "priority": 3}
INTERVAL_DEFAULT: Final = 5.0


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(SCHEMA_PATH.read_bytes())
    unknown = _unsupported(loaded)
    if unknown:
        raise ValueError(f"{SCHEMA_PATH.name} uses keywords the checker does not know: {sorted(unknown)}")
    return loaded


def _unsupported(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(_unsupported(n) for n in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {k for k in node if k not in SUPPORTED_KEYWORDS}
    for key, value in node.items():
        if key in ("properties", "$defs"):
            found |= set().union(*(_unsupported(v) for v in value.values())) if value else set()
        elif key in ("additionalProperties", "propertyNames", "items", "anyOf"):
            found |= _unsupported(value)
    return found


def errors(document: Any) -> list[tuple[str, str]]:
    """(field, message) for every way `document` breaks the schema; empty when it is a valid policy."""
    root = schema()
    return _check(root, root, document, "collection")


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    # an int of any size is finite (math.isfinite of one beyond a float's range raises OverflowError)
    number = (
        isinstance(value, int | float) and not isinstance(value, bool) and (type(value) is int or math.isfinite(value))
    )
    if kind == "integer":  # JSON Schema: a number with zero fractional part
        return number and value == int(value)
    if kind == "number":
        return number
    raise ValueError(f"unsupported type {kind}")


def _check(root: Mapping[str, Any], node: Mapping[str, Any], value: Any, where: str) -> list[tuple[str, str]]:
    if "$ref" in node:
        name = str(node["$ref"]).removeprefix("#/$defs/")
        node = {**root["$defs"][name], **{k: v for k, v in node.items() if k != "$ref"}}
    kinds = node.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_type_ok(k, value) for k in kinds):
            return [(where, f"must be a JSON {' or '.join(kinds)}")]
    found: list[tuple[str, str]] = []
    if "const" in node and not (value == node["const"] and type(value) is type(node["const"])):
        found.append((where, f"must be {orjson.dumps(node['const']).decode()}"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            found.append((where, f"must be at least {node['minimum']}"))
        if "maximum" in node and value > node["maximum"]:
            found.append((where, f"must be at most {node['maximum']}"))
    if isinstance(value, str):
        if "minLength" in node and len(value) < node["minLength"]:
            found.append((where, f"must have at least {node['minLength']} characters"))
        if "maxLength" in node and len(value) > node["maxLength"]:
            found.append((where, f"must have at most {node['maxLength']} characters"))
        if "pattern" in node and not re.search(node["pattern"], value):
            found.append((where, f"must match {node['pattern']}"))
    if isinstance(value, list):
        if "maxItems" in node and len(value) > node["maxItems"]:
            found.append((where, f"must have at most {node['maxItems']} items"))
        if "items" in node:
            for i, item in enumerate(value):
                found += _check(root, node["items"], item, f"{where}[{i}]")
    if isinstance(value, dict):
        found += _check_object(root, node, value, where)
    if "anyOf" in node and not any(not _check(root, branch, value, where) for branch in node["anyOf"]):
        found.append((where, "matches none of the allowed forms"))
    return found


def _check_object(
    root: Mapping[str, Any], node: Mapping[str, Any], value: dict[str, Any], where: str
) -> list[tuple[str, str]]:
    properties: Mapping[str, Any] = node.get("properties", {})
    found = [(f"{where}.{k}", "is required") for k in node.get("required", ()) if k not in value]
    if "maxProperties" in node and len(value) > node["maxProperties"]:
        found.append((where, f"must have at most {node['maxProperties']} entries"))
    extra = node.get("additionalProperties", True)
    for key, item in value.items():
        if "propertyNames" in node:
            found += [(f"{where}[{key[:64]}]", m) for _, m in _check(root, node["propertyNames"], key, where)]
        if key in properties:
            found += _check(root, properties[key], item, f"{where}.{key}")
        elif extra is False:
            found.append((f"{where}.{key}", "is not a field of the policy"))
        elif isinstance(extra, dict):
            found += _check(root, extra, item, f"{where}[{key}]")
    return found


def _rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    return {k: rule.get(k, d) for k, d in RULE_DEFAULTS.items()}


def normalized(policy: Mapping[str, Any]) -> dict[str, Any]:
    """A valid policy with every field spelled out (the module's defaults where it left one out)."""
    default = _rule(policy.get("default", {}))
    captures = []
    for capture in policy.get("captures", []):
        captures.append({
            "name": capture["name"], "trigger": dict(capture["trigger"]),
            **{k: capture.get(k, d) for k, d in CAPTURE_DEFAULTS.items()},
        })  # fmt: skip
    return {
        "version": policy["version"],
        "intervalSeconds": policy.get("intervalSeconds", INTERVAL_DEFAULT),
        "default": default,
        "signals": {path: _rule(rule) for path, rule in sorted(policy.get("signals", {}).items())},
        "captures": captures,
    }


def twin_form(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The module twin's desired `collection` for a valid policy: `normalized`, with `signals` an array of
    `{"path": <VSS path>, <the rule's fields>}` sorted by path, so every key is a valid twin property name. The
    whole of it is the patch: IoT Hub replaces arrays, so no signal of an earlier policy stays behind."""
    full = normalized(policy)
    return {**full, "signals": [{"path": path, **rule} for path, rule in full["signals"].items()]}
