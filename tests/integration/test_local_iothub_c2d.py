"""Cloud-to-device delivery on the real local IoT Hub as IoT Hub runs it (docs: "the cloud-to-device message life
cycle"): a message delivered over MQTT at QoS 1 stays in the device's queue, invisible but counted against the 50,
until the device's PUBACK completes it; a connection that ends before the PUBACK leaves it to be delivered again on
the next one (in order, same message id); after 10 deliveries it is dead-lettered; its expiry applies throughout.
A hand-written MQTT device plays the car that receives and does not acknowledge (the SDK always does); the real
`azure-iot-device` client plays the car that comes back and completes its messages.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from azure.iot.device import Message
from azure.iot.device.aio import IoTHubDeviceClient

from devstack.iothub import mqtt_codec as mqtt
from devstack.iothub.hub import C2D_MAX_DELIVERY_COUNT
from devstack.iothub.topics import c2d_filter, decode_properties
from shared.errors import DeviceQueueFullError
from shared.iothub.gateway import C2D_QUEUE_LIMIT
from tests.iothub_support import Hub, RawDevice, wait_until
from tests.iothub_support import local_hub as local_hub_fixture

local_hub = local_hub_fixture  # the fixture (tests/iothub_support.py), under the name the tests take


def message_id(message: mqtt.Publish) -> str:
    return decode_properties(message.topic.rsplit("/", 1)[1]).system["message-id"]


async def released(h: Hub, device_id: str) -> bool:
    """The hub has taken back what the device's ended connection left unacknowledged."""
    return await wait_until(lambda: not any(m.in_flight for m in h.hub.pending(device_id)))


async def test_an_unacknowledged_message_keeps_its_slot_and_comes_again_after_a_reconnect(local_hub: Hub) -> None:
    h, car = local_hub, "car-c2d-1"
    # GIVEN a car that receives its 50 messages and acknowledges none
    device = await RawDevice.connect(h, car, c2d_filter(car))
    try:
        for n in range(C2D_QUEUE_LIMIT):
            await h.gateway.send_c2d(car, b'{"n":%d}' % n, {"n": str(n)})
        first = [await device.received() for _ in range(C2D_QUEUE_LIMIT)]
        assert {m.qos for m in first} == {1}

        # THEN they still count against the 50: the 51st is refused, as IoT Hub refuses it
        assert len(h.hub.pending(car)) == C2D_QUEUE_LIMIT
        with pytest.raises(DeviceQueueFullError):
            await h.gateway.send_c2d(car, b"{}", {"n": "refused"})

        # WHEN it acknowledges one, that one is completed and its slot is free for another
        await device.acknowledge(first[0])
        assert await wait_until(lambda: len(h.hub.pending(car)) == C2D_QUEUE_LIMIT - 1)
        await h.gateway.send_c2d(car, b'{"n":50}', {"n": "50"})
        last = await device.received()
    finally:
        device.close()  # AND the link drops with 50 delivered and not acknowledged
    assert await released(h, car)
    assert [m.delivery_count for m in h.hub.pending(car)] == [1] * C2D_QUEUE_LIMIT

    # THEN the car, back with the SDK, gets those 50 again, in order, under the same message ids, and completes them
    received: list[Message] = []
    lock = threading.Lock()

    def on_message(message: Message) -> None:  # the SDK's handler thread
        with lock:
            received.append(message)

    client = IoTHubDeviceClient.create_from_connection_string(
        h.registry.provision(car), server_verification_cert=h.ca_pem
    )
    await client.connect()
    try:
        await asyncio.to_thread(setattr, client, "on_message_received", on_message)  # blocks until SUBACK
        assert await wait_until(lambda: len(received) == C2D_QUEUE_LIMIT, 15)
        assert await wait_until(lambda: h.hub.pending(car) == [])  # its PUBACKs completed them
    finally:
        await client.shutdown()
    with lock:
        assert [m.custom_properties["n"] for m in received] == [str(n) for n in range(1, C2D_QUEUE_LIMIT + 1)]
        assert [m.message_id for m in received] == [message_id(m) for m in (*first[1:], last)]
    assert h.hub.counters["c2d:completed"] == C2D_QUEUE_LIMIT + 1


async def test_a_message_never_acknowledged_is_dead_lettered_after_the_max_delivery_count(local_hub: Hub) -> None:
    h, car = local_hub, "car-c2d-2"
    h.registry.provision(car)
    await h.gateway.send_c2d(car, b"{}", {"type": "response"})
    [queued] = h.hub.pending(car)
    # a car that takes the message and drops its link before acknowledging, again and again
    for delivery in range(1, C2D_MAX_DELIVERY_COUNT + 1):
        device = await RawDevice.connect(h, car, c2d_filter(car))
        try:
            assert message_id(await device.received()) == queued.message_id, f"delivery {delivery}"
        finally:
            device.close()
        assert await released(h, car)
    # after the 10th it is dead-lettered (deliveryCountExceeded), not delivered an 11th time
    assert h.hub.pending(car) == []
    assert h.hub.counters["c2d:dead_lettered"] == 1
    device = await RawDevice.connect(h, car, c2d_filter(car))
    try:
        with pytest.raises(TimeoutError):
            await device.received(0.5)
    finally:
        device.close()


async def test_an_unacknowledged_message_past_its_expiry_is_dropped_not_delivered_again(local_hub: Hub) -> None:
    h, car = local_hub, "car-c2d-3"
    device = await RawDevice.connect(h, car, c2d_filter(car))
    try:
        await h.gateway.send_c2d(car, b"{}", {}, ttl_seconds=1)
        await device.received()
        await asyncio.sleep(1.1)
        assert h.hub.pending(car) == []  # expired while invisible: its slot is free
    finally:
        device.close()
    device = await RawDevice.connect(h, car, c2d_filter(car))
    try:
        with pytest.raises(TimeoutError):
            await device.received(0.5)
    finally:
        device.close()
    assert h.hub.counters["c2d:expired"] == 1
