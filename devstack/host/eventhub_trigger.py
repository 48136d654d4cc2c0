"""Event Hubs triggers: one reader per partition, batches up to `maxEventBatchSize`, checkpoint after each.

As in the Functions host, a partition's next batch starts only when the previous one finished (events of a
device stay in order), and the host checkpoints whether the function succeeded or not (after its retries):
poison messages are the function's job. With an infinite retry policy (`max_retry_count -1`) a batch that
keeps failing is retried forever and its partition does not move, exactly as in Azure; such a partition is
logged as stalled after STALL_AFTER_ATTEMPTS attempts and listed by `stalled()`, so a test or the demo can fail
on it instead of waiting. Ref: https://learn.microsoft.com/azure/azure-functions/functions-bindings-event-hubs-trigger
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import azure.functions as func
import orjson
from azure.functions.meta import Datum

from devstack.eventhubs import LOCAL_NAMESPACE, EventHubsNamespace, LocalPartitionPositions, StoredEvent
from devstack.host.bindings import FunctionSpec
from devstack.host.checkpoints import BlobCheckpointWriter
from devstack.host.retry import RetryTiming, parse_interval

log = logging.getLogger(__name__)

# A batch that failed this many times in a row makes its partition "stalled" (logged again every as many more).
STALL_AFTER_ATTEMPTS: Final = 5
ERROR_TEXT_LIMIT: Final = 300


@dataclass(frozen=True)
class Stall:
    """A partition whose current batch keeps failing: nothing after `sequence_number` is processed meanwhile."""

    function: str
    partition: int
    attempts: int
    last_error: str
    sequence_number: int  # of the first event of the failing batch


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


def trigger_metadata(
    events: Sequence[StoredEvent], many: bool, hub: str = "", consumer_group: str = "$Default"
) -> dict[str, Datum]:
    """The trigger metadata the worker shares among a batch's events (`event.metadata`): the application
    properties, per event in `PropertiesArray` for cardinality MANY, in `Properties` for ONE; and, as the
    Functions host passes with every invocation, the `PartitionContext` (no last-enqueued-event properties: the
    host does not serialise them for out-of-process workers)."""
    context = {
        "FullyQualifiedNamespace": LOCAL_NAMESPACE,
        "EventHubName": hub,
        "ConsumerGroup": consumer_group,
        "PartitionId": str(events[0].partition),
        "IsCheckpointingAfterInvocation": True,
    }
    partition = {"PartitionContext": Datum(orjson.dumps(context).decode(), "json")}
    if many:
        return {"PropertiesArray": Datum(orjson.dumps([dict(e.properties) for e in events]).decode(), "json")} | (
            partition
        )
    return {"Properties": Datum(orjson.dumps(dict(events[0].properties)).decode(), "json")} | partition


def to_function_event(event: StoredEvent, metadata: Mapping[str, Datum] | None = None) -> func.EventHubEvent:
    """The `func.EventHubEvent` the Python worker builds: body bytes, enqueued time, sequence number, the IoT Hub
    system properties in `iothub_metadata` and the batch's trigger metadata in `metadata`."""
    return func.EventHubEvent(
        body=event.body,
        trigger_metadata=metadata,
        enqueued_time=event.enqueued_time.replace(tzinfo=None),  # the worker hands naive UTC datetimes
        partition_key=None,
        sequence_number=event.sequence_number,
        offset=str(event.sequence_number),
        iothub_metadata=dict(event.system_properties),
    )


