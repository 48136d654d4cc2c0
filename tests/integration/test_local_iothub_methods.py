"""Direct methods end to end against the real local IoT Hub (issue 14): real `azure-iot-device` cars over MQTT/TLS
answer through `on_method_request_received` / `send_method_response`, and the backend invokes through
LocalIoTHubGateway and the hub's service API (`POST /twins/{id}/methods`), meeting what it meets in Azure:
the device's own status and payload, 404103 DeviceNotOnline, 504101 GatewayTimeout, 404 DeviceNotFound and
refusals of calls IoT Hub refuses. A hand-written MQTT device plays what the SDK never sends (garbage answers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from azure.iot.device import MethodRequest, MethodResponse
from azure.iot.device.aio import IoTHubDeviceClient

from shared.errors import DeviceNotFoundError, DeviceNotOnlineError, DeviceTimeoutError, InvalidMethodCallError
from shared.iothub.gateway import METHOD_PAYLOAD_MAX_BYTES, MethodResult
from tests.iothub_support import Hub, RawDevice
from tests.iothub_support import local_hub as local_hub_fixture

Handler = Callable[[MethodRequest], Awaitable[None]]
local_hub = local_hub_fixture  # the fixture (tests/iothub_support.py), under the name the tests take


async def sdk_car(
    h: Hub, device_id: str, handler: Callable[[IoTHubDeviceClient], Handler] | None
) -> IoTHubDeviceClient:
    """A connected SDK car; with a handler it subscribes to methods as the SDK does when one is set."""
    client = IoTHubDeviceClient.create_from_connection_string(
        h.registry.provision(device_id), server_verification_cert=h.ca_pem
    )
    await client.connect()
    if handler is not None:
        # the setter blocks until SUBACK, and the hub answers on this loop: set it from another thread
        await asyncio.to_thread(setattr, client, "on_method_request_received", handler(client))
    return client


def answering(status: int, reply: Callable[[MethodRequest], Any], seen: list[MethodRequest]) -> Any:
    def make(client: IoTHubDeviceClient) -> Handler:
        async def on_method(request: MethodRequest) -> None:
            seen.append(request)
            await client.send_method_response(
                MethodResponse.create_from_method_request(request, status, reply(request))
            )

        return on_method

    return make


async def test_a_connected_car_answers_with_its_status_and_payload(local_hub: Hub) -> None:
    h, seen = local_hub, list[MethodRequest]()
    car = await sdk_car(h, "car-ok", answering(200, lambda r: {"locked": True, "echo": r.payload}, seen))
    try:
        result = await h.gateway.invoke_method("car-ok", "door.lock", {"doors": ["front-left"], "n": 1.5})
    finally:
        await car.shutdown()
    assert result == MethodResult(200, {"locked": True, "echo": {"doors": ["front-left"], "n": 1.5}})
    [request] = seen
    assert (request.name, request.payload) == ("door.lock", {"doors": ["front-left"], "n": 1.5})


async def test_a_car_that_refuses_answers_its_error_status_and_reason(local_hub: Hub) -> None:
    h, seen = local_hub, list[MethodRequest]()
    car = await sdk_car(h, "car-moving", answering(409, lambda r: {"reason": "vehicle_moving"}, seen))
    try:
        result = await h.gateway.invoke_method("car-moving", "door.unlock", None)
    finally:
        await car.shutdown()
    assert result == MethodResult(409, {"reason": "vehicle_moving"})  # the device's verdict, not an IoT Hub error
    assert seen[0].payload is None


async def test_a_car_that_is_not_connected_is_not_online_at_once(local_hub: Hub) -> None:
    h = local_hub
    h.registry.provision("car-asleep")
    started = time.monotonic()
    with pytest.raises(DeviceNotOnlineError):
        await h.gateway.invoke_method("car-asleep", "door.lock", {}, connect_timeout=0)
    assert time.monotonic() - started < 2


async def test_a_connected_car_without_a_method_handler_is_not_online_for_methods(local_hub: Hub) -> None:
    h = local_hub
    car = await sdk_car(h, "car-no-handler", None)
    try:
        assert h.hub.connected("car-no-handler")
        with pytest.raises(DeviceNotOnlineError):
            await h.gateway.invoke_method("car-no-handler", "door.lock", {}, connect_timeout=1)
    finally:
        await car.shutdown()


async def test_a_car_that_connects_within_the_connect_timeout_gets_the_method(local_hub: Hub) -> None:
    h, seen = local_hub, list[MethodRequest]()
    h.registry.provision("car-waking")
    call = asyncio.create_task(h.gateway.invoke_method("car-waking", "climate.start", {"c": 21}, connect_timeout=30))
    await asyncio.sleep(0.5)
    assert not call.done()  # the hub waits for the car
    car = await sdk_car(h, "car-waking", answering(200, lambda r: {"ok": True}, seen))
    try:
        assert await asyncio.wait_for(call, 30) == MethodResult(200, {"ok": True})
    finally:
        await car.shutdown()
    assert [r.payload for r in seen] == [{"c": 21}]


async def test_a_car_that_never_answers_times_out_and_its_late_answer_is_ignored(local_hub: Hub) -> None:
    h, taken = local_hub, []

    def silent(client: IoTHubDeviceClient) -> Handler:
        async def on_method(request: MethodRequest) -> None:
            taken.append(request)

        return on_method

    car = await sdk_car(h, "car-silent", silent)
    try:
        started = time.monotonic()
        with pytest.raises(DeviceTimeoutError):
            await h.gateway.invoke_method("car-silent", "horn.honk", {}, response_timeout=5)
        assert 5 <= time.monotonic() - started < 10
        # the late answer arrives after IoT Hub gave up: ignored, and the car stays connected
        await car.send_method_response(MethodResponse.create_from_method_request(taken[0], 200, {"late": True}))
        await wait_for(lambda: h.hub.counters["method:ignored"] == 1)
        assert h.hub.methods_online("car-silent")
    finally:
        await car.shutdown()


async def test_an_unknown_device_is_not_found(local_hub: Hub) -> None:
    with pytest.raises(DeviceNotFoundError):
        await local_hub.gateway.invoke_method("car-never-registered", "door.lock", {})


@pytest.mark.parametrize(
    ("method", "payload", "connect_timeout", "response_timeout"),
    [
        ("", {}, 0, 30),
        ("m" * 101, {}, 0, 30),
        ("door.lock", {"blob": "x" * METHOD_PAYLOAD_MAX_BYTES}, 0, 30),
        ("door.lock", {1, 2}, 0, 30),  # not JSON
        ("door.lock", {}, 0, 4),
        ("door.lock", {}, 0, 301),
        ("door.lock", {}, -1, 30),
        ("door.lock", {}, 301, 30),
    ],
)
async def test_calls_iot_hub_refuses_are_refused_before_sending(
    local_hub: Hub, method: str, payload: Any, connect_timeout: int, response_timeout: int
) -> None:
    h = local_hub
    h.registry.provision("car-x")
    with pytest.raises(InvalidMethodCallError):
        await h.gateway.invoke_method("car-x", method, payload, connect_timeout, response_timeout)
    assert h.hub.counters["method:sent"] == 0


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"methodName": "m", "payload": "x" * METHOD_PAYLOAD_MAX_BYTES}, 413, "MessageTooLarge"),
        ({"methodName": "m", "responseTimeoutInSeconds": 3}, 400, "ArgumentInvalid"),
        ({"methodName": "m", "connectTimeoutInSeconds": 301}, 400, "ArgumentInvalid"),
        ({"methodName": "", "payload": {}}, 400, "ArgumentInvalid"),
        ({"methodName": 7}, 400, "ArgumentInvalid"),
        ({"payload": {}}, 400, "ArgumentInvalid"),
        (["not", "an", "object"], 400, "ArgumentInvalid"),
        ({"methodName": "m", "connectTimeoutInSeconds": 0}, 404, "DeviceNotOnline"),
    ],
)
async def test_the_service_api_answers_bad_calls_as_iot_hub_does(
    local_hub: Hub, body: Any, status: int, code: str
) -> None:
    h = local_hub
    h.registry.provision("car-x")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{h.service_url}/twins/car-x/methods", data=orjson.dumps(body)) as resp,
    ):
        assert (resp.status, resp.headers["iothub-errorcode"]) == (status, code)
        assert (await resp.json())["Message"].startswith(f"ErrorCode:{code};")


# --- a device that answers what the SDK never would -------------------------------------------------------------


async def test_a_car_answering_garbage_gets_its_status_counted_and_keeps_its_connection(local_hub: Hub) -> None:
    h = local_hub
    device = await RawDevice.connect(h, "car-garbage")
    try:
        call = asyncio.create_task(h.gateway.invoke_method("car-garbage", "locate", {"fresh": True}))
        name, rid, payload = await device.method_request()
        assert (name, orjson.loads(payload)) == ("locate", {"fresh": True})
        # malformed topics and unknown request ids are ignored, not fatal
        await device.publish(f"$iothub/methods/res/not-a-status/?$rid={rid}", b"{}")
        await device.publish("$iothub/methods/res/200/?$rid=", b"{}")
        await device.publish("$iothub/methods/res/99999999999/?$rid=" + rid, b"{}")
        await device.publish("$iothub/methods/res/200/?$rid=no-such-request", b"{}")
        assert await device.ping()
        assert not call.done()
        # a body that is not JSON: the status still counts, the payload is None
        await device.publish(f"$iothub/methods/res/500/?$rid={rid}", b"\xff<not json")
        assert await asyncio.wait_for(call, 10) == MethodResult(500, None)
        assert await device.ping()
        assert h.hub.counters["method:ignored"] == 1
    finally:
        device.close()


async def test_a_car_that_drops_its_connection_during_a_method_is_not_online(local_hub: Hub) -> None:
    h = local_hub
    device = await RawDevice.connect(h, "car-drops")
    call = asyncio.create_task(h.gateway.invoke_method("car-drops", "charge.start", {}, response_timeout=30))
    await device.method_request()
    device.close()
    with pytest.raises(DeviceNotOnlineError):
        await asyncio.wait_for(call, 10)


async def test_a_deleted_device_fails_its_pending_method(local_hub: Hub) -> None:
    h = local_hub
    device = await RawDevice.connect(h, "car-erased")
    try:
        call = asyncio.create_task(h.gateway.invoke_method("car-erased", "door.lock", {}, response_timeout=30))
        await device.method_request()
        assert await h.gateway.delete_device("car-erased")
        with pytest.raises(DeviceNotOnlineError):
            await asyncio.wait_for(call, 10)
        with pytest.raises(DeviceNotFoundError):
            await h.gateway.invoke_method("car-erased", "door.lock", {})
    finally:
        device.close()


async def wait_for(predicate: Callable[[], bool], seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)
