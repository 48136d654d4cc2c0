"""Collection policy routes through the HTTP application on in-memory stores and the memory IoT Hub gateway:
validation as problems, versions per change, layering brand → fleet, the push to module twins with its counts,
and registration giving a new car the effective policy."""

from __future__ import annotations

from typing import Any, Final

import orjson
import pytest

from devstack.iothub.twin import check_keys
from edge import policy as edge
from shared.collection import policy as fmt
from shared.collection import runtime as collection_runtime
from shared.collection.rollout import Continuation
from shared.collection.service import POLICY_MAX_BYTES, CollectionService
from shared.errors import InvalidRequestError
from shared.stores.queues import MemoryQueue
from tests.fleet_support import Fleet

BRAND: Final = "/api/brands/contoso/collection-policy"
BERLIN: Final = "/api/brands/contoso/fleets/berlin/collection-policy"
PARIS: Final = "/api/brands/contoso/fleets/paris/collection-policy"
MODULE: Final = "carlink"
SLOW: Final[dict[str, Any]] = {"default": {"rateHz": 0.2}}
FAST: Final[dict[str, Any]] = {
    "intervalSeconds": 2,
    "signals": {"Vehicle.Speed": {"rateHz": 10, "onChange": True, "deadband": 1}},
    "captures": [{"name": "hard_braking", "trigger": {"signal": "Vehicle.Speed", "dropPerSecond": 12}}],
}


class Queue:
    """The rollout queue as the process's PerLoop hands it out."""

    def __init__(self) -> None:
        self.queue = MemoryQueue()

    def get(self) -> MemoryQueue:
        return self.queue


COUNTS: Final = ("cars", "patched", "withoutModule", "failed", "overridden")


def counts(push: dict[str, Any]) -> dict[str, Any]:
    return {k: push[k] for k in COUNTS}


@pytest.fixture
def rollout_queue(monkeypatch: pytest.MonkeyPatch) -> MemoryQueue:
    queue = Queue()
    monkeypatch.setattr(collection_runtime, "rollout_queue", queue)
    return queue.queue


@pytest.fixture
async def fleet(monkeypatch: pytest.MonkeyPatch, rollout_queue: MemoryQueue) -> Fleet:
    monkeypatch.delenv("EDGE_MODULE_ID", raising=False)
    fleet = Fleet()
    await fleet.add_fleet("contoso", "berlin")
    await fleet.add_fleet("contoso", "paris")
    for car, where in (("car-b1", "berlin"), ("car-b2", "berlin"), ("car-p1", "paris")):
        answer = await fleet.call("POST", f"/api/brands/contoso/fleets/{where}/vehicles", body={"vehicleId": car})
        assert answer.status == 201, answer.json
    return fleet


def twin(fleet: Fleet, car: str) -> dict[str, Any]:
    return fleet.gateway.module_desired.get((car, MODULE), {})


def applied(fleet: Fleet, car: str) -> edge.Policy:
    """What the car's module would apply after a restart: the whole `collection` of its twin."""
    return edge.parse(twin(fleet, car)["collection"])


async def test_brand_policy_is_versioned_stored_and_pushed_to_every_car(fleet: Fleet) -> None:
    assert (await fleet.call("GET", BRAND)).json["scope"] == "none"
    first = await fleet.call("PUT", BRAND, body=SLOW)
    assert first.status == 200, first.json
    assert first.json["version"] == "brand-1"
    assert first.json["scope"] == "brand"
    assert counts(first.json["push"]) == {"cars": 3, "patched": 3, "withoutModule": 0, "failed": 0, "overridden": 0}
    assert first.json["push"]["state"] == "done"
    assert first.json["push"]["version"] == "brand-1"
    assert first.json["policy"]["default"]["rateHz"] == 0.2
    assert first.json["policy"]["intervalSeconds"] == 5.0
    assert {applied(fleet, car).version for car in ("car-b1", "car-b2", "car-p1")} == {"brand-1"}
    second = await fleet.call("PUT", BRAND, body=FAST)
    assert second.json["version"] == "brand-2"
    assert (await fleet.call("GET", BRAND)).json["version"] == "brand-2"
    brand = (await fleet.call("GET", BRAND)).json
    # the fleet's cars get the brand's policy; `push` is a scope's own rollout (the fleet has none)
    assert (await fleet.call("GET", BERLIN)).json | {"fleetId": None, "push": brand["push"]} == brand
    assert applied(fleet, "car-p1").rule("Vehicle.Speed").rate_hz == 10
    assert applied(fleet, "car-p1").default.rate_hz == 1.0  # brand-2 has no default: the module's, not brand-1's
    assert "put_brand_collection_policy" in {r["route"] for r in fleet.audit.records}