class EventHubTrigger:
    def __init__(
        self,
        spec: FunctionSpec,
        namespace: EventHubsNamespace,
        options: EventHubsOptions,
        stats: Counter[str],
        timing: RetryTiming | None = None,
        stall_after: int = STALL_AFTER_ATTEMPTS,
        checkpoints: BlobCheckpointWriter | None = None,
    ) -> None:
        self.spec = spec
        self.namespace = namespace
        self.hub = namespace.hub(str(spec.trigger["eventHubName"]))
        self.options = options
        self.stats = stats
        self.timing = timing or RetryTiming()
        self.stall_after = max(1, stall_after)
        self.many = str(spec.trigger.get("cardinality", "ONE")).upper() == "MANY"
        self.consumer_group = str(spec.trigger.get("consumerGroup") or "$Default")
        self.positions = [0] * len(self.hub.partitions)
        self.checkpoints = checkpoints
        self._failing: dict[int, Stall] = {}  # partition → its current batch's failures (absent = not failing)
        self._consuming = asyncio.Event()
        self._consuming.set()

    def tasks(self) -> list[asyncio.Task[None]]:
        # the backlog timer of this process reads these hubs instead of Event Hubs (shared/observability/backlog.py)
        from shared.observability.backlog import use_local_positions

        use_local_positions(LocalPartitionPositions(self.namespace))
        tasks = [
            asyncio.create_task(self._partition(index), name=f"{self.spec.name}[{index}]")
            for index in range(len(self.hub.partitions))
        ]
        if self.checkpoints is not None:
            tasks.append(asyncio.create_task(self.checkpoints.run(), name=f"{self.spec.name}[checkpoints]"))
        return tasks

    def pause(self) -> None:
        """Stop starting batches (a batch under way finishes), as a stopped function app does: events pile up."""
        self._consuming.clear()

    def resume(self) -> None:
        self._consuming.set()

    def backlog(self) -> int:
        return sum(len(p.events) - pos for p, pos in zip(self.hub.partitions, self.positions, strict=True))

    def stalled(self) -> list[Stall]:
        """Partitions whose current batch has failed at least `stall_after` times in a row."""
        return [s for _, s in sorted(self._failing.items()) if s.attempts >= self.stall_after]

    def _failed(self, partition: int, sequence_number: int, attempts: int, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"[:ERROR_TEXT_LIMIT]
        self._failing[partition] = Stall(self.spec.name, partition, attempts, text, sequence_number)
        if attempts >= self.stall_after and attempts % self.stall_after == 0:
            log.warning(
                "partition %d of function %s has failed %d times: stalled at sequence number %d (last error %s)",
                partition, self.spec.name, attempts, sequence_number, text,
            )  # fmt: skip

    def _finished(self, partition: int) -> None:
        stall = self._failing.pop(partition, None)
        if stall is not None and stall.attempts >= self.stall_after:
            log.warning("partition %d of function %s moves again after %d failed attempts",
                        partition, self.spec.name, stall.attempts)  # fmt: skip

    async def _partition(self, index: int) -> None:
        while True:
            await self._consuming.wait()
            events = await self.hub.read(
                index, self.positions[index], self.options.max_batch_size, self.options.max_wait_seconds
            )
            if not events or not self._consuming.is_set():  # paused while waiting: read them again on resume
                continue
            batches = [events] if self.many else [[e] for e in events]
            for batch in batches:
                metadata = trigger_metadata(batch, self.many, self.hub.name, self.consumer_group)
                payload: Any = (
                    [to_function_event(e, metadata) for e in batch]
                    if self.many
                    else to_function_event(batch[0], metadata)
                )
                first = batch[0].sequence_number

                def on_failure(attempts: int, error: BaseException, first: int = first) -> None:
                    self._failed(index, first, attempts, error)

                try:
                    await self.spec.invoke(payload, timing=self.timing, on_failure=on_failure)
                    self.stats[f"{self.spec.name}:ok"] += 1
                except Exception:  # a finite policy gave up: the host checkpoints past the batch, as in Azure
                    self.stats[f"{self.spec.name}:failed"] += 1
                    log.exception(
                        "%s: batch of %d failed after retries; checkpointing past it", self.spec.name, len(batch)
                    )
                self._finished(index)
                self.positions[index] += len(batch)  # checkpoint
                if self.checkpoints is not None:
                    self.checkpoints.mark(self.hub.name, self.consumer_group, index, batch[-1].sequence_number)
