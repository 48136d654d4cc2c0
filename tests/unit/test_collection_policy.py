"""The collection policy format: the backend's checker, `jsonschema` on docs/schemas/collection-policy-v1.schema.json
and the car's module (edge/policy.py `parse`) on one corpus of valid and invalid policies.

The backend is stricter than the module in the cases listed in BACKEND_ONLY (the module ignores or coerces what the
schema refuses); everything else must get the same verdict from all three.
"""

from __future__ import annotations

import copy
from typing import Any, Final

import jsonschema
import orjson
import pytest

from edge import policy as edge
from shared.collection import policy as fmt

SPEED: Final = "Vehicle.Speed"
FULL: Final[dict[str, Any]] = {
    "version": "fleet-7",
    "intervalSeconds": 5,
    "default": {"rateHz": 1, "priority": 0},
    "signals": {
        SPEED: {"rateHz": 2, "onChange": True, "deadband": 0.5, "priority": 1},
        "Vehicle.Cabin.HVAC.IsAirConditioningActive": {"rateHz": 0},
    },
    "captures": [
        {"name": "hard_braking", "trigger": {"signal": SPEED, "dropPerSecond": 15}, "preSeconds": 10,
         "postSeconds": 10, "priority": 3},
        {"name": "new_dtc", "trigger": {"signal": "Vehicle.Diagnostics.DTCList", "newItem": True}},
        {"name": "hot", "trigger": {"signal": "Vehicle.Powertrain.CombustionEngine.ECT", "above": 110}},
        {"name": "cold", "trigger": {"signal": "Vehicle.Exterior.AirTemperature", "below": -10.5}},
    ],
}  # fmt: skip


