"""The telemetry pipeline under injected faults: nothing lost, nothing twice, nothing stalled, same documents.

The suite (devstack/fault_suite.py, CI size) runs once for the module: scripted cars on the real device SDK
send the same input per scenario through the local IoT Hub; `ingest_telemetry` stores it through the Cosmos
proxy while the proxy injects the scenario's fault, or in a worker process that is SIGKILLed mid-batch and
redelivered. Each scenario is a test of its own, so a failure names the fault. Durations are reported by the
script's table (`make faults`), never asserted here.

The checker itself is tested too (a lost or duplicated message, a changed document must fail a scenario), and
so are the fault plan's rules, the control endpoint and the IoT Hub service proxy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

pytest.importorskip(
    "azure.iot.device", reason="azure-iot-device is not installed: requirements-dev.txt needs azure-iot-device==2.14.0"
)

from devstack.eventhubs import EventHubsNamespace
from devstack.fault_check import Stored, comparable, delivery, differences
from devstack.fault_suite import BASELINE, SCENARIOS, FaultSuite, Outcome, Scenario, SuiteOptions, table
from devstack.faults import FaultControl, FaultKind, FaultPlan, Operation
from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import DeviceRegistry
from devstack.iothub.service_api import ServiceApi
from devstack.service_proxy import IoTHubServiceProxy
from shared.errors import FleetError
from shared.iothub.local_gateway import LocalIoTHubGateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def outcomes() -> dict[str, Outcome]:
    suite = FaultSuite(SuiteOptions.ci(), out=None)
    results = await suite.run()
    print("\n" + table(results))
    return {o.scenario: o for o in results}


@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
async def test_every_message_once_and_the_same_documents(outcomes: dict[str, Outcome], scenario: str) -> None:
    # The poison-car scenario depends on ingestion containing hostile messages (bounded rejected values,
    # parking of documents Cosmos DB refuses): without that, its partition stalls and this test fails for it.
    outcome = outcomes[scenario]
    assert outcome.messages > 0
    assert outcome.failures() == [], f"{scenario}: {outcome.failures()}"
    assert outcome.lost == 0
    assert outcome.duplicated == 0
    assert outcome.stalled == 0
    assert outcome.differences == []


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.faults], ids=lambda s: s.name)
async def test_the_fault_was_really_injected(outcomes: dict[str, Outcome], scenario: Scenario) -> None:
    name = scenario.name
    kinds = {str(f.kind) for f in scenario.faults}
    injected = outcomes[name].injected
    assert any(injected.get(kind, 0) > 0 for kind in kinds), f"{name}: nothing injected ({injected})"


async def test_the_worker_was_killed_mid_batch_and_the_batch_redelivered(outcomes: dict[str, Outcome]) -> None:
    crash = next(s.name for s in SCENARIOS if s.crash)
    stats = outcomes[crash].details["crash"]
    assert stats.get("kills", 0) >= 1
    assert stats.get("killed_batches", 0) >= 1
    assert stats.get("redeliveries", 0) >= stats["killed_batches"]


async def test_the_poison_car_really_sent_its_hostile_messages(outcomes: dict[str, Outcome]) -> None:
    poison = next(s.name for s in SCENARIOS if s.poison)
    assert outcomes[poison].details["hostile_sent"] == 4
    assert outcomes[poison].details["send_errors"] == 0


# --- the checks can fail -----------------------------------------------------------------------------------------


def _entry(seq: int) -> dict[str, Any]:
    return {"seq": seq, "enqueuedTime": f"t{seq}", "samples": [{"ts": f"s{seq}"}]}


def _stored(pending: list[int], chunked: list[int]) -> Stored:
    """One car's documents: history entries `chunked` in a chunk, `pending` in the vehicle's buffer."""
    return Stored(
        {
            "vehicles": [
                {
                    "id": "x-car",
                    "vehicleId": "x-car",
                    "state": {"seq": 3},
                    "ingest": {"pending": [_entry(s) for s in pending]},
                }
            ],
            "telemetry": [{"id": "c1", "vehicleId": "x-car", "messages": [_entry(s) for s in chunked]}],
            "trips": [],
            "alerts": [],
        }
    )


def test_a_lost_or_duplicated_message_is_counted() -> None:
    assert delivery({"x-car": [1, 2, 3]}, _stored([3], [1, 2])).lost_count == 0
    lost = delivery({"x-car": [1, 2, 3]}, _stored([3], [1]))
    assert (lost.lost_count, lost.lost) == (1, {"x-car": [2]})
    twice = delivery({"x-car": [1, 2, 3]}, _stored([2, 3], [1, 2]))
    assert (twice.duplicated_count, twice.duplicated) == (1, {"x-car": [2]})


def test_a_changed_document_differs_but_wall_clock_fields_do_not() -> None:
    base = comparable(_stored([3], [1, 2]), {"x-car": "car"})
    other = _stored([3], [1, 2])
    other.documents["vehicles"][0]["lastSeen"] = "another time"
    assert differences(base, comparable(other, {"x-car": "car"})) == []
    other.documents["vehicles"][0]["state"]["seq"] = 4
    assert differences(base, comparable(other, {"x-car": "car"})) == ["car: vehicle differs"]


def test_a_failed_outcome_says_why() -> None:
    assert Outcome("x", messages=3, recovery_seconds=0.0).failures() == []
    assert Outcome("x", messages=3, lost=1, recovery_seconds=0.0).failures()
    assert Outcome("x", messages=3, duplicated=1, recovery_seconds=0.0).failures()
    assert Outcome("x", messages=3, stalled=1, recovery_seconds=0.0).failures()
    assert Outcome("x", messages=3).failures()  # never completed
    assert BASELINE in {s.name for s in SCENARIOS}


# --- the fault plan, its control endpoint and the IoT Hub service proxy -------------------------------------------


def test_a_fault_hits_its_window_operation_key_and_fraction() -> None:
    plan = FaultPlan(seed=5)
    plan.add(FaultKind.UNAVAILABLE, duration=60, operation=Operation.WRITE, key_prefix="f01-")
    assert plan.choose(Operation.READ, "f01-car-1") is None
    assert plan.choose(Operation.WRITE, "f02-car-1") is None
    assert plan.choose(Operation.WRITE, "f01-car-1") is not None
    plan.clear()
    plan.add(FaultKind.RESET, after=60)  # not yet
    assert plan.choose(Operation.WRITE) is None
    plan.clear()
    plan.add(FaultKind.THROTTLE, duration=60, fraction=0.25)
    hits = sum(plan.choose(Operation.READ) is not None for _ in range(2000))
    assert 350 < hits < 650
    assert plan.injected["throttle"] == hits


def test_an_expired_fault_is_gone() -> None:
    plan = FaultPlan()
    fault = plan.add(FaultKind.BLACKHOLE, duration=0.01)
    time.sleep(0.02)
    assert plan.choose(Operation.READ) is None
    assert not plan.still_active(fault)
    assert plan.faults == []


@pytest.fixture
async def service_behind_proxy() -> AsyncIterator[tuple[LocalIoTHub, IoTHubServiceProxy, FaultControl]]:
    hub = LocalIoTHub(DeviceRegistry("localhost"), EventHubsNamespace())
    hub.registry.provision("car-9")
    api = ServiceApi(hub)
    url = await api.start()
    plan = FaultPlan(seed=1)
    proxy = IoTHubServiceProxy(url, faults=plan)
    await proxy.start()
    control = FaultControl({"iothub": plan})
    await control.start()
    try:
        yield hub, proxy, control
    finally:
        await control.stop()
        await proxy.stop()
        await api.stop()


async def test_iothub_service_faults_set_over_http_reach_the_gateway(
    service_behind_proxy: tuple[LocalIoTHub, IoTHubServiceProxy, FaultControl],
) -> None:
    hub, proxy, control = service_behind_proxy
    gateway = LocalIoTHubGateway(proxy.url)
    try:
        await gateway.patch_desired("car-9", {"agenda": {"n": 1}})  # through the proxy, no fault
        assert hub.twin_document("car-9")["desired"]["agenda"] == {"n": 1}
        async with aiohttp.ClientSession() as http:
            fault = {"kind": "applied_then_503", "duration": 30, "operation": "write", "keyPrefix": "car-9"}
            async with http.post(f"{control.url}/faults/iothub", json=fault) as answer:
                assert answer.status == 201
            with pytest.raises(FleetError):  # the client sees a failure ...
                await gateway.patch_desired("car-9", {"agenda": {"n": 2}})
            # ... although the hub applied the patch: a retry must be harmless (patches are idempotent)
            assert hub.twin_document("car-9")["desired"]["agenda"] == {"n": 2}
            async with http.get(f"{control.url}/faults") as answer:
                assert (await answer.json())["iothub"]["injected"] == {"applied_then_503": 1}
            async with http.delete(f"{control.url}/faults/iothub") as answer:
                assert answer.status == 204
            async with http.post(f"{control.url}/faults/iothub", json={"kind": "nonsense"}) as answer:
                assert answer.status == 400
        await gateway.patch_desired("car-9", {"agenda": {"n": 3}})
        assert hub.twin_document("car-9")["desired"]["agenda"] == {"n": 3}
    finally:
        await gateway.close()


async def test_a_reset_breaks_the_connection_and_a_black_hole_holds_it(
    service_behind_proxy: tuple[LocalIoTHub, IoTHubServiceProxy, FaultControl],
) -> None:
    _, proxy, _ = service_behind_proxy
    async with aiohttp.ClientSession() as http:
        proxy.faults.add(FaultKind.RESET, duration=30)
        with pytest.raises(aiohttp.ClientError):
            async with http.get(f"{proxy.url}/twins/car-1") as answer:
                await answer.read()
        proxy.faults.clear()
        proxy.faults.add(FaultKind.BLACKHOLE, duration=30)
        request = asyncio.create_task(http.post(f"{proxy.url}/devices/car-1/messages/deviceBound", data=b"x"))
        await asyncio.sleep(0.3)
        assert not request.done()  # accepted, never answered while the window lasts
        proxy.faults.clear()  # the window ends: the held request is let go with a reset
        with pytest.raises(aiohttp.ClientError):
            await request
