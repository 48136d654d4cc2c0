"""Remote commands end to end (issue 14) through the whole local stack: fleet operators with real tokens of the local
OpenID Connect provider call the API, the local function host dispatches from the Azurite queue and sweeps on its
timer, the local IoT Hub invokes direct methods and queues C2D messages, and the cars are VirtualCars on the real
`azure-iot-device` SDK whose telemetry confirms the effect through ingestion into the local Cosmos server.

Timeouts are shortened through app settings only (a 5 s method response timeout, IoT Hub's minimum; a sweep every
2 s; 1 s to connect): the code paths are those of Azure.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest

pytest.importorskip("azure.iot.device", reason="azure-iot-device is not installed")

from devstack.api_client import ApiClient, ApiError
from devstack.demo_fleet import DemoFleet, FleetRef, operator_of, prepare_fleet, seed_fleets
from devstack.iothub.hub import wait_connected
from devstack.iothub.registry import identity_key
from devstack.stack import LocalStack, StackConfig, free_loopback_address
from devstack.tenancy_seed import platform_admin
from simulator.car import CarOptions, VirtualCar

CARS = ["cmd-car-1", "cmd-car-2", "cmd-car-3", "cmd-car-4"]
NORMAL, FAULTY, SLEEPY, OTHER_BRAND = CARS
FAULTS = {
    "climate.start": "error",
    "charging.stop": "garbage",
    "climate.stop": "never",
}  # no preconditions: never rejected
SETTLED = {"succeeded", "confirmed", "failed", "rejected", "expired", "cancelled"}
OVERRIDES = {
    "COMMAND_RESPONSE_TIMEOUT_SECONDS": "5",
    "COMMAND_CONNECT_TIMEOUT_SECONDS": "1",
    "COMMAND_SWEEP_SCHEDULE": "*/2 * * * * *",
    "COMMANDS_PER_VEHICLE_PER_MINUTE": "30",
    "COLLECTION_PUSH_PAGE": "1",  # a collection policy's rollout: one car in the PUT, each other by queue message
}


@dataclass
class World:
    stack: LocalStack
    demo: DemoFleet
    operators: dict[str, ApiClient]
    cars: dict[str, VirtualCar]
    stranger: ApiClient  # an operator of another brand than NORMAL's
    admin: ApiClient  # the platform admin
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def send(
        self, car: str, name: str, params: dict[str, Any] | None = None, key: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        body = {"name": name, "params": params or {}, **extra}
        headers = {"Idempotency-Key": key or str(uuid.uuid4())}
        result: dict[str, Any] = await self.operators[car].call(
            "POST", f"/vehicles/{car}/commands", body, expect=(200, 201), headers=headers
        )
        return result

    async def get(self, car: str, command_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.operators[car].call("GET", f"/vehicles/{car}/commands/{command_id}")
        return result

    async def until(self, car: str, command_id: str, statuses: set[str], seconds: float = 40.0) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        command = await self.get(car, command_id)
        while command["status"] not in statuses and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            command = await self.get(car, command_id)
        assert command["status"] in statuses, command
        return command


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    config = StackConfig([], overrides=OVERRIDES, use_graph_sandbox=False).with_free_ports(free_loopback_address())
    async with LocalStack(config) as stack, aiohttp.ClientSession() as http:
        assert stack.oidc is not None
        assert stack.tls is not None
        demo = await prepare_fleet(http, stack, CARS, link_drivers=False)
        seed = stack.oidc.seed
        operators = {car: await ApiClient.as_user(http, stack, operator_of(seed, demo.fleet_of[car])) for car in CARS}
        other = next(f for f in seed_fleets(seed) if f.brand_id != demo.fleet_of[NORMAL].brand_id)
        stranger = await ApiClient.as_user(http, stack, operator_of(seed, FleetRef(other.brand_id, other.fleet_id)))
        options = CarOptions(sample_seconds=0.25, samples_per_message=2, ask_for_meetings=False, trip_seconds=8.0)
        cars = {
            car: VirtualCar(n, demo.connection_strings[car], stack.tls.ca_pem, 7,
                            replace(options, command_faults=FAULTS if car == FAULTY else {}))
            for n, car in enumerate(CARS)
        }  # fmt: skip
        admin = await ApiClient.as_user(http, stack, platform_admin(seed)["username"])
        w = World(stack, demo, operators, cars, stranger, admin)
        until = time.time() + 600
        w.tasks = [asyncio.create_task(c.run(until)) for c in cars.values()]
        assert await wait_connected(stack.hub, CARS, 30)
        try:
            yield w
        finally:
            for task in w.tasks:
                task.cancel()
            await asyncio.gather(*w.tasks, return_exceptions=True)


def statuses(command: dict[str, Any]) -> list[str]:
    return [t["status"] for t in command["transitions"]]


async def test_a_lock_to_a_connected_car_succeeds_and_telemetry_confirms_it(world: World) -> None:
    sent = await world.send(NORMAL, "lock", key="lock-1")
    assert sent["status"] == "accepted"
    again = await world.send(NORMAL, "lock", key="lock-1")  # a retried POST: the same command, nothing sent twice
    assert again["commandId"] == sent["commandId"]
    done = await world.until(NORMAL, sent["commandId"], {"confirmed"})
    assert statuses(done)[:5] == ["accepted", "sent", "delivered", "succeeded", "confirmed"]
    assert done["delivery"]["via"] == "method"
    log = world.cars[NORMAL].log.commands
    acted = [c for c in log if c.get("commandId") == sent["commandId"] and not c.get("repeat")]
    assert len(acted) == 1  # the car acted once (a redelivered dispatch would be answered from its memory)


async def test_an_unlock_while_moving_is_rejected(world: World) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        car = await world.operators[NORMAL].call("GET", f"/vehicles/{NORMAL}")
        if car.get("moving"):
            break
        await asyncio.sleep(0.3)
    else:
        pytest.fail("the car never drove within a minute")
    unlock = await world.send(NORMAL, "unlock")
    assert (unlock["status"], unlock["reason"]) == ("rejected", "vehicle_moving")
    await asyncio.sleep(2)
    assert not [c for c in world.cars[NORMAL].log.commands if c.get("commandId") == unlock["commandId"]]


async def test_a_sleeping_car_gets_it_when_it_wakes(world: World) -> None:
    car = world.cars[SLEEPY]
    await car.sleep()
    sent = await world.send(SLEEPY, "charging.limit", {"limit": 80})
    queued = await world.until(SLEEPY, sent["commandId"], {"queued"} | SETTLED)
    assert queued["status"] == "queued"
    assert queued["delivery"]["via"] == "c2d"
    await car.wake()
    done = await world.until(SLEEPY, sent["commandId"], {"confirmed"})
    assert statuses(done)[:6] == ["accepted", "sent", "queued", "delivered", "succeeded", "confirmed"]


async def test_a_command_for_a_car_that_sleeps_too_long_expires(world: World) -> None:
    car = world.cars[SLEEPY]
    await car.sleep()
    sent = await world.send(SLEEPY, "lock", ttlSeconds=10)
    expired = await world.until(SLEEPY, sent["commandId"], SETTLED, seconds=30)
    assert (expired["status"], expired["reason"]) == ("expired", "ttl_elapsed")
    await car.wake()
    await asyncio.sleep(3)
    assert not [c for c in car.log.commands if c.get("commandId") == sent["commandId"]]  # IoT Hub dropped it
    assert (await world.get(SLEEPY, sent["commandId"]))["status"] == "expired"


async def test_a_queued_command_can_be_cancelled_until_delivered(world: World) -> None:
    car = world.cars[SLEEPY]
    await car.sleep()
    sent = await world.send(SLEEPY, "climate.start", {"targetTemperature": 19})
    await world.until(SLEEPY, sent["commandId"], {"queued"})
    cancelled = await world.operators[SLEEPY].call("POST", f"/vehicles/{SLEEPY}/commands/{sent['commandId']}/cancel")
    assert cancelled["status"] == "cancelled"
    await car.wake()
    await asyncio.sleep(4)
    acted = [c for c in car.log.commands if c.get("commandId") == sent["commandId"] and c.get("outcome") == "succeeded"]
    assert not acted  # the car read the twin's cancelled ids first and skipped it
    assert (await world.get(SLEEPY, sent["commandId"]))["status"] == "cancelled"


@pytest.mark.parametrize(
    ("name", "reason"),
    [("climate.start", "internal_error"), ("charging.stop", "invalid_response"), ("climate.stop", "no_response")],
)
async def test_a_car_that_fails_answers_garbage_or_never_answers_ends_failed(
    world: World, name: str, reason: str
) -> None:
    sent = await world.send(FAULTY, name)
    failed = await world.until(FAULTY, sent["commandId"], SETTLED, seconds=30)
    assert (failed["status"], failed["reason"]) == ("failed", reason)


async def test_bad_input_gets_a_problem_and_another_brands_car_is_not_found(world: World) -> None:
    operator = world.operators[NORMAL]
    key = {"Idempotency-Key": str(uuid.uuid4())}
    for body in (
        {"name": "self_destruct"},
        {"name": "charging.limit", "params": {"limit": 7}},
        {"name": "lock", "params": {"force": True}},
        {"name": "lock", "ttlSeconds": 10**6},
    ):
        with pytest.raises(ApiError) as bad:
            await operator.call("POST", f"/vehicles/{NORMAL}/commands", body, expect=(201,), headers=key)
        assert bad.value.status == 422, body
    with pytest.raises(ApiError) as no_key:
        await operator.call("POST", f"/vehicles/{NORMAL}/commands", {"name": "lock"}, expect=(201,))
    assert no_key.value.status == 400  # a missing header is a bad request, not a bad body
    with pytest.raises(ApiError) as foreign:
        await world.stranger.call("POST", f"/vehicles/{NORMAL}/commands", {"name": "lock"}, expect=(201,), headers=key)
    assert foreign.value.status == 404
    page = await operator.call("GET", f"/vehicles/{NORMAL}/commands")
    assert all(c["status"] in SETTLED | {"accepted", "sent", "queued", "delivered"} for c in page["items"])


async def test_a_collection_policy_rolls_out_to_every_car_of_the_brand_through_the_queue(world: World) -> None:
    """Cloud-controlled collection at scale, in miniature: with one car a page, the PUT patches one module twin and
    the local function host's queue trigger (`collection_rollout`, Azurite) the others, until the progress the API
    shows says done."""
    brand = world.demo.fleet_of[NORMAL].brand_id
    cars = sorted(c for c in CARS if world.demo.fleet_of[c].brand_id == brand)
    assert len(cars) >= 2
    for car in cars:
        world.stack.registry.provision_module(car, "carlink")  # as the car's IoT Edge deployment would
    put = await world.admin.call("PUT", f"/brands/{brand}/collection-policy", {"default": {"rateHz": 0.5}})
    assert (put["push"]["state"], put["push"]["patched"]) == ("running", 1)
    deadline = time.monotonic() + 30
    push = put["push"]
    while push["state"] != "done" and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        push = (await world.admin.call("GET", f"/brands/{brand}/collection-policy"))["push"]
    assert (push["state"], push["cars"], push["patched"], push["failed"]) == ("done", len(cars), len(cars), 0)
    for car in cars:
        desired = world.stack.hub.twins.get(identity_key(car, "carlink")).desired
        assert desired["collection"]["version"] == put["version"]
