"""Routing, twins, SAS checks and the MQTT codec of the local IoT Hub, without sockets."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from devstack.eventhubs import EventHubsNamespace
from devstack.iothub import mqtt_codec as mqtt
from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import DeviceRegistry, sas_token
from devstack.iothub.routing import Routes
from devstack.iothub.topics import Properties, TwinRequest
from devstack.iothub.twin import Twin


def test_routes_come_from_the_shared_definition() -> None:
    routes = Routes.load()
    assert routes.event_hubs({"type": "telemetry"}) == ["telemetry"]
    assert routes.event_hubs({"type": "request"}) == ["requests"]
    assert routes.event_hubs({"type": "other"}) == ["unrouted"]  # dead-lettered, never the unread fallback


def test_sas_tokens_are_checked_like_iot_hub() -> None:
    registry = DeviceRegistry("localhost", secret=b"k" * 32)
    key = registry.device_key("car-001")
    good = sas_token(key, "localhost/devices/car-001")
    assert not registry.verify("car-001", good)  # no identity yet: refused, as by IoT Hub
    registry.provision("car-001")
    registry.provision("car-002")
    assert registry.verify("car-001", good)
    assert not registry.verify("car-002", good)  # another device's token
    assert not registry.verify("car-001", sas_token(registry.device_key("car-002"), "localhost/devices/car-001"))
    assert not registry.verify("car-001", good, now=time.time() + 10 * 3600)  # expired
    assert not registry.verify("car-001", None)


def test_twin_patches_merge_and_count_versions() -> None:
    twin = Twin()
    pushed = twin.patch_desired({"agenda": {"events": [1], "hash": "a"}, "$version": 99})
    assert pushed == {"agenda": {"events": [1], "hash": "a"}, "$version": 2}
    twin.patch_desired({"agenda": {"hash": None}})
    assert twin.document()["desired"] == {"agenda": {"events": [1]}, "$version": 3}
    assert twin.patch_reported({"fw": "1.2"}) == 2


async def test_device_messages_are_routed_with_iot_hub_metadata() -> None:
    # GIVEN a hub whose Event Hubs are in memory
    hubs = EventHubsNamespace()
    hub = LocalIoTHub(DeviceRegistry("localhost"), hubs)

    # WHEN a car sends telemetry and a request
    await hub._device_to_cloud("car-001", Properties({"content-type": "application/json"}, {"type": "telemetry"}), b"t")
    await hub._device_to_cloud("car-001", Properties({}, {"type": "request"}), b"r")

    # THEN each lands in its hub, numbered per partition, with the system properties the host exposes
    [event] = [e for p in hubs.hub("telemetry").partitions for e in p.events]
    assert event.body == b"t"
    assert event.sequence_number == 0
    assert event.system_properties["connection-device-id"] == "car-001"
    assert event.system_properties["enqueuedtime"].endswith("Z")
    assert event.properties == {"type": "telemetry"}
    assert len(hubs.hub("requests")) == 1


async def test_twin_get_and_reported_patch() -> None:
    hub = LocalIoTHub(DeviceRegistry("localhost"), EventHubsNamespace())
    await hub.patch_desired("car-001", {"agenda": {"events": []}})  # not connected: kept for the next GET
    status, body, _ = await hub._twin_request("car-001", TwinRequest("GET", "/", "1"), b"")
    assert status == 200
    assert orjson.loads(body)["desired"]["agenda"] == {"events": []}
    status, _, version = await hub._twin_request(
        "car-001", TwinRequest("PATCH", "/properties/reported/", "2"), b'{"x": 1}'
    )
    assert (status, version) == (204, 2)


def test_mqtt_publish_round_trip() -> None:
    raw = mqtt.publish("devices/a/messages/events/", b"x" * 300, qos=1, packet_id=7)

    async def read() -> mqtt.Packet:  # the reader inside the loop: no reliance on a current event loop
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await mqtt.read_packet(reader)

    packet = asyncio.run(read())
    parsed = mqtt.parse_publish(packet)
    assert (parsed.topic, parsed.payload, parsed.qos, parsed.packet_id) == (
        "devices/a/messages/events/",
        b"x" * 300,
        1,
        7,
    )


def test_mqtt_rejects_qos2() -> None:
    with pytest.raises(mqtt.ProtocolError):
        mqtt.parse_publish(mqtt.Packet(mqtt.PUBLISH, 0b0100, b"\x00\x01a\x00\x01"))