async def test_fleet_policy_overrides_the_brands(fleet: Fleet) -> None:
    await fleet.call("PUT", BRAND, body=FAST)
    own = await fleet.call("PUT", BERLIN, body=SLOW)
    assert own.json["version"] == "fleet-1"
    assert own.json["scope"] == "fleet"
    assert own.json["push"]["cars"] == 2
    assert own.json["push"]["patched"] == 2
    assert applied(fleet, "car-b1").version == "fleet-1"
    assert applied(fleet, "car-b1").rule("Vehicle.Speed").rate_hz == 0.2  # brand's signal gone, not merged
    assert applied(fleet, "car-b1").captures == ()
    assert twin(fleet, "car-b1")["collection"]["signals"] == []  # gone from the twin too: it never only grows
    # a brand change now leaves berlin alone and reaches paris
    again = await fleet.call("PUT", BRAND, body=FAST)
    assert counts(again.json["push"]) == {"cars": 1, "patched": 1, "withoutModule": 0, "failed": 0, "overridden": 2}
    assert applied(fleet, "car-b1").version == "fleet-1"
    assert applied(fleet, "car-p1").version == "brand-2"
    assert (await fleet.call("GET", BERLIN)).json["version"] == "fleet-1"
    assert (await fleet.call("GET", PARIS)).json["version"] == "brand-2"
    assert (await fleet.call("GET", PARIS)).json["scope"] == "brand"


async def test_cars_without_the_module_and_failing_cars_are_counted_not_fatal(
    fleet: Fleet, rollout_queue: MemoryQueue
) -> None:
    fleet.gateway.answers["car-b1"] = (404, "ModuleNotFound")
    fleet.gateway.answers["car-b2"] = (400, "ArgumentInvalid")
    answer = await fleet.call("PUT", BERLIN, body=SLOW)
    assert answer.status == 200, answer.json
    assert counts(answer.json["push"]) == {"cars": 2, "patched": 0, "withoutModule": 1, "failed": 1, "overridden": 0}
    assert (await fleet.call("GET", BERLIN)).json["version"] == "fleet-1"  # stored all the same
    del fleet.gateway.answers["car-b2"]
    retried = await fleet.call("PUT", BERLIN, body=SLOW)
    assert retried.json["push"]["patched"] == 1
    assert applied(fleet, "car-b2").version == "fleet-2"
    assert rollout_queue.messages == []


async def test_a_throttled_car_is_tried_again_later_by_the_rollout_not_counted_failed(
    fleet: Fleet, rollout_queue: MemoryQueue
) -> None:
    fleet.gateway.answers["car-b2"] = (429, "ThrottlingException")
    answer = await fleet.call("PUT", BERLIN, body=SLOW)
    push = answer.json["push"]
    assert (push["state"], push["patched"], push["failed"]) == ("running", 1, 0)
    ((_body, delay),) = rollout_queue.messages
    assert delay == 30  # IoT Hub is given time
    del fleet.gateway.answers["car-b2"]
    step = Continuation.decode(rollout_queue.drain()[0])
    assert step is not None
    service = CollectionService(fleet.store, fleet.gateway, lambda: fleet.now, queue=lambda: rollout_queue)
    assert await service.continue_rollout(step) == "done"
    assert applied(fleet, "car-b2").version == "fleet-1"
    shown = (await fleet.call("GET", BERLIN)).json["push"]
    assert (shown["state"], shown["cars"], shown["patched"], shown["failed"]) == ("done", 2, 2, 0)
    assert await service.continue_rollout(step) == "stale"  # a duplicate delivery changes nothing
    assert (await fleet.call("GET", BERLIN)).json["push"] == shown


