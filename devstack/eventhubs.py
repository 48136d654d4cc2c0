"""In-memory Event Hubs: what IoT Hub routes into and the Event Hubs triggers read from.

Each hub has a fixed number of partitions; IoT Hub picks a device's partition from its id (so one device's
messages stay in order) and every partition numbers its events from 0. Events are kept for the life of
the stack (retention is not simulated); a consumer keeps its own position per partition.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from shared.observability.backlog import PartitionEnd, PartitionPositions

DEFAULT_PARTITIONS: Final = 4
LOCAL_NAMESPACE: Final = "localhost"  # the FullyQualifiedNamespace the local triggers and checkpoints name


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as Event Hubs stores it: body, properties, and the system properties IoT Hub stamped."""

    body: bytes
    partition: int
    sequence_number: int
    enqueued_time: dt.datetime
    properties: Mapping[str, str]
    system_properties: Mapping[str, str]  # `iothub-*` names with the prefix removed, as the host exposes them


@dataclass
class _Partition:
    events: list[StoredEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class EventHub:
    def __init__(self, name: str, partitions: int = DEFAULT_PARTITIONS) -> None:
        self.name = name
        self.partitions = [_Partition() for _ in range(partitions)]

    def partition_for(self, key: str) -> int:
        return zlib.crc32(key.encode("utf-8")) % len(self.partitions)

    def append(
        self,
        partition_key: str,
        body: bytes,
        properties: Mapping[str, str],
        system_properties: Mapping[str, str],
        enqueued_time: dt.datetime,
    ) -> StoredEvent:
        index = self.partition_for(partition_key)
        part = self.partitions[index]
        event = StoredEvent(body, index, len(part.events), enqueued_time, dict(properties), dict(system_properties))
        part.events.append(event)
        part.changed.set()
        return event

    async def read(self, partition: int, position: int, max_count: int, max_wait: float) -> list[StoredEvent]:
        """Events from `position` on, at most `max_count`; waits up to `max_wait` s for the first one."""
        part = self.partitions[partition]
        if position >= len(part.events):
            part.changed.clear()
            try:
                await asyncio.wait_for(part.changed.wait(), max_wait)
            except TimeoutError:
                return []
        return part.events[position : position + max_count]

    def __len__(self) -> int:
        return sum(len(p.events) for p in self.partitions)


class EventHubsNamespace:
    """Hubs created on first use, as routes and triggers name them."""

    def __init__(self, partitions: int = DEFAULT_PARTITIONS) -> None:
        self._partitions = partitions
        self.hubs: dict[str, EventHub] = {}

    def hub(self, name: str) -> EventHub:
        found = self.hubs.get(name)
        if found is None:
            found = self.hubs[name] = EventHub(name, self._partitions)
        return found


class LocalPartitionPositions(PartitionPositions):
    """The in-memory hubs' partitions for the backlog timer: each numbers its events from 0 and keeps them all."""

    def __init__(self, hubs: EventHubsNamespace, namespace: str = LOCAL_NAMESPACE) -> None:
        self.namespace = namespace
        self._hubs = hubs

    async def partitions(self, hub: str) -> list[PartitionEnd]:
        parts = self._hubs.hub(hub).partitions
        return [PartitionEnd(str(i), 0, len(p.events) - 1, not p.events) for i, p in enumerate(parts)]
