"""The real local IoT Hub for a test (devstack/iothub on a free loopback address, its service API and
LocalIoTHubGateway), waiting for what the hub does on its own loop, and the real azure-iot-hub SDK against a
loopback stand-in of IoT Hub's REST API (no network). A plain module, so test files import the
fixture from here rather than from each other."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from devstack.eventhubs import EventHubsNamespace
from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import DeviceRegistry
from devstack.iothub.service_api import ServiceApi
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
