"""Telemetry ingestion: contract v1 decoding, VSS validation, vehicle state, trips, alerts and history."""
