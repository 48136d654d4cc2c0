"""The local IoT Hub's routing evaluates the route conditions of shared/iothub_routes.json as IoT Hub does."""

from __future__ import annotations

import pytest

from devstack.iothub.routing import BUILT_IN_ENDPOINT, UNDEFINED, Routes, RoutingQueryError, compile_condition


def test_messages_go_by_type_and_the_rest_to_the_unrouted_hub() -> None:
    routes = Routes.load()
    assert routes.event_hubs({"type": "telemetry"}) == ["telemetry"]
    assert routes.event_hubs({"type": "request"}) == ["requests"]
    assert routes.event_hubs({}) == ["unrouted"]
    assert routes.event_hubs({"type": "bogus"}) == ["unrouted"]
    assert routes.event_hubs({"type": "Telemetry"}) == ["unrouted"]  # string comparison is case-sensitive


def test_the_fallback_takes_what_no_condition_does() -> None:
    routes = Routes.from_definition({"routes": [{"name": "t", "condition": "type = 't'", "eventHub": "t"}]})
    assert routes.event_hubs({"type": "x"}) == [BUILT_IN_ENDPOINT]
    closed = Routes.from_definition({"routes": [], "fallback": False})
    assert closed.event_hubs({"type": "x"}) == []


@pytest.mark.parametrize(
    ("condition", "properties", "expected"),
    [
        ("type = 'a'", {}, UNDEFINED),  # a missing property compares to undefined
        ("type <> 'a'", {}, UNDEFINED),  # ... both ways: <> does not catch it
        ("NOT (type = 'a')", {}, UNDEFINED),
        ("NOT IS_DEFINED(type)", {}, True),
        ("IS_DEFINED(type)", {"type": ""}, True),
        ("type = 'a' AND x = 'b'", {"x": "c"}, False),  # false AND undefined
        ("type = 'a' OR x = 'b'", {"x": "b"}, True),  # undefined OR true
        ("type = 'a' OR x = 'b'", {"x": "c"}, UNDEFINED),
        ("type != 'a'", {"type": "b"}, True),
        ("type = 'it''s'", {"type": "it's"}, True),
        ("type = 1", {"type": "1"}, UNDEFINED),  # different kinds do not compare
        ("not is_defined(type) or type = 'a'", {"type": "a"}, True),  # keywords in any case
    ],
)
def test_three_valued_logic_as_in_iot_hub(condition: str, properties: dict[str, str], expected: object) -> None:
    assert compile_condition(condition)(properties) == expected


@pytest.mark.parametrize(
    "condition",
    ["$body.speed > 10", "$contentType = 'application/json'", "UPPER(type) = 'A'", "type = ", "(type = 'a'", "type <"],
)
def test_what_the_local_routing_cannot_evaluate_is_refused_on_load(condition: str) -> None:
    with pytest.raises(RoutingQueryError):
        compile_condition(condition)
