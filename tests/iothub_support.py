"""The real local IoT Hub for a test (devstack/iothub on a free loopback address, its service API and
LocalIoTHubGateway), waiting for what the hub does on its own loop, a device speaking MQTT by hand (what the SDK
never sends), and the real azure-iot-hub SDK against a loopback stand-in of IoT Hub's REST API (no network). A
plain module, so test files import the fixture from here rather than from each other."""

from __future__ import annotations

import asyncio
import json
import ssl
import struct
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from devstack.eventhubs import EventHubsNamespace
from devstack.iothub import mqtt_codec as mqtt
from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import DeviceRegistry, sas_token
from devstack.iothub.service_api import ServiceApi
from devstack.iothub.topics import METHODS_FILTER, parse_method_request_topic
from devstack.stack import IOTHUB_PORT, free_loopback_address
from devstack.tls import generate
from shared.iothub.azure_gateway import AzureIoTHubGateway
from shared.iothub.local_gateway import LocalIoTHubGateway


@dataclass
class Hub:
    hub: LocalIoTHub
    registry: DeviceRegistry
    gateway: LocalIoTHubGateway
    address: str
    service_url: str
    ca_pem: str


@pytest.fixture
async def local_hub(tmp_path: Path) -> AsyncIterator[Hub]:
    address = free_loopback_address()
    registry = DeviceRegistry(address)
    hub = LocalIoTHub(registry, EventHubsNamespace())
    tls = generate(tmp_path / "tls", [address])
    await hub.start(address, tls, IOTHUB_PORT)
    api = ServiceApi(hub)
    url = await api.start()
    gateway = LocalIoTHubGateway(url, address)
    try:
        yield Hub(hub, registry, gateway, address, url, tls.ca_pem)
    finally:
        await gateway.close()
        await api.stop()
        await hub.stop()


async def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.05)
    return False


class RawDevice:
    """A device speaking MQTT 3.1.1 by hand: CONNECT with its SAS token, SUBSCRIBE to one filter, PUBLISH anything,
    and acknowledge a QoS 1 message only when told to (the SDK answers garbage never, and PUBACKs always)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, h: Hub, device_id: str, topic_filter: str = METHODS_FILTER) -> RawDevice:
        h.registry.provision(device_id)
        context = ssl.create_default_context(cadata=h.ca_pem)
        reader, writer = await asyncio.open_connection(h.address, IOTHUB_PORT, ssl=context)
        password = sas_token(h.registry.device_key(device_id), f"{h.address}/devices/{device_id}")
        fields = b"".join(
            mqtt._encode_string(text) for text in (device_id, f"{h.address}/{device_id}/?api-version=1", password)
        )
        body = mqtt._encode_string("MQTT") + bytes([4, 0xC2]) + struct.pack("!H", 60) + fields
        writer.write(mqtt.encode(mqtt.CONNECT, 0, body))
        connack = await mqtt.read_packet(reader)
        assert (connack.kind, connack.body[-1]) == (mqtt.CONNACK, mqtt.ACCEPTED)
        device = cls(reader, writer)
        writer.write(mqtt.encode(mqtt.SUBSCRIBE, 2, struct.pack("!H", 1) + mqtt._encode_string(topic_filter) + b"\1"))
        assert (await mqtt.read_packet(reader)).kind == mqtt.SUBACK
        return device

    async def received(self, seconds: float = 10) -> mqtt.Publish:
        """The next message the hub publishes to this device (not acknowledged)."""
        return mqtt.parse_publish(await asyncio.wait_for(mqtt.read_packet(self.reader), seconds))

    async def method_request(self) -> tuple[str, str, bytes]:
        """The next direct method: (name, request id, payload)."""
        message = await self.received()
        parsed = parse_method_request_topic(message.topic)
        assert parsed is not None, message.topic
        return parsed[0], parsed[1], message.payload

    async def acknowledge(self, message: mqtt.Publish) -> None:
        """PUBACK a QoS 1 message (for a cloud-to-device message: the device completes it)."""
        assert message.packet_id is not None
        self.writer.write(mqtt.puback(message.packet_id))
        await self.writer.drain()

    async def publish(self, topic: str, payload: bytes) -> None:
        self.writer.write(mqtt.publish(topic, payload))
        await self.writer.drain()

    async def ping(self) -> bool:
        self.writer.write(mqtt.encode(mqtt.PINGREQ, 0, b""))
        return (await asyncio.wait_for(mqtt.read_packet(self.reader), 5)).kind == mqtt.PINGRESP

    def close(self) -> None:
        self.writer.close()


class FakeIoTHub(BaseHTTPRequestHandler):
    """IoT Hub's REST API as far as a direct method goes: records each POST and answers the next scripted answer."""

    answers: ClassVar[list[tuple[int, dict[str, str], str]]] = []
    requests: ClassVar[list[tuple[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        FakeIoTHub.requests.append((self.path, json.loads(body)))
        status, headers, text = FakeIoTHub.answers.pop(0)
        data = text.encode()
        self.send_response(status)
        for name, value in {**headers, "content-type": "application/json", "content-length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sdk_gateway() -> Iterator[AzureIoTHubGateway]:
    """AzureIoTHubGateway on the real azure-iot-hub SDK, its REST client pointed at a loopback FakeIoTHub."""
    from azure.iot.hub import IoTHubRegistryManager  # type: ignore[import-untyped]

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeIoTHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakeIoTHub.answers.clear()
    FakeIoTHub.requests.clear()
    manager = IoTHubRegistryManager.from_connection_string(
        "HostName=hub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey=" + "a" * 44
    )
    manager.protocol.config.base_url = f"http://127.0.0.1:{server.server_port}"
    gateway = AzureIoTHubGateway("hub.azure-devices.net")
    gateway._manager = manager
    try:
        yield gateway
    finally:
        server.shutdown()
        server.server_close()
