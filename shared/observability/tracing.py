"""Traces: the tracer, every span and attribute name, and W3C trace context in IoT Hub message properties.

One place for names, so code, docs/tracing.md and the end-to-end test agree. Nothing heavy is imported here:
until `shared.observability.setup` activates a tracer, `span()` hands back one shared `nullcontext` and the hot
path pays a global read and a call (bench/cpu.py measures it), and the OpenTelemetry API is never imported.

A car may send W3C trace context (`traceparent`, optionally `tracestate`) as application properties of any
device-to-cloud message (docs/messages.md "Trace context"), as IoT Hub distributed tracing does. The backend
continues that trace: the car's vehicle document write and a request's reply are in the car's trace, and the
reply carries the context back in its own properties.

Privacy (docs/privacy.md "Logs"): spans carry ids and counts only, as the logs do: the car id, the request id,
the batch size and partition; never a user id, a position, a calendar subject, a body or a property value other
than the trace context itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Final

from shared.trigger_metadata import application_properties, partition_of

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Link, Span, SpanKind, Tracer


TRACER_NAME: Final = "carlink"

# --- span names (docs/tracing.md lists each, with where it starts and what it holds) --------------------------
CAR_SEND: Final = "carlink.car.send"  # the simulator: a car sends a device-to-cloud message
CAR_RECEIVE: Final = "carlink.car.receive"  # the simulator: a car receives the reply to its request
INGEST_BATCH: Final = "carlink.ingest.batch"  # one Event Hubs batch of telemetry; links to each car's context
INGEST_VEHICLE: Final = "carlink.ingest.vehicle"  # one car's messages of a batch; child of the car's context
REQUESTS_BATCH: Final = "carlink.requests.batch"  # one Event Hubs batch of car requests; links to each car's
REQUEST: Final = "carlink.request"  # one car request; child of the car's context
REQUEST_REPLY: Final = "carlink.request.reply"  # the reply sent back as a cloud-to-device message
IOTHUB: Final = "carlink.iothub."  # + the gateway call: send_c2d, patch_desired, invoke_method, ...
GRAPH: Final = "carlink.graph."  # + the Graph call: calendar_delta, online_meeting, send_mail, ...
READINESS: Final = "carlink.health.ready"  # the readiness probe's checks
# Cosmos calls are traced by the Azure SDK itself (azure-core's OpenTelemetry plugin, switched on in setup):
# spans named after the SDK method, e.g. `ContainerProxy.replace_item`, with the HTTP call under them.
COSMOS_PREFIX: Final = "ContainerProxy."

# --- attribute names -------------------------------------------------------------------------------------------
CAR_ID: Final = "carlink.car.id"
REQUEST_ID: Final = "carlink.request.id"
REQUEST_ACTION: Final = "carlink.request.action"
BATCH_SIZE: Final = "messaging.batch.message_count"  # OpenTelemetry messaging semantic conventions
PARTITION: Final = "messaging.destination.partition.id"
MESSAGES: Final = "carlink.messages"  # a car's messages in this span
MESSAGE_TYPE: Final = "carlink.message.type"  # the message's `type` property: telemetry, request, response, ...
OUTCOME: Final = "carlink.outcome"  # e.g. the reply's status, a delivery's outcome
DEPENDENCY: Final = "carlink.dependency"  # readiness: which dependency a check reached

# --- W3C trace context in message properties --------------------------------------------------------------------
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
MAX_TRACESTATE: Final = 512  # W3C: 32 members of up to 256 characters; 512 is what vendors must propagate
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16

_NOTHING: Final[AbstractContextManager[None]] = nullcontext()  # reusable: entering it does nothing
_tracer: Tracer | None = None


def activate(tracer: Tracer | None) -> None:
    """Called by shared.observability.setup once a provider exists (None switches tracing off again)."""
    global _tracer
    _tracer = tracer


def enabled() -> bool:
    return _tracer is not None


def span(
    name: str,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    *,
    parent: Context | None = None,
    links: Sequence[Link] | None = None,
    kind: SpanKind | None = None,
) -> AbstractContextManager[Span | None]:
    """A span made current for the `with` block; nothing at all when tracing is not configured.

    with tracing.span(tracing.REQUEST, {tracing.CAR_ID: car}, parent=tracing.context_of(props)):
        ...
    """
    tracer = _tracer
    if tracer is None:
        return _NOTHING
    if kind is None:
        return tracer.start_as_current_span(name, context=parent, attributes=attributes, links=links)
    return tracer.start_as_current_span(name, context=parent, kind=kind, attributes=attributes, links=links)


def traceparent_of(properties: Mapping[str, Any] | None) -> str | None:
    """The message's `traceparent` if it is a valid W3C version-00-compatible value, else None (a car's bad
    value is ignored: the message is processed untraced, never refused for it)."""
    if not properties:
        return None
    value = properties.get(TRACEPARENT)
    if not isinstance(value, str) or len(value) < 55:
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, span_id, _ = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if version == "00" and len(value) != 55:
        return None  # version 00 has exactly four fields; later versions may append more after a '-'
    if len(value) > 55 and value[55] != "-":
        return None
    return value[:55]


def carrier_of(properties: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The trace context fields of a message's application properties, validated (None without a valid
    `traceparent`); `tracestate` is kept only when short enough to be a real one."""
    traceparent = traceparent_of(properties)
    if traceparent is None or properties is None:
        return None
    carrier = {TRACEPARENT: traceparent}
    state = properties.get(TRACESTATE)
    if isinstance(state, str) and 0 < len(state) <= MAX_TRACESTATE and state.isascii():
        carrier[TRACESTATE] = state
    return carrier


