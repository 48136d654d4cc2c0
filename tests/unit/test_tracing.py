"""Traces: W3C trace context from a car's message properties, spans of a telemetry batch and of IoT Hub and Graph
calls, and nothing at all while tracing is off (shared/observability, docs/tracing.md)."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys

import azure.functions as func
from azure.functions.meta import Datum
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bench.coldstart import DUMMY_CONNECTION_STRING
from shared.containers import partition_keys
from shared.device_messages import messages_from_events
from shared.graph.base import GraphClient
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.observability import tracing
from shared.observability.setup import captured_spans
from shared.observability.traced import GRAPH_CALLS, IOTHUB_CALLS, inner_of, traced
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import drive

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CAR_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CAR_SPAN}-01"

hex_digits = st.text(alphabet="0123456789abcdef", min_size=1, max_size=1)


def batch(*messages: tuple[str, bytes, dict[str, str]]) -> list[func.EventHubEvent]:
    """Events as the host hands over a batch routed by IoT Hub: the application properties in PropertiesArray."""
    metadata = {
        "PropertiesArray": Datum(json.dumps([p for _, _, p in messages]), "json"),
        "PartitionContext": Datum(json.dumps({"PartitionId": "3"}), "json"),
    }
    return [
        func.EventHubEvent(
            body=body,
            trigger_metadata=metadata,
            sequence_number=n,
            iothub_metadata={"connection-device-id": car, "enqueuedtime": "2026-11-21T08:00:00.000Z"},
        )
        for n, (car, body, _) in enumerate(messages)
    ]


@given(
    trace_id=st.text("0123456789abcdef", min_size=32, max_size=32),
    span_id=st.text("0123456789abcdef", min_size=16, max_size=16),
    flags=st.sampled_from(["00", "01"]),
)
def test_a_valid_traceparent_is_taken_as_sent(trace_id: str, span_id: str, flags: str) -> None:
    value = f"00-{trace_id}-{span_id}-{flags}"
    expected = None if set(trace_id) == {"0"} or set(span_id) == {"0"} else value
    assert tracing.traceparent_of({"traceparent": value}) == expected


@given(st.text(alphabet=string.printable, max_size=80) | st.from_regex(r"[0-9a-fA-F-]{50,60}", fullmatch=True))
def test_whatever_a_car_sends_is_either_ignored_or_a_context_opentelemetry_reads_the_same(value: str) -> None:
    # GIVEN any property value a car may send WHEN it is read THEN it is refused, or the SDK's own propagator
    # reads the same trace and span ids from it (never a context the SDK would read differently)
    taken = tracing.traceparent_of({"traceparent": value})
    if taken is None:
        return
    context = TraceContextTextMapPropagator().extract({"traceparent": taken})
    from opentelemetry.trace import get_current_span

    span_context = get_current_span(context).get_span_context()
    assert span_context.is_valid
    assert f"{span_context.trace_id:032x}" == taken[3:35]
    assert f"{span_context.span_id:016x}" == taken[36:52]


def test_tracestate_is_kept_only_beside_a_valid_traceparent_and_bounded() -> None:
    assert tracing.carrier_of({"tracestate": "a=1"}) is None
    assert tracing.carrier_of({"traceparent": TRACEPARENT, "tracestate": "a=1"}) == {
        "traceparent": TRACEPARENT,
        "tracestate": "a=1",
    }
    assert tracing.carrier_of({"traceparent": TRACEPARENT, "tracestate": "x" * 600}) == {"traceparent": TRACEPARENT}


async def test_tracing_off_costs_no_span_and_reads_no_properties() -> None:
    # GIVEN tracing not configured WHEN a batch with a traceparent is turned into messages
    assert not tracing.enabled()
    messages = messages_from_events(batch(("car-1", drive(1, 1, speed=1.0), {"traceparent": TRACEPARENT})))
    # THEN the property is not even read, and a span is the one shared do-nothing context
    assert messages[0].trace is None
    assert tracing.span(tracing.REQUEST) is tracing.span(tracing.INGEST_BATCH)
    with tracing.span(tracing.REQUEST) as span:
        assert span is None


async def test_a_cars_messages_are_ingested_in_the_cars_trace_and_the_batch_links_to_it() -> None:
    store, letters = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    ingestor = TelemetryIngestor(store, letters)
    events = batch(
        ("car-1", drive(1, 1, speed=10.0), {"type": "telemetry", "traceparent": TRACEPARENT}),
        ("car-2", drive(1, 1, speed=20.0), {"type": "telemetry"}),
    )
    # WHEN the trigger's batch span wraps the ingestion of a batch where one car sent trace context
    with captured_spans() as exporter, tracing.batch_span(tracing.INGEST_BATCH, events):
        report = await ingestor.ingest(messages_from_events(events))
    assert report.accepted == 2
    spans = {(s.name, (s.attributes or {}).get(tracing.CAR_ID)): s for s in exporter.get_finished_spans()}
    batch_span = spans[(tracing.INGEST_BATCH, None)]
    traced_car = spans[(tracing.INGEST_VEHICLE, "car-1")]
    # THEN the batch span names its size and partition and links to the car's context
    assert batch_span.kind is SpanKind.CONSUMER
    assert (batch_span.attributes or {})[tracing.BATCH_SIZE] == 2
    assert (batch_span.attributes or {})[tracing.PARTITION] == "3"
    assert [f"{link.context.trace_id:032x}" for link in batch_span.links] == [TRACE_ID]
    # AND the car's span continues the car's trace (its parent is the car's send) and links back to the batch
    assert f"{traced_car.context.trace_id:032x}" == TRACE_ID
    assert traced_car.parent is not None
    assert f"{traced_car.parent.span_id:016x}" == CAR_SPAN
    assert [link.context.span_id for link in traced_car.links] == [batch_span.context.span_id]
    # AND a car that sent no context costs no span of its own (its store calls are traced under the batch)
    assert (tracing.INGEST_VEHICLE, "car-2") not in spans
    assert not tracing.enabled()  # off again after the block


async def test_iothub_calls_are_spans_with_the_car_and_graph_calls_never_name_the_user() -> None:
    memory = MemoryIoTHubGateway()
    gateway = traced(memory, tracing.IOTHUB, IOTHUB_CALLS, car_argument=True)
    assert inner_of(gateway) is memory
    await memory.create_device("car-7")

    class Graph(GraphClient):  # only send_mail is called; the rest is not this test's business
        async def calendar_delta(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            raise NotImplementedError

        create_or_get_meeting = create_subscription = renew_subscription = calendar_delta  # type: ignore[assignment]
        reauthorize_subscription = delete_subscription = delete_meeting = calendar_delta  # type: ignore[assignment]

        async def send_mail(self, user_id: str, to: str, subject: str, text: str) -> None:
            return None

    graph = traced(Graph(), tracing.GRAPH, GRAPH_CALLS)
    with captured_spans() as exporter:
        with tracing.span(tracing.REQUEST) as request:
            assert request is not None
            properties = tracing.inject({"type": "response"})
            await gateway.send_c2d("car-7", b"{}", properties)
        await graph.send_mail("user-1", "someone@example.com", "subject", "text")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    send = spans["carlink.iothub.send_c2d"]
    assert (send.attributes or {})[tracing.CAR_ID] == "car-7"
    assert send.kind is SpanKind.CLIENT
    assert send.parent is not None
    assert send.parent.span_id == spans[tracing.REQUEST].context.span_id
    # the reply carries the request's trace context to the car
    assert memory.sent[0].properties["traceparent"].split("-")[1] == f"{send.context.trace_id:032x}"
    mail = spans["carlink.graph.send_mail"]
    assert "user-1" not in repr(dict(mail.attributes or {}))


def test_in_azure_the_distro_is_configured_off_the_first_invocations_path() -> None:
    # GIVEN a fresh process with Application Insights configured (a dummy ingestion endpoint nothing listens on)
    # WHEN the first invocation asks for telemetry THEN it returns at once with the distro still loading, and
    # tracing comes on when the background configuration finished (a process of its own: providers are global)
    probe = """
import time
from shared.observability import setup, tracing
setup.ensure_configured()
print(setup.mode(), tracing.enabled())
deadline = time.monotonic() + 30
while setup.mode() == "azure-pending" and time.monotonic() < deadline:
    time.sleep(0.05)
with tracing.span(tracing.REQUEST) as span:
    print(setup.mode(), tracing.enabled(), span is not None and span.get_span_context().is_valid)
from azure.core.settings import settings
print(settings.tracing_implementation() is not None)
"""
    environ = {**os.environ, "APPLICATIONINSIGHTS_CONNECTION_STRING": DUMMY_CONNECTION_STRING}
    environ.pop("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", None)
    done = subprocess.run([sys.executable, "-c", probe], env=environ, capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:3] == ["azure-pending False", "azure True True", "True"]


def test_without_settings_telemetry_stays_off() -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    probe = "from shared.observability import setup, tracing; setup.ensure_configured(); print(setup.mode(), tracing.enabled())"
    done = subprocess.run([sys.executable, "-c", probe], env=environ, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "off False"
