"""Dead letters and parked messages as JSON blobs in the `deadletter` container of the app's storage account.

Each blob carries its reason as blob metadata, so a listing by reason reads no bodies; names start with the
stream and the device (`telemetry/car-001/2026/11/21/...`), so one car's records are listed, redriven and
erased by prefix (`DeadLetterSink.erase_device`).

Migration note: records written before 2026-12-02 (commit f7dabb2) were named `{stream}/{yyyy}/{mm}/{dd}/{device}/`
and are not found by a car's prefix. The lifecycle rule on the container (infra/, docs/data-model.md
"Retention") deletes them after its period; to erase one car's sooner, list the stream's blobs and delete those
whose fifth path segment is the car's id.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from shared.device_messages import DeadLetter, device_prefix
from shared.errors import StoreError
from shared.per_loop import PerLoop
from shared.settings import DEADLETTER_CONTAINER
from shared.stores.base import ContainedEntry, DeadLetterSink, entry_of
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
        metadata = {"reason": letter.reason, "stream": letter.stream}
        name = letter.blob_name
        try:
            try:
                await self._container.upload_blob(
                    name, data, overwrite=True, content_settings=settings, metadata=metadata
                )
            except ResourceNotFoundError:
                with contextlib.suppress(ResourceExistsError):
                    await self._container.create_container()
                await self._container.upload_blob(
                    name, data, overwrite=True, content_settings=settings, metadata=metadata
                )
        except AzureError as exc:
            raise StoreError(f"dead letter {name}: {type(exc).__name__}") from exc

    async def list(
        self, stream: str, device_id: str | None = None, reason: str | None = None, limit: int = 100
    ) -> list[ContainedEntry]:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        prefix = device_prefix(stream, device_id) if device_id is not None else f"{stream}/"
        out: list[ContainedEntry] = []
        try:
            async for blob in self._container.list_blobs(name_starts_with=prefix, include=["metadata"]):
                found = (blob.metadata or {}).get("reason", "")
                if reason is None or found == reason:
                    out.append(entry_of(blob.name, found, blob.size or 0))
                    if len(out) >= limit:
                        break
        except ResourceNotFoundError:
            return []  # no container yet: nothing was ever contained
        except AzureError as exc:
            raise StoreError(f"list dead letters {prefix}: {type(exc).__name__}") from exc
        return out

    async def get(self, name: str) -> DeadLetter | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            downloader = await self._container.download_blob(name)
            data = await downloader.readall()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise StoreError(f"read dead letter {name}: {type(exc).__name__}") from exc
        try:
            return DeadLetter.from_json(data)
        except ValueError:
            return None

    async def delete(self, name: str) -> bool:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            await self._container.delete_blob(name)
        except ResourceNotFoundError:
            return False
        except AzureError as exc:
            raise StoreError(f"delete dead letter {name}: {type(exc).__name__}") from exc
        return True

    async def close(self) -> None:
        await self._service.close()


# The process's sink, created on first use from the settings.
blob_dead_letters_from_env = PerLoop(lambda: BlobDeadLetterSink(blob_service_client()))
