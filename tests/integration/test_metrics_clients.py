"""Graph, Maps and Cosmos request metrics through the real SDK clients and local servers (a real SDK
MeterProvider with an InMemoryMetricReader reads them back)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from azure.core import AsyncPipelineClient
from azure.core.pipeline.policies import CustomHookPolicy
from azure.core.rest import HttpRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from devstack.graph_sandbox import GraphSandbox
from devstack.graph_sandbox import serve as serve_graph
from devstack.maps_sandbox import MapsSandbox
from devstack.maps_sandbox import serve as serve_maps
from shared.device_messages import canonical_time
from shared.graph.msgraph_client import MsGraphClient
from shared.maps.azure_client import AzureMapsClient
from shared.observability import metrics
from shared.stores.cosmos import CosmosDocumentStore, record_request_charge
from tests.calendar_support import HOUR, USER, World


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.use_meter_provider(provider)
    yield reader
    metrics.use_meter_provider(None)
    provider.shutdown()


def counted(reader: InMemoryMetricReader, name: str, **where: str) -> float:
    return metrics.total(metrics.snapshot(reader).get(name, []), **where)


async def test_graph_requests_count_the_429s_the_sdk_retries(reader: InMemoryMetricReader) -> None:
    # GIVEN Graph throttles the first delta call once
    now = dt.datetime.now(dt.UTC)
    box = GraphSandbox()
    async with serve_graph(box) as url:
        client = MsGraphClient.create(url, None, max_retries=1)
        try:
            box.fail_next("delta", 429, {"Retry-After": "0"})
            # WHEN the app asks once (the SDK's retry handler answers the 429 itself)
            await client.calendar_delta(USER, start=canonical_time(now - HOUR), end=canonical_time(now + HOUR))
        finally:
            await client.close()
    # THEN both attempts are counted: the throttled one and the one that succeeded
    assert counted(reader, "carlink.graph.requests", outcome="throttled") == 1
    assert counted(reader, "carlink.graph.requests", outcome="ok") == len(box.calls("delta")) - 1 == 1


class NoSleep:
    async def __call__(self, seconds: float) -> None:
        return None


async def test_maps_requests_count_every_attempt_by_outcome(reader: InMemoryMetricReader) -> None:
    sandbox = MapsSandbox()
    async with serve_maps(sandbox) as url:
        client = AzureMapsClient.create(url, "maps-account-id", "mi-client", sleep=NoSleep())
        try:
            sandbox.fail_next(429, {"Retry-After": "1"}, times=2)
            assert await client.geocode("Aarhus") is not None
        finally:
            await client.close()
    assert counted(reader, "carlink.maps.requests", outcome="throttled") == 2
    assert counted(reader, "carlink.maps.requests", outcome="ok") == 1 == sandbox.transactions("geocode") - 2


@pytest.fixture
async def charging_server() -> AsyncIterator[str]:
    """Answers as Cosmos DB does for a replace and an upsert, with the x-ms-request-charge the local Cosmos
    server never sends."""

    async def docs(request: web.Request) -> web.Response:
        return web.json_response({}, headers={"x-ms-request-charge": "6.29" if request.method == "PUT" else "4.95"})

    app = web.Application()
    app.router.add_route("*", "/dbs/fleet/colls/{container}/docs{tail:.*}", docs)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_the_cosmos_response_hook_adds_request_charges_by_container_and_operation(
    reader: InMemoryMetricReader, charging_server: str
) -> None:
    # GIVEN the hook in an azure-core pipeline, as CosmosClient(raw_response_hook=...) installs it
    client: AsyncPipelineClient[HttpRequest, Any] = AsyncPipelineClient(
        charging_server, policies=[CustomHookPolicy(raw_response_hook=record_request_charge)]
    )
    async with client:
        for method, headers in (("PUT", {}), ("POST", {"x-ms-documentdb-is-upsert": "True"})):
            url = f"{charging_server}/dbs/fleet/colls/vehicles/docs" + ("/car-1" if method == "PUT" else "")
            await client.send_request(HttpRequest(method, url, headers=headers))
    assert counted(reader, "carlink.cosmos.request_charge", container="vehicles", operation="replace") == 6.29
    assert counted(reader, "carlink.cosmos.request_charge", container="vehicles", operation="upsert") == 4.95


async def test_the_local_cosmos_server_charges_a_flat_unit_per_request(
    reader: InMemoryMetricReader, cosmos_store: CosmosDocumentStore
) -> None:
    # The real client against the local server, which answers x-ms-request-charge 1 whatever the request
    # costs: locally the metric counts requests by container and operation, not request units
    # (docs/operations.md "Metrics locally").
    await cosmos_store.upsert("vehicles", {"id": "car-ru", "vehicleId": "car-ru"})
    assert counted(reader, "carlink.cosmos.request_charge", container="vehicles", operation="upsert") == 1


async def test_agenda_pushes_count_the_twin_and_the_module_by_outcome(reader: InMemoryMetricReader) -> None:
    import dataclasses

    from shared.calendar.jobs import SyncJob
    from tests.calendar_support import VEHICLE

    box = GraphSandbox()
    async with serve_graph(box) as url:
        client = MsGraphClient.create(url, None, max_retries=0)
        try:
            world = World(box, client)
            world.settings = dataclasses.replace(world.settings, page_size=2)
            await world.link()
            t = world.clock.now
            box.add_event(USER, "stand-up", t + HOUR, t + 2 * HOUR)
            sync = world.sync()
            sync.module_id = "carlink"
            # WHEN a sync pushes the agenda to the car's twin and its Edge module, then to a car without the module
            await sync.run(SyncJob(USER, "test"))
            world.gateway.answers[VEHICLE] = (404, "ModuleNotFound")
            await sync._to_module(VEHICLE, {"events": []})
        finally:
            await client.close()
    # THEN each push is counted where it went, with its outcome
    assert counted(reader, "carlink.calendar.agenda_pushes", target="twin", outcome="pushed") == 1
    assert counted(reader, "carlink.calendar.agenda_pushes", target="module", outcome="pushed") == 1
    assert counted(reader, "carlink.calendar.agenda_pushes", target="module", outcome="device_not_found") == 1


async def test_a_reply_iot_hub_refuses_for_good_counts_as_undeliverable_with_its_reason(
    reader: InMemoryMetricReader,
) -> None:
    from tests.calendar_support import VEHICLE as CAR
    from tests.unit.test_requests_processor import fill_queue, request_from, run, vehicle

    box = GraphSandbox()
    async with serve_graph(box) as url:
        client = MsGraphClient.create(url, None, max_retries=0)
        try:
            world = World(box, client)
            # GIVEN a car whose cloud-to-device queue is full, and one that was deleted
            await vehicle(world)
            await fill_queue(world, "car-full")
            await world.gateway.delete_device(CAR)
            # WHEN both ask for something
            report = await run(world, request_from("car-full"), request_from(CAR))
        finally:
            await client.close()
    # THEN each reply that could not be delivered is counted with IoT Hub's reason
    assert report.undeliverable == 2
    assert counted(reader, "carlink.iothub.c2d_undeliverable", kind="reply", reason="queue_full") == 1
    assert counted(reader, "carlink.iothub.c2d_undeliverable", kind="reply", reason="device_not_found") == 1
