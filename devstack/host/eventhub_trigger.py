"""Event Hubs triggers: one reader per partition, batches up to `maxEventBatchSize`, checkpoint after each.

As in the Functions host, a partition's next batch starts only when the previous one finished (events of a
device stay in order), and the host checkpoints whether the function succeeded or not (after its retries):
poison messages are the function's job. Ref: https://learn.microsoft.com/azure/azure-functions/functions-bindings-event-hubs-trigger
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from devstack.eventhubs import EventHubsNamespace, StoredEvent
from devstack.host.bindings import FunctionSpec
from devstack.host.retry import parse_interval

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventHubsOptions:
    """`extensions.eventHubs` of host.json (the parts that change behaviour locally)."""

    max_batch_size: int = 100
    max_wait_seconds: float = 5.0

    @classmethod
    def from_host_json(cls, host: Mapping[str, Any]) -> EventHubsOptions:
        options = host.get("extensions", {}).get("eventHubs", {})
        return cls(
            max_batch_size=int(options.get("maxEventBatchSize", 100)),
            max_wait_seconds=parse_interval(str(options.get("maxWaitTime", "00:00:05"))),
        )


def to_function_event(event: StoredEvent) -> func.EventHubEvent:
    """The `func.EventHubEvent` the Python worker builds: body bytes, enqueued time, sequence number and
    the IoT Hub system properties in `iothub_metadata`."""
    return func.EventHubEvent(
        body=event.body,
        enqueued_time=event.enqueued_time.replace(tzinfo=None),  # the worker hands naive UTC datetimes
        partition_key=None,
        sequence_number=event.sequence_number,
        offset=str(event.sequence_number),
        iothub_metadata=dict(event.system_properties),
    )


class EventHubTrigger:
    def __init__(
        self, spec: FunctionSpec, namespace: EventHubsNamespace, options: EventHubsOptions, stats: Counter[str]
    ) -> None:
        self.spec = spec
        self.hub = namespace.hub(str(spec.trigger["eventHubName"]))
        self.options = options
        self.stats = stats
        self.many = str(spec.trigger.get("cardinality", "ONE")).upper() == "MANY"
        self.positions = [0] * len(self.hub.partitions)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._partition(index), name=f"{self.spec.name}[{index}]")
            for index in range(len(self.hub.partitions))
        ]

    def backlog(self) -> int:
        return sum(len(p.events) - pos for p, pos in zip(self.hub.partitions, self.positions, strict=True))

    async def _partition(self, index: int) -> None:
        while True:
            events = await self.hub.read(
                index, self.positions[index], self.options.max_batch_size, self.options.max_wait_seconds
            )
            if not events:
                continue
            batches = [events] if self.many else [[e] for e in events]
            for batch in batches:
                payload: Any = [to_function_event(e) for e in batch] if self.many else to_function_event(batch[0])
                try:
                    await self.spec.invoke(payload)
                    self.stats[f"{self.spec.name}:ok"] += 1
                except Exception:
                    self.stats[f"{self.spec.name}:failed"] += 1
                    log.exception(
                        "%s: batch of %d failed after retries; checkpointing past it", self.spec.name, len(batch)
                    )
                self.positions[index] += len(batch)  # checkpoint
