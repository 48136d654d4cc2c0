"""Storage queues the functions feed themselves (calendar sync jobs, command dispatch): bytes in, one message out.

Messages are sent as base64 text, the Functions queue trigger's default `messageEncoding`, so the trigger hands
the function the bytes that were sent. A queue that does not exist yet (a fresh account: Azurite, a new
deployment before the first trigger ran) is created once, on the first send that finds it missing.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from abc import ABC, abstractmethod
from typing import Any

log = logging.getLogger(__name__)


class MessageQueue(ABC):
    @abstractmethod
    async def send(self, body: bytes, delay_seconds: int = 0) -> None:
        """Queue one message; `delay_seconds` keeps it invisible that long."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryQueue(MessageQueue):
    def __init__(self) -> None:
        self.messages: list[tuple[bytes, int]] = []

    async def send(self, body: bytes, delay_seconds: int = 0) -> None:
        self.messages.append((body, delay_seconds))

    def drain(self) -> list[bytes]:
        """Take every queued message (tests play the trigger)."""
        taken, self.messages = [m for m, _ in self.messages], []
        return taken


class StorageQueue(MessageQueue):
    """azure-storage-queue (async), on the app's storage account (shared/stores/storage_account.py)."""

    def __init__(self, service: Any, queue_name: str) -> None:
        self._service = service
        self._queue = service.get_queue_client(queue_name)
        self._created = False

    async def send(self, body: bytes, delay_seconds: int = 0) -> None:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        text = base64.b64encode(body).decode("ascii")
        try:
            await self._queue.send_message(text, visibility_timeout=delay_seconds or None)
        except ResourceNotFoundError:
            if self._created:
                raise
            log.info("queue %s did not exist; creating it", self._queue.queue_name)
            with contextlib.suppress(ResourceExistsError):
                await self._queue.create_queue()
            self._created = True
            await self._queue.send_message(text, visibility_timeout=delay_seconds or None)

    async def close(self) -> None:
        await self._queue.close()
        await self._service.close()