def with_(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(FULL)
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def without(*path: Any) -> dict[str, Any]:
    doc = copy.deepcopy(FULL)
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return doc


VALID: Final[list[Any]] = [
    FULL,
    {"version": 1},
    {"version": "a" * 64},
    {"version": "v", "signals": {}, "captures": []},
    with_(("intervalSeconds",), 1),
    with_(("intervalSeconds",), 3600.0),
    with_(("default", "rateHz"), 100),
    with_(("default", "rateHz"), 0),
    with_(("default", "heartbeatSeconds"), 86400),
    with_(("default", "priority"), 9),
    with_(("default", "priority"), 2.0),  # a JSON Schema integer
    with_(("captures", 0, "preSeconds"), 120),
    with_(("captures", 0, "postSeconds"), 0),
    with_(("captures", 0, "trigger", "above"), -1e12),
    {"version": "v", "signals": {f"Vehicle.S{i}": {} for i in range(1024)}},
    {"version": "v", "captures": [FULL["captures"][0]] * 16},
]
INVALID: Final[list[Any]] = [
    None,
    [],
    "policy",
    {},  # no version
    {"version": True},
    {"version": None},
    {"version": 1.5},
    {"version": "a" * 65},
    {"version": {"n": 1}},
    with_(("intervalSeconds",), 0.5),
    with_(("intervalSeconds",), 3601),
    with_(("intervalSeconds",), "5"),
    with_(("intervalSeconds",), True),
    with_(("default",), []),
    with_(("default", "rateHz"), 101),
    with_(("default", "rateHz"), -1),
    with_(("default", "onChange"), "yes"),
    with_(("default", "onChange"), 1),
    with_(("default", "deadband"), -0.1),
    with_(("default", "heartbeatSeconds"), 0),
    with_(("default", "priority"), 10),
    with_(("signals",), []),
    with_(("signals", "Speed"), {"rateHz": 1}),  # not a VSS path
    with_(("signals", SPEED), None),
    with_(("signals", SPEED), {"rateHz": "fast"}),
    {"version": "v", "signals": {f"Vehicle.S{i}": {} for i in range(1025)}},
    with_(("captures",), {}),
    {"version": "v", "captures": [FULL["captures"][0]] * 17},
    with_(("captures", 0), "hard_braking"),
    without("captures", 0, "trigger"),
    with_(("captures", 0, "trigger"), {"signal": SPEED}),  # nothing fires it
    with_(("captures", 0, "trigger"), {"signal": SPEED, "newItem": False}),
    with_(("captures", 0, "trigger", "signal"), "Speed"),
    with_(("captures", 0, "trigger", "signal"), 7),
    with_(("captures", 0, "trigger", "dropPerSecond"), -1),
    with_(("captures", 0, "trigger", "above"), 2e12),
    without("captures", 0, "name"),
    with_(("captures", 0, "name"), ""),
    with_(("captures", 0, "name"), "n" * 65),
    with_(("captures", 0, "preSeconds"), 121),
    with_(("captures", 0, "postSeconds"), -1),
    with_(("captures", 0, "priority"), 10),
]
# Refused by the schema (so by the backend), accepted by the module: it ignores unknown fields, coerces a
# fractional priority, takes a non-boolean `newItem` as false, and accepts an empty version.
BACKEND_ONLY: Final[list[Any]] = [
    with_(("colour",), "red"),
    with_(("default", "rateHZ"), 2),
    with_(("captures", 0, "trigger", "newItem"), "yes"),
    with_(("captures", 0, "extra"), 1),
    with_(("default", "priority"), 2.5),
    {"version": ""},
]


def module_accepts(document: Any) -> bool:
    try:
        edge.parse(document)
    except edge.PolicyError:
        return False
    return True


def schema_accepts(document: Any) -> bool:
    return bool(jsonschema.Draft202012Validator(fmt.schema()).is_valid(document))


@pytest.mark.parametrize("document", VALID)
def test_valid_policies_pass_everywhere(document: Any) -> None:
    assert fmt.errors(document) == []
    assert schema_accepts(document)
    assert module_accepts(document)


@pytest.mark.parametrize("document", INVALID)
def test_invalid_policies_fail_everywhere(document: Any) -> None:
    assert fmt.errors(document) != []
    assert not schema_accepts(document)
    assert not module_accepts(document)


@pytest.mark.parametrize("document", BACKEND_ONLY)
def test_where_the_backend_is_stricter_than_the_module(document: Any) -> None:
    assert fmt.errors(document) != []
    assert not schema_accepts(document)
    assert module_accepts(document)


def test_the_schema_is_valid_json_schema_and_the_checker_knows_its_keywords() -> None:
    jsonschema.Draft202012Validator.check_schema(fmt.schema())
    assert fmt._unsupported(fmt.schema()) == set()
    assert fmt._unsupported({"type": "object", "properties": {"x": {"format": "date"}}}) == {"format"}


def test_errors_name_the_field() -> None:
    assert ("collection.signals[Speed]", "must match ^Vehicle\\.") in fmt.errors(with_(("signals", "Speed"), {}))
    assert ("collection.captures[0].name", "is required") in fmt.errors(without("captures", 0, "name"))
    assert ("collection.default.rateHz", "must be at most 100") in fmt.errors(with_(("default", "rateHz"), 101))


def test_normalized_spells_out_the_modules_defaults_and_means_the_same_policy() -> None:
    doc = {"version": "brand-1", "signals": {SPEED: {"rateHz": 2}}, "captures": [FULL["captures"][1]]}
    full = fmt.normalized(doc)
    assert full["intervalSeconds"] == 5.0
    assert full["default"] == {"rateHz": 1.0, "onChange": False, "deadband": 0.0, "heartbeatSeconds": 60.0,
                               "priority": 0}  # fmt: skip
    assert full["captures"][0] == {**FULL["captures"][1], "preSeconds": 10.0, "postSeconds": 10.0, "priority": 3}
    assert fmt.errors(full) == []
    assert edge.parse(full) == edge.parse(doc)


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """IoT Hub's twin patch semantics (objects merge, anything else replaces)."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def same_behaviour(a: edge.Policy, b: edge.Policy, paths: tuple[str, ...]) -> bool:
    """The module applies a and b alike to every signal in `paths` (and to any other, through the default)."""
    head = (a.version, a.interval, a.default, a.captures) == (b.version, b.interval, b.default, b.captures)
    return head and all(a.rule(path) == b.rule(path) for path in paths)


def test_replacement_merged_into_the_old_twin_is_the_new_policy_for_the_module() -> None:
    old = fmt.normalized(FULL)
    new = fmt.normalized({"version": "fleet-8", "default": {"rateHz": 0.2}, "signals": {"Vehicle.Other": {}}})
    patch = fmt.replacement(old, new)
    paths = (SPEED, "Vehicle.Cabin.HVAC.IsAirConditioningActive", "Vehicle.Other", "Vehicle.Unnamed")
    assert edge.parse(patch).signals != edge.parse(new).signals  # the dropped signals are named, with the default
    assert same_behaviour(edge.parse(patch), edge.parse(new), paths)  # what the module reads from the patch
    assert same_behaviour(edge.parse(merge(old, patch)), edge.parse(new), paths)  # a restart reads the whole twin
    assert not same_behaviour(edge.parse(merge(old, new)), edge.parse(new), paths)  # why: a plain patch keeps old
    assert b"null" not in orjson.dumps(patch)  # the module refuses nulls; IoT Hub refuses them inside arrays


def test_replacement_of_an_empty_twin_is_the_policy() -> None:
    new = fmt.normalized(FULL)
    assert fmt.replacement(None, new) == new
    assert fmt.replacement({"unexpected": 1}, new) == new
