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
AUDIT: Final = "auditEntries"
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
    """Container name → partition key path, e.g. {"vehicles": "/vehicleId", ...}: the top level of a hierarchical
    key, which is what the stores take as a document's partition key (a prefix of the full key there)."""
    return {c["name"]: c["partitionKey"] for c in definition()["containers"]}


@cache
def hierarchical_keys() -> dict[str, tuple[str, ...]]:
    """Containers whose partition key has more than one level → their paths below the top, e.g. ("/id",)."""
    return {c["name"]: tuple(c["subpartitionKeys"]) for c in definition()["containers"] if c.get("subpartitionKeys")}


def partition_paths(container: str) -> tuple[str, ...]:
    """Every level of a container's partition key, top first: one path, or up to three (Cosmos DB MultiHash)."""
    for c in definition()["containers"]:
        if c["name"] == container:
            return (c["partitionKey"], *c.get("subpartitionKeys", ()))
    raise KeyError(container)
