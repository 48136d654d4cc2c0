"""Dead letters as JSON blobs in the `deadletter` container of the app's storage account."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from shared.device_messages import DeadLetter
from shared.errors import StoreError
from shared.per_loop import PerLoop
from shared.settings import DEADLETTER_CONTAINER
from shared.stores.base import DeadLetterSink
from shared.stores.storage_account import blob_service_client

if TYPE_CHECKING:
    from azure.storage.blob.aio import BlobServiceClient, ContainerClient


class BlobDeadLetterSink(DeadLetterSink):
    """infra/ creates the container in Azure; locally it is created on first use."""

    def __init__(self, service: BlobServiceClient, container: str = DEADLETTER_CONTAINER) -> None:
        self._service = service
        self._container: ContainerClient = service.get_container_client(container)

    async def put(self, letter: DeadLetter) -> None:
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
        from azure.storage.blob import ContentSettings

        data = letter.to_json()
        settings = ContentSettings(content_type="application/json")
        try:
            try:
                await self._container.upload_blob(letter.blob_name, data, overwrite=True, content_settings=settings)
            except ResourceNotFoundError:
                with contextlib.suppress(ResourceExistsError):
                    await self._container.create_container()
                await self._container.upload_blob(letter.blob_name, data, overwrite=True, content_settings=settings)
        except AzureError as exc:
            raise StoreError(f"dead letter {letter.blob_name}: {type(exc).__name__}") from exc

    async def close(self) -> None:
        await self._service.close()


# The process's sink, created on first use from the settings.
blob_dead_letters_from_env = PerLoop(lambda: BlobDeadLetterSink(blob_service_client()))
