"""The local host's Event Hubs checkpoints, written to Azurite as the Functions extension writes them in Azure.

The Functions Event Hubs extension (v5) checkpoints after every batch into `AzureWebJobsStorage`: container
`azure-webjobs-eventhub`, an empty blob `{namespace}/{hub}/{consumer group}/checkpoint/{partition}` (lower case)
whose metadata holds the last processed event's `sequencenumber` and `offset`. Writing the same blobs locally lets
the backlog timer read them with its Azure reader (shared/observability/backlog.BlobCheckpoints) against Azurite.

Writes are coalesced per partition by one writer task, so a fast partition costs one blob write per flush, not per
batch: the checkpoint may trail the host's position by the batches of one flush, as in Azure with
`batchCheckpointFrequency` above 1. The local host still resumes from its in-memory position, never from these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from devstack.eventhubs import LOCAL_NAMESPACE
from shared.observability.backlog import (
    CHECKPOINT_CONTAINER,
    OFFSET_KEY,
    SEQUENCE_NUMBER_KEY,
    checkpoint_blob_name,
)

log = logging.getLogger(__name__)


class BlobCheckpointWriter:
    """Checkpoints marked by a trigger's partitions, written to the storage account of a connection string."""

    def __init__(self, connection_string: str, namespace: str = LOCAL_NAMESPACE) -> None:
        self.connection_string = connection_string
        self.namespace = namespace
        self._pending: dict[tuple[str, str, str], int] = {}  # (hub, consumer group, partition) → sequence number
        self._dirty = asyncio.Event()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> BlobCheckpointWriter | None:
        """A writer over `AzureWebJobsStorage` (Azurite on the local stack); None when it is not set."""
        connection_string = environ.get("AzureWebJobsStorage")
        return cls(connection_string) if connection_string else None

    def mark(self, hub: str, consumer_group: str, partition: int, sequence_number: int) -> None:
        """The partition's consumer finished the event `sequence_number`: checkpoint it at the next flush."""
        self._pending[(hub, consumer_group, str(partition))] = sequence_number
        self._dirty.set()

    async def run(self) -> None:
        """Write what was marked, until cancelled (the host cancels it with the trigger's partition tasks)."""
        from azure.core.exceptions import AzureError, ResourceExistsError
        from azure.storage.blob.aio import BlobServiceClient

        async with BlobServiceClient.from_connection_string(self.connection_string) as service:
            container = service.get_container_client(CHECKPOINT_CONTAINER)
            created = False
            while True:
                await self._dirty.wait()
                self._dirty.clear()
                pending, self._pending = self._pending, {}
                try:
                    if not created:
                        with contextlib.suppress(ResourceExistsError):
                            await container.create_container()
                        created = True
                    for (hub, group, partition), number in pending.items():
                        name = checkpoint_blob_name(self.namespace, hub, group, partition)
                        metadata = {SEQUENCE_NUMBER_KEY: str(number), OFFSET_KEY: str(number)}
                        await container.upload_blob(name, b"", overwrite=True, metadata=metadata)
                except AzureError as error:  # Azurite gone: keep the newest marks for the next flush
                    log.warning("local Event Hubs checkpoints not written: %s", error)
                    self._pending = pending | self._pending
                    await asyncio.sleep(1.0)
                    self._dirty.set()
