"""Locally, traces and metrics reach an OpenTelemetry collector over OTLP/HTTP when the standard variables say so.

The collector here is a real HTTP server that decodes what arrives with the OTLP protobuf messages; the app runs
in a subprocess (the global providers can be set once per process) configured only by environment variables.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

PROBE = """
from opentelemetry import metrics, trace
from shared.observability import metrics as carlink_metrics, setup, tracing
setup.ensure_configured()
with tracing.span(tracing.REQUEST, {tracing.CAR_ID: "car-otlp"}):
    pass
carlink_metrics.add("carlink.ingest.batches", 1, {"function": "ingest_telemetry", "partition": "0", "outcome": "committed"})
trace.get_tracer_provider().force_flush()
metrics.get_meter_provider().force_flush()
print(setup.mode())
"""


class Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[tuple[str, str, bytes]] = []


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_spans_and_metrics_reach_an_otlp_collector(collector: Collector) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    environ |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_port}",
        "OTEL_METRICS_EXPORTER": "otlp",
    }
    done = subprocess.run([sys.executable, "-c", PROBE], env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "local"

    traces = [body for path, kind, body in collector.received if path == "/v1/traces"]
    assert traces, [path for path, _, _ in collector.received]
    spans = [
        span
        for body in traces
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert [span.name for span in spans] == ["carlink.request"]
    assert {a.key: a.value.string_value for a in spans[0].attributes}["carlink.car.id"] == "car-otlp"

    exported = [body for path, _, body in collector.received if path == "/v1/metrics"]
    names = {
        metric.name
        for body in exported
        for resource in ExportMetricsServiceRequest.FromString(body).resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert "carlink.ingest.batches" in names
    assert all(kind == "application/x-protobuf" for path, kind, _ in collector.received)
