"""Configure OpenTelemetry once per process, lazily, for traces and metrics.

Which pipeline (first match):
- `APPLICATIONINSIGHTS_CONNECTION_STRING` set (Azure): the Azure Monitor OpenTelemetry distro
  (`configure_azure_monitor`): traces, metrics (customMetrics) and the Azure SDK's own spans (Cosmos) to
  Application Insights, authenticated with the app's managed identity when `APPLICATIONINSIGHTS_AUTHENTICATION_STRING`
  says `Authorization=AAD` (infra/app/function-app.bicep sets it). Logging stays with the Functions host, which
  already ships the worker's logs (`disable_logging`), so nothing is logged twice.
- `OTEL_TRACES_EXPORTER` = `console` / `otlp`, or `OTEL_EXPORTER_OTLP_ENDPOINT` set (the standard OpenTelemetry
  variables): an SDK TracerProvider and MeterProvider with that exporter; the meter reads through
  `shared.observability.metrics.local_reader()`.
- otherwise tracing stays off: `tracing.span()` costs a global read (the CPU benchmark runs this way).
Tests use `captured_spans()` (an in-memory exporter, tracing off again after the block).

Cold start: `function_app` imports this module and tracing.py, which need only the standard library; the SDK and
the distro are imported when configured. The Event Hubs triggers and the first client a process creates
(shared/per_loop.py) call `ensure_configured()`, which decides on the first call and is one boolean test afterwards.
The distro costs ~0.4 s to import and configure (bench/coldstart.py `telemetryReadyS`), so in Azure it runs on a
background thread started by the first invocation: that invocation is not held up, and its spans (before the
provider exists) are not recorded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Final

from shared.observability import tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

log = logging.getLogger(__name__)

CONNECTION_STRING: Final = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_STRING: Final = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
SERVICE_NAME: Final = "carlink-functions"
# The distro's instrumentations this app has no use for (it runs none of these frameworks in the worker).
_UNUSED_INSTRUMENTATIONS: Final = ("django", "flask", "psycopg2")

_lock = threading.RLock()  # ensure_configured holds it while configure_local takes it again
_decided = False
_mode = "off"  # off | azure-pending | azure | local


def ensure_configured(environ: Mapping[str, str] | None = None, *, background: bool = True) -> None:
    """Decide once per process; afterwards free. `background=False` configures Azure Monitor on this thread
    (the cold-start benchmark measures it that way)."""
    global _decided
    if _decided:
        return
    with _lock:
        if _decided:  # another thread decided meanwhile (mypy cannot see it)
            return  # type: ignore[unreachable,unused-ignore]
        _decided = True
        env = os.environ if environ is None else environ
        if env.get(CONNECTION_STRING):
            _start_azure(dict(env), background)
        elif _local_exporter_wanted(env):
            configure_local(environ=env)


def mode() -> str:
    """Which pipeline is active: off, azure-pending (the distro still loading), azure or local."""
    return _mode


def _local_exporter_wanted(env: Mapping[str, str]) -> bool:
    wanted = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    return wanted in ("console", "otlp") or bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _start_azure(env: dict[str, str], background: bool) -> None:
    global _mode
    _mode = "azure-pending"
    if not background:
        _configure_azure(env)
        return
    threading.Thread(target=_configure_azure, args=(env,), name="configure-azure-monitor", daemon=True).start()


def _configure_azure(env: Mapping[str, str]) -> None:
    """The distro, then the tracer; a failure leaves tracing off (logged), never fails an invocation."""
    global _mode
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
        from opentelemetry import trace

        configure_azure_monitor(
            connection_string=env[CONNECTION_STRING],
            credential=_credential(env.get(AUTHENTICATION_STRING, "")),
            disable_logging=True,
            enable_live_metrics=False,
            instrumentation_options={name: {"enabled": False} for name in _UNUSED_INSTRUMENTATIONS},
            resource=_resource(),
        )
        tracing.activate(trace.get_tracer(tracing.TRACER_NAME))
        _mode = "azure"
    except Exception:  # telemetry must never take the app down
        _mode = "off"
        log.exception("Azure Monitor OpenTelemetry not configured; traces and metrics are off")


def _credential(authentication: str) -> object | None:
    """`ClientId=<id>;Authorization=AAD` (the Functions host's own setting) → the user-assigned identity."""
    fields = dict(part.split("=", 1) for part in authentication.split(";") if "=" in part)
    if fields.get("Authorization", "").upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    client_id = fields.get("ClientId")
    return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()


def _resource() -> object:
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": SERVICE_NAME})


def configure_local(
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """SDK providers for this process: the given span exporter (tests: in-memory, exported as each span ends),
    else console or OTLP from the environment; the meter reads through `metrics.local_reader()` unless given a
    reader. The global providers can be set once per process: a second call keeps them and only adds its span
    exporter, so several tests may each bring one."""
    global _decided, _mode
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    env = os.environ if environ is None else environ
    with _lock:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider(resource=_resource())  # type: ignore[arg-type]
            trace.set_tracer_provider(provider)
            if not isinstance(metrics.get_meter_provider(), MeterProvider):
                from shared.observability.metrics import exporting_readers, local_reader

                readers = [metric_reader or local_reader(), *exporting_readers(env)]
                metrics.set_meter_provider(MeterProvider(resource=_resource(), metric_readers=readers))  # type: ignore[arg-type]
            if span_exporter is None:
                exporter = _exporter_from(env)
                if exporter is not None:
                    provider.add_span_processor(BatchSpanProcessor(exporter))
        if span_exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        _trace_azure_sdk()
        tracing.activate(provider.get_tracer(tracing.TRACER_NAME))
        _decided, _mode = True, "local"


def _exporter_from(env: Mapping[str, str]) -> SpanExporter | None:
    wanted = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if wanted == "otlp" or (not wanted and env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        try:  # a development requirement (the local stack's), not the app's: Azure exports with the distro
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError:
            log.warning("OTLP exporter not installed (opentelemetry-exporter-otlp-proto-http); console")
        else:
            otlp: SpanExporter = OTLPSpanExporter()
            return otlp
    if wanted in ("console", "otlp"):
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    return None


def _trace_azure_sdk() -> None:
    """Cosmos (and every other Azure SDK client) traces its calls through azure-core's OpenTelemetry plugin,
    as the distro sets up in Azure."""
    try:
        from azure.core.settings import settings

        settings.tracing_implementation = "opentelemetry"
    except Exception:  # the plugin is missing: no Cosmos spans, everything else traced
        log.warning("azure-core OpenTelemetry tracing plugin not available; Cosmos calls untraced")


_captured: InMemorySpanExporter | None = None


@contextlib.contextmanager
def captured_spans() -> Iterator[InMemorySpanExporter]:
    """Tests: tracing on for the block, every finished span in the exporter it yields; off again afterwards
    (the process's providers stay, as OpenTelemetry allows them to be set once, but nothing more is recorded),
    so the rest of a test run pays nothing for it.

        with captured_spans() as spans:
            ...
        names = [s.name for s in spans.get_finished_spans()]
    """
    global _captured, _decided, _mode
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    if _captured is None:
        _captured = InMemorySpanExporter()
        configure_local(span_exporter=_captured, environ={})
    else:
        configure_local(environ={})  # the providers exist: the tracer and the Azure SDK's tracing on again
    _captured.clear()
    try:
        yield _captured
    finally:
        tracing.activate(None)
        _untrace_azure_sdk()
        _decided, _mode = False, "off"


def _untrace_azure_sdk() -> None:
    from azure.core.settings import settings

    settings.tracing_implementation = None
