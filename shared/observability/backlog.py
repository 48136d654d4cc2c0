"""Ingestion backlog: how many events each Event Hubs consumer of the app has still to process, per partition.

The Functions host gives a Python function its batch and `PartitionContext`, never the partition's last enqueued
sequence number, so the distance cannot be measured inside the trigger. It is measured the way Event Hubs lag is
monitored in practice (KEDA's Event Hubs scaler does the same): a timer (`functions/backlog.py`, every
`INGEST_BACKLOG_SCHEDULE`) reads, per partition,

- the partition's last enqueued sequence number from Event Hubs (`PartitionPositions`), and
- the sequence number the trigger last checkpointed (`CheckpointSource`): the Functions Event Hubs extension (v5,
  Azure.Messaging.EventHubs' blob checkpoint store) keeps it in `AzureWebJobsStorage`, container
  `azure-webjobs-eventhub`, blob `{namespace}/{event hub}/{consumer group}/checkpoint/{partition}` in lower case,
  metadata `sequencenumber` and `offset`,

and records the difference as `carlink.ingest.backlog` (attributes function, hub, partition).

    report = await measure_backlog(EventHubPartitions.from_settings(), BlobCheckpoints.from_settings())

Azure implementations use the app's identity (Event Hubs Data Receiver on the namespace; Storage Blob Data Owner on
the host storage, both in infra/app/rbac.bicep); the local stack's in-memory hubs register theirs
(`use_local_positions`) and its host writes the same checkpoint blobs to Azurite.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from shared.observability import metrics
from shared.settings import CONSUMER_GROUP, setting

if TYPE_CHECKING:
    from azure.storage.blob.aio import BlobServiceClient

log = logging.getLogger(__name__)

BACKLOG: Final = "carlink.ingest.backlog"
# The Functions Event Hubs extension's checkpoint container (EventHubOptions.CheckpointContainer, extension v5).
CHECKPOINT_CONTAINER: Final = "azure-webjobs-eventhub"
SEQUENCE_NUMBER_KEY: Final = "sequencenumber"  # Azure.Messaging.EventHubs BlobMetadataKey.SequenceNumber
OFFSET_KEY: Final = "offset"
# The app's Event Hubs consumers: trigger function → the setting naming the hub it reads (functions/*.py).
CONSUMERS: Final[Mapping[str, str]] = {
    "ingest_telemetry": "TELEMETRY_EVENTHUB",
    "handle_requests": "REQUESTS_EVENTHUB",
    "dead_letter_unrouted": "UNROUTED_EVENTHUB",
}


@dataclass(frozen=True, slots=True)
class PartitionEnd:
    """Where a partition stands in Event Hubs: its first retained and last enqueued sequence numbers."""

    partition: str
    beginning: int
    last_enqueued: int
    empty: bool = False


@dataclass(frozen=True, slots=True)
class PartitionBacklog:
    """One consumer's distance behind one partition, in events."""

    function: str
    hub: str
    partition: str
    events: int
    checkpoint: int | None  # the checkpointed sequence number; None = no checkpoint yet


def checkpoint_prefix(namespace: str, hub: str, consumer_group: str) -> str:
    """The blob name prefix of a consumer group's checkpoints, as BlobCheckpointStore writes it (lower case)."""
    return f"{namespace}/{hub}/{consumer_group}/checkpoint/".lower()


def checkpoint_blob_name(namespace: str, hub: str, consumer_group: str, partition: str) -> str:
    """`localhost/telemetry/functions/checkpoint/0` for partition 0 of hub telemetry read on the local stack."""
    return checkpoint_prefix(namespace, hub, consumer_group) + partition


def backlog_of(end: PartitionEnd, checkpoint: int | None) -> int:
    """Events enqueued after the checkpoint. Without a checkpoint the trigger starts at the partition's beginning
    (the extension's default initial offset), so every retained event waits."""
    if end.empty:
        return 0
    if checkpoint is None:
        return end.last_enqueued - end.beginning + 1
    return max(0, end.last_enqueued - max(checkpoint, end.beginning - 1))


class PartitionPositions(abc.ABC):
    """Where each partition of an event hub stands (Event Hubs, or the local stack's in-memory hubs)."""

    namespace: str  # the fully qualified namespace the checkpoints are filed under

    @abc.abstractmethod
    async def partitions(self, hub: str) -> Sequence[PartitionEnd]: ...

    async def close(self) -> None:
        return None


class CheckpointSource(abc.ABC):
    """The sequence number each partition's consumer last checkpointed."""

    @abc.abstractmethod
    async def checkpoints(self, namespace: str, hub: str, consumer_group: str) -> Mapping[str, int]: ...

    async def close(self) -> None:
        return None


