"""The collection policy format: the backend's checker, `jsonschema` on docs/schemas/collection-policy-v1.schema.json
and the car's module (edge/policy.py `parse`) on one corpus of valid and invalid policies. The corpus is in the API's
form (`signals` keyed by path); the module reads the twin's form (`signals` an array of {path, rule}), so it gets
each document as `as_twin` turns it, the way the backend's `twin_form` does for a valid one.

The backend is stricter than the module in the cases listed in BACKEND_ONLY (the module ignores or coerces what the
schema refuses); everything else must get the same verdict from all three.
"""

from __future__ import annotations

import copy
from typing import Any, Final

import jsonschema
import orjson
import pytest

from devstack.iothub.twin import check_keys
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
    with_(("signals",), "Vehicle.Speed"),  # an object in the API, an array in the twin: neither a string
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


def as_twin(document: Any) -> Any:
    """The document with `signals` in the twin's form (each entry kept as it is, so a bad rule stays bad)."""
    if not isinstance(document, dict) or not isinstance(document.get("signals"), dict):
        return document
    signals = [{"path": p, **r} if isinstance(r, dict) else r for p, r in sorted(document["signals"].items())]
    return {**document, "signals": signals}


def module_accepts(document: Any) -> bool:
    try:
        edge.parse(as_twin(document))
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
    assert ("collection.signals", "must be a JSON object") in fmt.errors(with_(("signals",), []))  # the API's form
    # an integer beyond a float's range (a JSON integer is any size): out of range, not an OverflowError (a 500)
    assert ("collection.default.rateHz", "must be at most 100") in fmt.errors(with_(("default", "rateHz"), 10**400))
    assert fmt.errors({"version": 10**400}) == fmt.errors({"version": 7})


def test_normalized_spells_out_the_modules_defaults_and_means_the_same_policy() -> None:
    doc = {"version": "brand-1", "signals": {SPEED: {"rateHz": 2}}, "captures": [FULL["captures"][1]]}
    full = fmt.normalized(doc)
    assert full["intervalSeconds"] == 5.0
    assert full["default"] == {"rateHz": 1.0, "onChange": False, "deadband": 0.0, "heartbeatSeconds": 60.0,
                               "priority": 0}  # fmt: skip
    assert full["captures"][0] == {**FULL["captures"][1], "preSeconds": 10.0, "postSeconds": 10.0, "priority": 3}
    assert fmt.errors(full) == []
    assert edge.parse(fmt.twin_form(full)) == edge.parse(as_twin(doc))


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """IoT Hub's twin patch semantics (objects merge, null deletes, anything else, arrays too, replaces)."""
    out = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.mark.parametrize("document", VALID)
def test_the_twin_form_has_only_valid_twin_names_and_is_the_same_policy(document: Any) -> None:
    twin = fmt.twin_form(document)
    check_keys({"collection": twin})  # what IoT Hub refuses with 400 ArgumentInvalid: '.', '$', '#', ' ', ...
    assert edge.parse(twin) == edge.parse(as_twin(document))
    paths = [entry["path"] for entry in twin["signals"]]
    assert paths == sorted(document.get("signals", {}))
    assert b"null" not in orjson.dumps(twin)  # the module refuses nulls; IoT Hub refuses them inside arrays


def test_the_twin_form_patched_over_an_older_one_leaves_exactly_the_new_policy() -> None:
    """The whole twin form is the patch: arrays are replaced whole, every other field is given, so nothing of an
    earlier policy stays in the twin (what a restarted module reads), and the twin does not grow."""
    old = {"collection": fmt.twin_form(FULL), "agenda": {"events": []}}
    new = fmt.twin_form({"version": "fleet-8", "default": {"rateHz": 0.2}, "signals": {"Vehicle.Other": {}}})
    merged = merge(old, {"collection": new})
    assert merged == {"collection": new, "agenda": {"events": []}}
    assert [entry["path"] for entry in merged["collection"]["signals"]] == ["Vehicle.Other"]
    assert edge.parse(merged["collection"]).rule(SPEED) == edge.parse(new).default  # dropped: the new default
    assert fmt.twin_form(fmt.normalized(FULL)) == fmt.twin_form(FULL)  # a stored (normalized) policy: the same
