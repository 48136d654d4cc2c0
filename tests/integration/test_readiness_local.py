"""GET /api/health/ready against the real local servers: the local Cosmos server, Azurite's queues and the local
IoT Hub's service API, each reached by the app's own client. One dependency down (refusing, or silent) → 503 with
that one named `down`; nothing else in the answer (shared/observability/readiness.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest
from azure.storage.queue.aio import QueueServiceClient

from devstack.eventhubs import EventHubsNamespace
from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import DeviceRegistry
from devstack.iothub.service_api import ServiceApi
from devstack.stack import free_loopback_address
from shared.api.app import create_fastapi
from shared.api.routes import meta
from shared.calendar.config import CALENDAR_SYNC_QUEUE
from shared.iothub.gateway import IoTHubGateway
from shared.iothub.local_gateway import LocalIoTHubGateway
from shared.observability.readiness import CachedReadiness, Probe, cosmos_probe, iothub_probe, queues_probe
from shared.stores.cosmos import CosmosDocumentStore


@pytest.fixture
async def iothub_service_url() -> AsyncIterator[str]:
    """The local IoT Hub's service API (REST), as the app's gateway reaches it."""
    hub = LocalIoTHub(DeviceRegistry(free_loopback_address()), EventHubsNamespace())
    api = ServiceApi(hub)
    url = await api.start()
    try:
        yield url
    finally:
        await api.stop()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A server that accepts connections and never answers (a dependency that hangs)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


async def ask(probes: dict[str, Probe]) -> tuple[int, dict[str, object], httpx.Headers]:
    app = create_fastapi()
    app.dependency_overrides[meta.readiness_checker] = lambda: CachedReadiness(probes)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test") as client:
        answer = await client.get("/api/health/ready")  # no token: the platform's probes carry none
    return answer.status_code, orjson.loads(answer.content), answer.headers


def probes_with(store: CosmosDocumentStore, storage: str, gateway: IoTHubGateway) -> dict[str, Probe]:
    queues: Callable[[], QueueServiceClient] = lambda: QueueServiceClient.from_connection_string(storage)  # noqa: E731
    return {
        "cosmos": cosmos_probe(lambda: store),
        "queues": queues_probe(queues),
        "iothub": iothub_probe(lambda: gateway),
    }


@pytest.fixture
async def sync_queue(storage_connection_string: str) -> None:
    async with QueueServiceClient.from_connection_string(storage_connection_string) as service:
        try:
            await service.create_queue(CALENDAR_SYNC_QUEUE)
        except Exception as exc:  # already there from another test
            if type(exc).__name__ != "ResourceExistsError":
                raise


async def test_ready_when_every_dependency_answers(
    cosmos_store: CosmosDocumentStore, storage_connection_string: str, iothub_service_url: str, sync_queue: None
) -> None:
    gateway = LocalIoTHubGateway(iothub_service_url, "hub.local")
    try:
        status, body, headers = await ask(probes_with(cosmos_store, storage_connection_string, gateway))
    finally:
        await gateway.close()
    assert (status, body) == (200, {"status": "ready", "checks": {"cosmos": "ok", "iothub": "ok", "queues": "ok"}})
    assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize("how", ["refused", "silent"])
async def test_one_dependency_down_is_not_ready_and_named(
    cosmos_store: CosmosDocumentStore, storage_connection_string: str, silent_port: int, sync_queue: None, how: str
) -> None:
    # GIVEN IoT Hub's service API refusing connections, or accepting them and never answering
    port = silent_port if how == "silent" else _closed_port()
    gateway = LocalIoTHubGateway(f"http://127.0.0.1:{port}", "hub.local")
    try:
        # WHEN the platform probes readiness
        status, body, _ = await ask(probes_with(cosmos_store, storage_connection_string, gateway))
    finally:
        await gateway.close()
    # THEN not ready, IoT Hub named down, the others ok, and nothing about where or why
    assert (status, body) == (
        503,
        {"status": "not_ready", "checks": {"cosmos": "ok", "iothub": "down", "queues": "ok"}},
    )


async def test_unreachable_storage_is_down_and_its_address_not_shown(
    cosmos_store: CosmosDocumentStore, iothub_service_url: str
) -> None:
    # GIVEN the app's storage account configured at an address where nothing listens
    bad = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
        + "A" * 86
        + "==;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1"
    )
    gateway = LocalIoTHubGateway(iothub_service_url, "hub.local")
    try:
        status, body, _ = await ask(probes_with(cosmos_store, bad, gateway))
    finally:
        await gateway.close()
    assert status == 503
    assert body["checks"] == {"cosmos": "ok", "iothub": "ok", "queues": "down"}
    assert "127.0.0.1" not in orjson.dumps(body).decode()


async def test_the_answer_is_kept_for_a_few_seconds() -> None:
    calls: list[str] = []
    now = [100.0]

    async def probe() -> None:
        calls.append("probed")

    checker = CachedReadiness({"cosmos": probe}, clock=lambda: now[0])
    await asyncio.gather(*(checker.get() for _ in range(5)))
    assert calls == ["probed"]  # five concurrent probes, one round of calls
    now[0] += 5.0
    assert (await checker.get()).ready
    assert calls == ["probed", "probed"]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed
