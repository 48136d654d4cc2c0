"""What the Functions host passes beside an Event Hubs batch (the trigger metadata), read in one place.

The host gives each batch `PropertiesArray` (every event's application properties; `Properties` for a single
event) and `PartitionContext` (hub, consumer group, partition). Tracing, dead-lettering of unrouted messages and
ingestion read them; this module imports nothing of theirs, so it sits below all of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any


def application_properties(events: Sequence[Any]) -> list[Mapping[str, Any] | None]:
    """Each event's application properties, or None where the metadata does not say."""
    metadata = getattr(events[0], "metadata", None) if events else None
    if not isinstance(metadata, Mapping) or not metadata:
        return [None] * len(events)
    batch = metadata.get("PropertiesArray")
    if isinstance(batch, list) and len(batch) == len(events):
        return [p if isinstance(p, Mapping) else None for p in batch]
    single = metadata.get("Properties")
    if len(events) == 1 and isinstance(single, Mapping):
        return [single]
    return [None] * len(events)


def partition_of(events: Sequence[Any]) -> str | None:
    """The Event Hubs partition of a batch, from the trigger metadata's `PartitionContext` (the Functions host
    passes it with every invocation, as an object or its JSON text; the local host too); None when it lacks it."""
    metadata = getattr(events[0], "metadata", None) if events else None
    context = metadata.get("PartitionContext") if isinstance(metadata, Mapping) else None
    if isinstance(context, str):
        try:
            context = json.loads(context)
        except ValueError:
            return None
    partition = context.get("PartitionId") if isinstance(context, Mapping) else None
    return str(partition) if partition is not None else None
