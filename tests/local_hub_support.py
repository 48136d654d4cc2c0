"""One local IoT Hub with its service API and the backend's gateway to it, for the integration tests that drive real
device SDK cars against it (methods, C2D limits, the simulator's commands): the `local_hub` fixture."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack.eventhubs import EventHubsNamespace
from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import DeviceRegistry
from devstack.iothub.service_api import ServiceApi
from devstack.stack import IOTHUB_PORT, free_loopback_address
from devstack.tls import generate
from shared.iothub.local_gateway import LocalIoTHubGateway


@dataclass
class Hub:
    hub: LocalIoTHub
    registry: DeviceRegistry
    gateway: LocalIoTHubGateway
    address: str
    service_url: str
    ca_pem: str


@asynccontextmanager
async def started_hub(workdir: Path) -> AsyncIterator[Hub]:
    """A hub on a loopback address of its own (devices always dial 8883), its TLS files in `workdir`."""
    address = free_loopback_address()
    registry = DeviceRegistry(address)
    hub = LocalIoTHub(registry, EventHubsNamespace())
    tls = generate(workdir / "tls", [address])
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
