"""One car's messages followed by their trace ids through the whole local stack (issue 20, docs/tracing.md).

A VirtualCar on the real `azure-iot-device` SDK sends through the local IoT Hub (MQTT); its sends carry W3C
`traceparent` (simulator/car.py). The local function host runs the function code in this process, so the
in-memory exporter `captured_spans()` installs sees every span the app makes: the telemetry batch and the car's
ingestion, the Cosmos calls (azure-core's OpenTelemetry plugin), the car request, the IoT Hub call of its reply,
and the car receiving that reply with the trace context it carries back.

No single message both writes the vehicle document and is answered (telemetry writes it, requests are answered),
so the test follows one telemetry message to its vehicle document write and one request to its reply, each by
the trace id the car started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

pytest.importorskip("azure.iot.device", reason="azure-iot-device is not installed")

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devstack.demo_fleet import prepare_fleet
from devstack.iothub.hub import wait_connected
from devstack.stack import LocalStack, StackConfig, free_loopback_address
from shared.observability import tracing
from shared.observability.setup import captured_spans
from simulator.car import CarOptions, VirtualCar

CAR = "trace-car-1"
# The vehicle document is created or replaced (etag-conditional); the fold's side documents are upserted.
VEHICLE_WRITES = ("ContainerProxy.replace_item", "ContainerProxy.create_item")


@dataclass
class Traced:
    car: VirtualCar
    spans: InMemorySpanExporter
    http_url: str
    http: aiohttp.ClientSession

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def trace(self, trace_id: int) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.context is not None and s.context.trace_id == trace_id]

    async def until(self, found: Callable[[], Any], seconds: float, what: str) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = found()
            if value:
                return value
            await asyncio.sleep(0.2)
        names = sorted({s.name for s in self.finished()})
        pytest.fail(f"not within {seconds}s: {what}; spans seen: {names}")


@pytest.fixture(scope="module")
async def traced() -> AsyncIterator[Traced]:
    config = StackConfig([], use_maps_sandbox=False).with_free_ports(free_loopback_address())
    with captured_spans() as spans:
        async with LocalStack(config) as stack, aiohttp.ClientSession() as http:
            assert stack.tls is not None
            demo = await prepare_fleet(http, stack, [CAR], link_drivers=False)
            options = CarOptions(sample_seconds=0.5, samples_per_message=2, ask_for_meetings=False, trip_seconds=8.0)
            car = VirtualCar(0, demo.connection_strings[CAR], stack.tls.ca_pem, 5, options)
            task = asyncio.create_task(car.run(time.time() + 300))
            try:
                assert await wait_connected(stack.hub, [CAR], 30)
                await car.wait_awake()
                yield Traced(car, spans, stack.http_url, http)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def by_name(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def sends(traced: Traced, kind: str) -> list[ReadableSpan]:
    return [
        s
        for s in by_name(traced.finished(), tracing.CAR_SEND)
        if (s.attributes or {}).get(tracing.MESSAGE_TYPE) == kind
    ]


async def test_a_telemetry_message_is_followed_from_the_cars_send_to_its_vehicle_document_write(
    traced: Traced,
) -> None:
    # GIVEN the car's first telemetry message, sent in its own span
    send = (await traced.until(lambda: sends(traced, "telemetry"), 30, "a telemetry send"))[0]
    assert send.context is not None
    trace_id = send.context.trace_id

    # WHEN the stack ingests it THEN the car's ingestion span in the car's trace is a child of the send
    def vehicle_spans() -> list[ReadableSpan]:
        return [s for s in by_name(traced.trace(trace_id), tracing.INGEST_VEHICLE) if s.end_time is not None]

    vehicle = (await traced.until(vehicle_spans, 40, "the car's ingestion in the send's trace"))[0]
    assert parent_of(vehicle) == send.context.span_id
    assert (vehicle.attributes or {})[tracing.CAR_ID] == CAR
    # AND the vehicle document write is a Cosmos call in that trace, under the car's span
    spans = traced.trace(trace_id)
    writes = [s for s in spans if s.name in VEHICLE_WRITES]
    assert writes, sorted({s.name for s in spans})
    under_vehicle = {s.context.span_id for s in spans if s.context is not None and _under(s, vehicle, spans)}
    assert any(w.context is not None and w.context.span_id in under_vehicle for w in writes)
    # AND the telemetry batch that carried it links to the car's send
    batches = by_name(traced.finished(), tracing.INGEST_BATCH)
    linked = [b for b in batches if any(link.context.trace_id == trace_id for link in b.links)]
    assert linked
    size = (linked[0].attributes or {})[tracing.BATCH_SIZE]
    assert isinstance(size, int)
    assert size >= 1
    assert vehicle.links
    assert vehicle.links[0].context.span_id == linked[0].context.span_id


async def test_a_request_is_followed_from_the_cars_send_to_the_reply_the_car_receives(traced: Traced) -> None:
    # GIVEN a request such as the car makes WHEN it is answered
    reply = await traced.car.ask("consent.get", seconds=30)
    assert reply["status"] == "ok"
    request_id = reply["requestId"]
    send = sends(traced, "request")[-1]
    assert send.context is not None
    trace_id = send.context.trace_id

    # THEN the request's span continues the car's trace, names the car and the request id and the outcome
    def handled() -> list[ReadableSpan]:
        return by_name(traced.trace(trace_id), tracing.REQUEST)

    request = (await traced.until(handled, 20, "the request span in the car's trace"))[0]
    assert request.context is not None
    assert parent_of(request) == send.context.span_id
    batches = by_name(traced.finished(), tracing.REQUESTS_BATCH)
    assert [link.context.span_id for link in request.links] == [
        b.context.span_id for b in batches if any(link.context.trace_id == trace_id for link in b.links)
    ]  # the request links to the batch that carried it, which links to the car's send
    attributes = request.attributes or {}
    assert (attributes[tracing.CAR_ID], attributes[tracing.REQUEST_ID], attributes[tracing.OUTCOME]) == (
        CAR,
        request_id,
        "ok",
    )
    # AND what the request stored (its outcome record, for a redelivered request) is a Cosmos call under it
    trace = traced.trace(trace_id)
    stored = [s for s in trace if s.name.startswith("ContainerProxy.") and _under(s, request, trace)]
    assert stored, sorted({s.name for s in trace})
    # AND the reply is an IoT Hub call under it
    replies = [
        s for s in by_name(traced.trace(trace_id), "carlink.iothub.send_c2d") if parent_of(s) == request.context.span_id
    ]
    assert replies
    assert (replies[0].attributes or {})[tracing.CAR_ID] == CAR

    # AND the car receives the reply in the same trace: the reply carried the request span's context back
    request_span = request.context.span_id

    def received() -> list[ReadableSpan]:
        return [s for s in by_name(traced.trace(trace_id), tracing.CAR_RECEIVE) if parent_of(s) == request_span]

    await traced.until(received, 10, "the car's receipt of the reply in the request's trace")


def _under(span: ReadableSpan, ancestor: ReadableSpan, spans: list[ReadableSpan]) -> bool:
    """Whether `ancestor` is on `span`'s parent chain within `spans`."""
    ids = {s.context.span_id: s for s in spans if s.context is not None}
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        if ancestor.context is not None and current.parent.span_id == ancestor.context.span_id:
            return True
        current = ids.get(current.parent.span_id)
    return False


async def test_the_stack_is_ready_and_the_readiness_round_is_traced(traced: Traced) -> None:
    # GIVEN the whole local stack up WHEN the platform probes readiness (no token), with the app's own clients
    async with traced.http.get(f"{traced.http_url}/api/health/ready") as answer:
        body = await answer.json()
        assert (answer.status, body) == (
            200,
            {"status": "ready", "checks": {"cosmos": "ok", "iothub": "ok", "queues": "ok"}},
        )
    # THEN the round is a span naming each dependency's state
    rounds = by_name(traced.finished(), tracing.READINESS)
    assert rounds
    assert (rounds[-1].attributes or {})[f"{tracing.DEPENDENCY}.iothub"] == "ok"
