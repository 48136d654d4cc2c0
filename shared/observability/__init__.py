"""Observability: OpenTelemetry traces (tracing.py) and metrics (metrics.py, metrics.json), configured lazily
and once per process by setup.py. Nothing heavy is imported here."""
