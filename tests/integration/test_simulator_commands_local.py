"""The car side of remote commands end to end on the real device SDK against the real local IoT Hub: a VirtualCar
(simulator/car.py, `azure-iot-device` over MQTT/TLS) answers direct methods invoked through the hub's service side
(LocalIoTHubGateway.invoke_method, as the backend invokes them); put to sleep, it is not online for a method, and
commands queued for it (LocalIoTHubGateway.send_c2d) are carried out when it wakes, after it read its twin, and
reported with `command.result` requests, which IoT Hub routes to the `requests` Event Hub. Effects show in the
telemetry the hub routed to the `telemetry` Event Hub.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import orjson
import pytest

pytest.importorskip("azure.iot.device", reason="azure-iot-device is not installed")

from devstack.iothub.hub import wait_connected
from shared.errors import DeviceNotOnlineError, DeviceTimeoutError
from simulator import drive
from simulator.car import CarOptions, VirtualCar
from simulator.drive import SleepSchedule
from simulator.messages import iso
from tests.iothub_support import Hub
from tests.iothub_support import local_hub as local_hub_fixture

local_hub = local_hub_fixture  # the fixture (tests/iothub_support.py), under the name the tests take

CAR = "car-cmd-001"
FAST = CarOptions(sample_seconds=0.2, samples_per_message=2, ask_for_meetings=False)


def routed(h: Hub, event_hub: str, device_id: str) -> list[dict[str, Any]]:
    """The JSON bodies IoT Hub routed to an Event Hub for a device, in the device's order (one partition)."""
    events = [
        e
        for partition in h.hub.event_hubs.hub(event_hub).partitions
        for e in partition.events
        if e.system_properties["connection-device-id"] == device_id
    ]
    events.sort(key=lambda e: e.sequence_number)
    return [orjson.loads(e.body) for e in events]


def results(h: Hub, device_id: str = CAR) -> dict[str, list[tuple[str, str | None]]]:
    """commandId -> the (status, reason) of its command.result requests, in order."""
    out: dict[str, list[tuple[str, str | None]]] = {}
    for body in routed(h, "requests", device_id):
        if body.get("action") == "command.result":
            out.setdefault(body["commandId"], []).append((body["status"], body.get("reason")))
    return out


def signal_values(h: Hub, path: str, device_id: str = CAR) -> list[Any]:
    return [
        s["signals"][path]
        for body in routed(h, "telemetry", device_id)
        for s in body["samples"]
        if path in s["signals"]
    ]