async def test_the_module_id_is_a_setting(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_MODULE_ID", "telematics")
    await fleet.call("PUT", BERLIN, body=SLOW)
    assert "collection" in fleet.gateway.module_desired[("car-b1", "telematics")]
    assert ("car-b1", MODULE) not in fleet.gateway.module_desired


async def test_a_car_registered_into_a_fleet_gets_the_effective_policy(fleet: Fleet) -> None:
    await fleet.call("PUT", BRAND, body=FAST)
    await fleet.call("PUT", BERLIN, body=SLOW)
    for car, where in (("car-b3", "berlin"), ("car-p2", "paris")):
        assert (
            await fleet.call("POST", f"/api/brands/contoso/fleets/{where}/vehicles", body={"vehicleId": car})
        ).status == 201
    assert applied(fleet, "car-b3").version == "fleet-1"
    assert applied(fleet, "car-p2").version == "brand-1"


async def test_registration_without_any_policy_writes_no_twin(fleet: Fleet) -> None:
    assert twin(fleet, "car-b1") == {}
    service = CollectionService(fleet.store, fleet.gateway)
    assert await service.push_to_vehicle("contoso", "berlin", "car-b1") == "none"


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"version": "mine"},  # the server sets it
        {"signals": {"Speed": {}}},
        {"default": {"rateHz": 1000}},
        {"captures": [{"name": "x", "trigger": {"signal": "Vehicle.Speed"}}]},
        {"colour": "red"},
    ],
)
async def test_bad_policies_are_problems_and_change_nothing(fleet: Fleet, body: Any) -> None:
    answer = await fleet.call("PUT", BERLIN, body=body)
    assert answer.status in (400, 422), answer.json
    assert answer.content_type == "application/problem+json"
    assert (await fleet.call("GET", BERLIN)).json["scope"] == "none"
    assert fleet.gateway.module_patches == []


async def test_a_policy_over_the_twin_budget_is_refused(fleet: Fleet) -> None:
    """Through the API the 4 KB body limit (shared/api/handlers.py) refuses it first (413); the service's own
    check is what holds if that limit is raised."""
    big = {"signals": {f"Vehicle.Signal{i}": {"rateHz": 1} for i in range(300)}}
    assert (await fleet.call("PUT", BERLIN, body=big)).status == 413
    with pytest.raises(InvalidRequestError, match=f"at most {POLICY_MAX_BYTES} fit"):
        await CollectionService(fleet.store, fleet.gateway).put("contoso", "berlin", big)
    assert fleet.gateway.module_patches == []


async def test_the_twin_holds_the_policy_in_a_form_iot_hub_accepts(fleet: Fleet) -> None:
    """IoT Hub refuses a twin patch with '.' in a property name (400 ArgumentInvalid): the path of a signal is a
    value in the twin, `signals` an array sorted by path; what the backend patches is exactly the policy."""
    body = {"signals": {"Vehicle.Speed": {"rateHz": 2}, "Vehicle.Cabin.Door.Row1.IsOpen": {"onChange": True}}}
    answer = await fleet.call("PUT", BERLIN, body=body)
    assert answer.status == 200, answer.json
    assert set(answer.json["policy"]["signals"]) == set(body["signals"])  # the API keeps its form
    for _, _, patch in fleet.gateway.module_patches:
        check_keys(patch)
    signals = twin(fleet, "car-b1")["collection"]["signals"]
    assert [s["path"] for s in signals] == ["Vehicle.Cabin.Door.Row1.IsOpen", "Vehicle.Speed"]
    assert signals[1] == {"path": "Vehicle.Speed", "rateHz": 2, "onChange": False, "deadband": 0.0,
                          "heartbeatSeconds": 60.0, "priority": 0}  # fmt: skip
    assert [p for _, _, p in fleet.gateway.module_patches][-1] == {"collection": twin(fleet, "car-b1")["collection"]}


async def test_the_size_check_measures_the_twin_form(fleet: Fleet) -> None:
    """The 16 KB are what the twin holds: a policy whose API form would fit but whose twin form does not is
    refused."""

    def sizes(n: int) -> tuple[int, int]:
        policy = {"version": "fleet-0000000000", "signals": {f"Vehicle.S{i:04}": {} for i in range(n)}}
        return len(orjson.dumps(fmt.normalized(policy))), len(orjson.dumps(fmt.twin_form(policy)))

    n = next(n for n in range(1, 1025) if sizes(n)[1] > POLICY_MAX_BYTES)
    assert sizes(n)[0] <= POLICY_MAX_BYTES  # the API's form would have passed
    with pytest.raises(InvalidRequestError, match="in the module twin"):
        await CollectionService(fleet.store, fleet.gateway).put("contoso", "berlin", {
            "signals": {f"Vehicle.S{i:04}": {} for i in range(n)}})  # fmt: skip
    assert fleet.gateway.module_patches == []


async def test_unknown_brand_or_fleet(fleet: Fleet) -> None:
    assert (await fleet.call("PUT", "/api/brands/contoso/fleets/nowhere/collection-policy", body=SLOW)).status == 404
    assert (await fleet.call("GET", "/api/brands/nobody/collection-policy")).status == 404
    assert (await fleet.call("PUT", "/api/brands/Not_A_Slug/collection-policy", body=SLOW)).status in (400, 422)