async def measure_backlog(
    positions: PartitionPositions,
    checkpoints: CheckpointSource,
    consumers: Mapping[str, str] | None = None,
    consumer_group: str = CONSUMER_GROUP,
) -> list[PartitionBacklog]:
    """Every consumer's backlog per partition, recorded as `carlink.ingest.backlog`. `consumers` maps trigger
    function → hub name (default: CONSUMERS with the hub names of the settings). A hub that cannot be read is
    logged and skipped: the others are still measured."""
    hubs = consumers if consumers is not None else {fn: str(setting(name)) for fn, name in CONSUMERS.items()}
    out: list[PartitionBacklog] = []
    for function, hub in hubs.items():
        try:
            ends = await positions.partitions(hub)
            done = await checkpoints.checkpoints(positions.namespace, hub, consumer_group)
        except Exception:  # one hub's failure must not hide the others' backlog
            log.exception("backlog of %s (event hub %s) not measured", function, hub)
            continue
        for end in ends:
            checkpoint = done.get(end.partition)
            item = PartitionBacklog(function, hub, end.partition, backlog_of(end, checkpoint), checkpoint)
            metrics.record(BACKLOG, item.events, {"function": function, "hub": hub, "partition": end.partition})
            out.append(item)
    return out


# --- Azure ------------------------------------------------------------------------------------------------------


class EventHubPartitions(PartitionPositions):
    """Partition properties from Event Hubs (`get_partition_properties`, a management request: the Listen right,
    which Azure Event Hubs Data Receiver grants)."""

    def __init__(self, namespace: str, credential: Any) -> None:
        self.namespace = namespace
        self._credential = credential

    @classmethod
    def from_settings(cls) -> EventHubPartitions:
        from shared.errors import ConfigurationError

        namespace = setting("EVENTHUB__fullyQualifiedNamespace")
        if not namespace:
            raise ConfigurationError("set EVENTHUB__fullyQualifiedNamespace to measure the ingestion backlog")
        if (setting("EVENTHUB__credential") or "").lower() == "managedidentity":
            from azure.identity.aio import ManagedIdentityCredential

            return cls(namespace, ManagedIdentityCredential(client_id=setting("EVENTHUB__clientId")))
        from azure.identity.aio import DefaultAzureCredential

        return cls(namespace, DefaultAzureCredential(managed_identity_client_id=setting("AZURE_CLIENT_ID")))

    async def partitions(self, hub: str) -> list[PartitionEnd]:
        from azure.eventhub.aio import EventHubConsumerClient

        async with EventHubConsumerClient(self.namespace, hub, CONSUMER_GROUP, self._credential) as client:
            out = []
            for partition in await client.get_partition_ids():
                props = await client.get_partition_properties(partition)
                out.append(
                    PartitionEnd(
                        str(partition),
                        int(props["beginning_sequence_number"]),
                        int(props["last_enqueued_sequence_number"]),
                        bool(props["is_empty"]),
                    )
                )
            return out

    async def close(self) -> None:
        await self._credential.close()


class BlobCheckpoints(CheckpointSource):
    """The Functions extension's checkpoint blobs (only their metadata is read: one list call per hub)."""

    def __init__(self, service: BlobServiceClient) -> None:
        self._service = service  # owned: a container client's close leaves the service's HTTP session open
        self._container = service.get_container_client(CHECKPOINT_CONTAINER)

    @classmethod
    def from_settings(cls) -> BlobCheckpoints:
        """Over AzureWebJobsStorage: the connection string locally, the app's identity in Azure."""
        from shared.stores.storage_account import blob_service_client

        return cls(blob_service_client())

    async def checkpoints(self, namespace: str, hub: str, consumer_group: str) -> dict[str, int]:
        from azure.core.exceptions import ResourceNotFoundError

        prefix = checkpoint_prefix(namespace, hub, consumer_group)
        out: dict[str, int] = {}
        try:
            async for blob in self._container.list_blobs(name_starts_with=prefix, include=["metadata"]):
                raw = (blob.metadata or {}).get(SEQUENCE_NUMBER_KEY)
                try:
                    out[blob.name[len(prefix) :]] = int(raw) if raw is not None else -1
                except ValueError:
                    log.warning("checkpoint %s: sequence number %r is not a number", blob.name, raw)
        except ResourceNotFoundError:  # no trigger has checkpointed yet
            return {}
        return {partition: number for partition, number in out.items() if number >= 0}

    async def close(self) -> None:
        await self._service.close()


# --- Selection --------------------------------------------------------------------------------------------------

_local_positions: PartitionPositions | None = None


def use_local_positions(positions: PartitionPositions | None) -> None:
    """The local stack's in-memory hubs stand in for Event Hubs (devstack registers them when its host starts)."""
    global _local_positions
    _local_positions = positions


async def run() -> list[PartitionBacklog]:
    """What the timer does: Event Hubs when a namespace is configured, else the local stack's hubs; checkpoints from
    AzureWebJobsStorage either way."""
    positions = EventHubPartitions.from_settings() if _local_positions is None else _local_positions
    checkpoints = BlobCheckpoints.from_settings()
    try:
        return await measure_backlog(positions, checkpoints)
    finally:
        await checkpoints.close()
        if positions is not _local_positions:
            await positions.close()