def context_of(carrier: Mapping[str, str] | None) -> Context | None:
    """The remote parent a carrier names (None without one, or when tracing is off)."""
    if carrier is None or _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier)


def links_to(carriers: Iterable[Mapping[str, str] | None], *, current: bool = False) -> list[Link]:
    """Links to the distinct remote contexts of a batch's messages (a batch span's many parents), and with
    `current` to the current span first (a car's span, parented by the car, links back to its batch)."""
    if _tracer is None:
        return []
    from opentelemetry.trace import Link, get_current_span

    links: list[Link] = []
    if current and get_current_span().get_span_context().is_valid:
        links.append(Link(get_current_span().get_span_context()))
    seen: set[str] = set()
    for carrier in carriers:
        if carrier is None or carrier[TRACEPARENT] in seen:
            continue
        seen.add(carrier[TRACEPARENT])
        context = context_of(carrier)
        if context is not None:
            links.append(Link(get_current_span(context).get_span_context()))
    return links


def inject(properties: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Add the current span's `traceparent` (and `tracestate`) to outgoing message properties, so the car sees
    its reply in its own trace; unchanged when tracing is off or no span is current."""
    if _tracer is None:
        return properties
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    TraceContextTextMapPropagator().inject(properties)
    return properties


def current_traceparent() -> str | None:
    """The current span's context as a `traceparent` value (the simulator's send)."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get(TRACEPARENT)


def set_attribute(key: str, value: str | int | float | bool) -> None:
    """Set an attribute on the current span (known only once the span runs, e.g. a decoded request id)."""
    if _tracer is None:
        return
    from opentelemetry.trace import get_current_span

    get_current_span().set_attribute(key, value)


def batch_attributes(events: Sequence[Any]) -> dict[str, str | int | float | bool]:
    attributes: dict[str, str | int | float | bool] = {BATCH_SIZE: len(events)}
    partition = partition_of(events)
    if partition is not None:
        attributes[PARTITION] = partition
    return attributes


def batch_span(name: str, events: Sequence[Any]) -> AbstractContextManager[Span | None]:
    """The span of one Event Hubs batch: its size and partition, and a link to each car's context in it (a
    batch has many parents; each car's own spans continue the car's trace and link back here)."""
    if _tracer is None:
        return _NOTHING
    carriers = [carrier_of(properties) for properties in application_properties(events)]
    return span(name, batch_attributes(events), links=links_to(carriers), kind=_consumer())


def _consumer() -> SpanKind:
    from opentelemetry.trace import SpanKind

    return SpanKind.CONSUMER
