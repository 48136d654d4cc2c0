"""Cosmos DB containers: names and partition keys, read from the one definition in cosmos_containers.json.

infra/ creates the same containers from the same file, and the local stack bootstraps them from it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, Final

import orjson

DEFINITION_PATH: Final = Path(__file__).with_name("cosmos_containers.json")

VEHICLES: Final = "vehicles"
TELEMETRY: Final = "telemetry"
TRIPS: Final = "trips"
ALERTS: Final = "alerts"
CALENDARS: Final = "calendars"
MEETINGS: Final = "meetings"
TENANCY: Final = "tenancy"
MEMBERSHIPS: Final = "memberships"
AUDIT: Final = "audit"
CONSENTS: Final = "consents"
GEOFENCE_EVENTS: Final = "geofenceEvents"
COMMANDS: Final = "commands"
SIGNINS: Final = "signins"
TRAVEL: Final = "travel"
GAPS: Final = "gaps"
REQUESTS: Final = "requests"


@cache
def definition() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(DEFINITION_PATH.read_bytes())
    return data


def partition_keys() -> dict[str, str]:
    """Container name → partition key path, e.g. {"vehicles": "/vehicleId", ...}."""
    return {c["name"]: c["partitionKey"] for c in definition()["containers"]}