async def wait_for(predicate: Callable[[], bool], seconds: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


def command(name: str, params: dict[str, Any] | None = None, expires_in: float = 300) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    return {
        "v": 1,
        "commandId": str(uuid.uuid4()),
        "name": name,
        "params": params or {},
        "issuedAt": iso(now),
        "expiresAt": iso(now + dt.timedelta(seconds=expires_in)),
    }


async def queue(h: Hub, body: dict[str, Any], device_id: str = CAR) -> None:
    """A queued command as the backend sends it: C2D with type=command, commandId, name; the IoT Hub expiry."""
    properties = {"type": "command", "commandId": body["commandId"], "name": body["name"]}
    await h.gateway.send_c2d(device_id, orjson.dumps(body), properties, ttl_seconds=300)


@asynccontextmanager
async def driving(h: Hub, device_id: str = CAR, options: CarOptions = FAST) -> AsyncIterator[VirtualCar]:
    car = VirtualCar(0, h.registry.provision(device_id), h.ca_pem, 7, options)
    task = asyncio.create_task(car.run(time.time() + 240))
    try:
        await car.wait_awake()
        yield car
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
async def car(local_hub: Hub) -> AsyncIterator[VirtualCar]:
    async with driving(local_hub) as car:
        yield car


async def test_commands_queued_for_a_sleeping_car_are_carried_out_and_reported_when_it_wakes(
    local_hub: Hub, car: VirtualCar
) -> None:
    h = local_hub
    # GIVEN a car that drove a little and then fell asleep: IoT Hub finds it not connected
    await wait_for(lambda: len(car.log.sent) >= 2)
    await car.sleep()
    assert not car.connected
    assert not h.hub.connected(CAR)
    sent_before = len(car.log.sent)

    # WHEN commands are queued for it: a lock, a horn that is then cancelled (the twin's commands.cancelled,
    # patched while the car sleeps), one that expires before it wakes, and an unknown one
    lock, horn = command("lock"), command("horn_lights", {"seconds": 2})
    expiring, unknown = command("climate.start", {"targetTemperature": 22}, expires_in=1), command("fly")
    for body in (lock, horn, expiring, unknown):
        await queue(h, body)
    await h.gateway.patch_desired(CAR, {"commands": {"cancelled": [horn["commandId"]]}})
    await asyncio.sleep(1.5)  # the climate command's expiresAt passes; IoT Hub still holds it (its own TTL)
    assert len(h.hub.pending(CAR)) == 4
    assert car.log.commands == []
    assert len(car.log.sent) == sent_before

    # THEN on waking it reads its twin first, then reports each: delivered, then the outcome
    await car.wake()
    assert h.hub.connected(CAR)
    await wait_for(lambda: all(len(results(h).get(b["commandId"], [])) == 2 for b in (lock, horn, expiring, unknown)))
    reports = results(h)
    assert reports[lock["commandId"]] == [("delivered", None), ("succeeded", None)]
    assert reports[horn["commandId"]] == [("delivered", None), ("cancelled", None)]
    assert reports[expiring["commandId"]] == [("delivered", None), ("expired", None)]
    assert reports[unknown["commandId"]] == [("delivered", None), ("failed", "unsupported")]
    assert h.hub.pending(CAR) == []
    # every command.result is a well-formed request
    for body in routed(h, "requests", CAR):
        assert body["v"] == 1
        assert body["action"] == "command.result"
        uuid.UUID(body["requestId"])
        assert body["at"].endswith("Z")

    # AND the lock shows in its telemetry, nothing else happened
    await wait_for(lambda: True in signal_values(h, drive.IS_LOCKED))
    assert car.model.locked
    assert car.model.hazard_left == 0
    assert not car.model.climate_on
    logged = {c["commandId"]: c for c in car.log.commands}
    assert logged[lock["commandId"]]["via"] == "c2d"
    assert logged[lock["commandId"]]["outcome"] == "succeeded"
    assert logged[horn["commandId"]]["outcome"] == "cancelled"
    assert logged[expiring["commandId"]]["outcome"] == "expired"
    assert all(c["receivedAt"] and c["answeredAt"] for c in car.log.commands)
    assert [s["forced"] for s in car.log.sleeps] == [True]
    assert car.log.sleeps[0]["awakeAt"] > car.log.sleeps[0]["asleepAt"]

    # AND the same command again (IoT Hub redelivery, or a backend retry) is reported with the stored outcome
    executed = car.commands.executed
    await queue(h, lock)
    await wait_for(lambda: len(results(h)[lock["commandId"]]) == 4)
    assert results(h)[lock["commandId"]][2:] == [("delivered", None), ("succeeded", None)]
    assert car.commands.executed == executed
    assert car.log.commands[-1]["repeat"] is True


async def test_a_command_queued_while_the_car_is_awake_is_carried_out_at_once(local_hub: Hub, car: VirtualCar) -> None:
    h = local_hub
    destination = command("destination.send", {"latitude": 48.1374, "longitude": 11.5755, "name": "Depot"})
    await queue(h, destination)
    await wait_for(lambda: len(results(h).get(destination["commandId"], [])) == 2)
    assert results(h)[destination["commandId"]] == [("delivered", None), ("succeeded", None)]
    await wait_for(lambda: 48.1374 in signal_values(h, drive.DESTINATION_LAT))


async def test_a_car_on_a_sleep_schedule_disconnects_and_comes_back(local_hub: Hub) -> None:
    h = local_hub
    options = CarOptions(
        sample_seconds=0.2,
        samples_per_message=2,
        ask_for_meetings=False,
        trip_seconds=1.5,
        sleep=SleepSchedule(probability=1.0, seconds=(1.5, 2.0)),
    )
    car = VirtualCar(1, h.registry.provision("car-cmd-002"), h.ca_pem, 3, options)
    task = asyncio.create_task(car.run(time.time() + 20))
    try:
        await car.wait_awake()
        await wait_for(lambda: len(car.log.sleeps) >= 1 and not car.connected, 20)
        assert not h.hub.connected("car-cmd-002")  # asleep: IoT Hub finds it not connected
        lock = command("lock")
        await queue(h, lock, "car-cmd-002")
        await wait_for(lambda: car.connected, 20)
        assert await wait_connected(h.hub, ["car-cmd-002"], 5)
        await wait_for(lambda: len(results(h, "car-cmd-002").get(lock["commandId"], [])) == 2, 20)
        assert results(h, "car-cmd-002")[lock["commandId"]][-1] == ("succeeded", None)
    finally:
        log = await task
    seqs = [s["seq"] for s in log.sent]
    assert seqs == list(range(1, len(seqs) + 1))  # nothing lost across sleeps, in order
    assert [b["seq"] for b in routed(h, "telemetry", "car-cmd-002")] == seqs
    assert all(s["awakeAt"] for s in log.sleeps)
    assert not any(s["forced"] for s in log.sleeps)


async def test_a_connected_car_answers_direct_methods_once_per_command(local_hub: Hub, car: VirtualCar) -> None:
    h = local_hub
    # WHEN a lock is invoked as a direct method
    lock = command("lock")
    result = await h.gateway.invoke_method(CAR, "lock", lock, response_timeout=10)
    # THEN the car answers 200 succeeded, and its telemetry shows the doors locked
    assert (result.status, result.payload) == (200, {"status": "succeeded"})
    await wait_for(lambda: True in signal_values(h, drive.IS_LOCKED))

    # AND a retried method, and the same command queued, get the stored outcome: nothing is done twice
    executed = car.commands.executed
    again = await h.gateway.invoke_method(CAR, "lock", lock, response_timeout=10)
    assert (again.status, again.payload) == (200, {"status": "succeeded"})
    await queue(h, lock)
    await wait_for(lambda: len(results(h).get(lock["commandId"], [])) == 2)
    assert results(h)[lock["commandId"]] == [("delivered", None), ("succeeded", None)]
    assert car.commands.executed == executed
    vias = [(c["via"], c["repeat"], c["methodStatus"] if c["via"] == "method" else None) for c in car.log.commands]
    assert vias == [("method", False, 200), ("method", True, 200), ("c2d", True, None)]

    # AND the car's refusals and the envelope's errors come back with their status and reason
    car.model.ignition_on, car.model.phase_left, car.model.speed, car.model.target = True, 1e9, 60.0, 60.0
    refused = await h.gateway.invoke_method(CAR, "unlock", command("unlock"), response_timeout=10)
    assert refused.status == 409
    assert refused.payload["reason"] == "vehicle_moving"
    assert refused.payload["status"] == "failed"
    assert car.model.locked  # still locked
    unknown = await h.gateway.invoke_method(CAR, "fly", command("fly"), response_timeout=10)
    assert (unknown.status, unknown.payload["reason"]) == (404, "unsupported")
    expired = await h.gateway.invoke_method(CAR, "lock", command("lock", expires_in=-5), response_timeout=10)
    assert (expired.status, expired.payload["reason"]) == (410, "expired")
    bad = await h.gateway.invoke_method(CAR, "charging.limit", command("charging.limit", {"limit": 7}), 0, 10)
    assert (bad.status, bad.payload["reason"]) == (400, "invalid_parameters")

    # AND locate sends the position at once, in a telemetry message of its own
    located = await h.gateway.invoke_method(CAR, "locate", command("locate"), response_timeout=10)
    assert located.status == 200
    [record] = [s for s in car.log.sent if s.get("locate")]
    await wait_for(lambda: record["seq"] in [b["seq"] for b in routed(h, "telemetry", CAR)])
    [message] = [b for b in routed(h, "telemetry", CAR) if b["seq"] == record["seq"]]
    assert drive.LATITUDE in message["samples"][0]["signals"]

    # AND a sleeping car is not online for a method
    await car.sleep()
    with pytest.raises(DeviceNotOnlineError):
        await h.gateway.invoke_method(CAR, "lock", command("lock"), connect_timeout=0, response_timeout=5)
    await car.wake()
    answer = await h.gateway.invoke_method(CAR, "climate.start", command("climate.start"), response_timeout=10)
    assert answer.status == 200


async def test_faulty_answers_are_what_the_backend_must_survive(local_hub: Hub) -> None:
    h = local_hub
    faults = {"climate.start": "error", "horn_lights": "garbage", "charging.stop": "never"}
    async with driving(h, "car-cmd-003", replace(FAST, command_faults=faults)) as car:  # type: ignore[arg-type]
        error = await h.gateway.invoke_method("car-cmd-003", "climate.start", command("climate.start"), 0, 10)
        assert (error.status, error.payload["reason"]) == (500, "internal_error")
        garbage = await h.gateway.invoke_method("car-cmd-003", "horn_lights", command("horn_lights"), 0, 10)
        assert (garbage.status, garbage.payload) == (200, None)  # the car's answer is not JSON
        with pytest.raises(DeviceTimeoutError):
            await h.gateway.invoke_method("car-cmd-003", "charging.stop", command("charging.stop"), 0, 5)
        ok = await h.gateway.invoke_method("car-cmd-003", "lock", command("lock"), 0, 10)
        assert ok.status == 200
        assert [c["outcome"] for c in car.log.commands] == ["failed", "garbage", "unanswered", "succeeded"]
        assert car.commands.executed == 1
        assert not car.model.climate_on
        assert car.model.hazard_left == 0
