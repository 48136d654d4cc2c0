"""Queue triggers: poll the storage queue (Azurite locally) with the host's rules.

- up to `batchSize` messages at a time, each invocation independent and concurrent; a new batch is fetched as soon
  as the messages still running drop to `newBatchThreshold` (one slow message does not hold up the queue);
- a message whose function fails becomes visible again after `visibilityTimeout`, and once it has been
  dequeued `maxDequeueCount` times (5) it moves to `<queue>-poison`;
- bodies are base64 as the extension writes and expects them by default (plain text is accepted too);
- polling backs off to at most host.json's `maxPollingInterval` when the queue is empty (2 s here: commands and
  calendar jobs wait at most that long; the host's default is 1 minute).
Ref: https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue-trigger
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.functions.queue import QueueMessage

from devstack.host.bindings import BindingError, FunctionSpec
from devstack.host.retry import parse_interval

if TYPE_CHECKING:
    from azure.storage.queue.aio import QueueClient, QueueServiceClient

log = logging.getLogger(__name__)
DEFAULT_MAX_POLL_SECONDS = 60.0  # the host's default maxPollingInterval (1 minute)


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = DEFAULT_MAX_POLL_SECONDS

    @classmethod
    def from_host_json(cls, host: Mapping[str, Any]) -> QueueOptions:
        options = host.get("extensions", {}).get("queues", {})
        return cls(
            batch_size=int(options.get("batchSize", 16)),
            new_batch_threshold=int(options.get("newBatchThreshold", int(options.get("batchSize", 16)) // 2)),
            max_dequeue_count=int(options.get("maxDequeueCount", 5)),
            visibility_timeout=parse_interval(str(options.get("visibilityTimeout", "00:00:00"))),
            max_polling_interval=parse_interval(str(options.get("maxPollingInterval", "00:01:00"))),
        )


def decode_body(content: str) -> bytes:
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        return content.encode("utf-8")


class QueueTrigger:
    def __init__(
        self, spec: FunctionSpec, environ: Mapping[str, str], options: QueueOptions, stats: Counter[str]
    ) -> None:
        from azure.storage.queue.aio import QueueServiceClient

        self.spec = spec
        self.options = options
        self.stats = stats
        self.queue_name = str(spec.trigger["queueName"])
        setting = str(spec.trigger.get("connection") or "AzureWebJobsStorage")
        connection = environ.get(setting) or environ.get(f"{setting}__serviceUri")
        if not connection:
            raise BindingError(f"{spec.name}: queue connection setting {setting!r} is not set")
        self.service: QueueServiceClient = QueueServiceClient.from_connection_string(connection)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._run(), name=self.spec.name)]

    async def _run(self) -> None:
        from azure.core.exceptions import ResourceExistsError

        queue = self.service.get_queue_client(self.queue_name)
        poison = self.service.get_queue_client(f"{self.queue_name}-poison")
        with contextlib.suppress(ResourceExistsError):
            await queue.create_queue()
        idle = 0.1
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                if len(running) > self.options.new_batch_threshold:  # as the host: fetch more once it drops to it
                    _, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                # The host dequeues with a 10-minute visibility timeout (renewed while the function runs), so a
                # message in progress is never handed out twice while it runs.
                received = queue.receive_messages(max_messages=self.options.batch_size, visibility_timeout=600)
                messages = [m async for m in received]
                if not messages:
                    await asyncio.sleep(idle)
                    idle = min(idle * 2, self.options.max_polling_interval)
                    running = {t for t in running if not t.done()}
                    continue
                idle = 0.1
                running |= {asyncio.create_task(self._handle(queue, poison, m)) for m in messages}
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await self.service.close()

    async def _handle(self, queue: QueueClient, poison: QueueClient, message: Any) -> None:
        from azure.core.exceptions import ResourceExistsError

        argument = QueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=decode_body(message.content),
            dequeue_count=message.dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=dt.datetime.now(dt.UTC),
            pop_receipt=message.pop_receipt,
        )
        try:
            await self.spec.invoke(argument)
        except Exception:
            self.stats[f"{self.spec.name}:failed"] += 1
            log.exception("%s failed on message %s (dequeue %d)", self.spec.name, message.id, message.dequeue_count)
            if message.dequeue_count >= self.options.max_dequeue_count:
                with contextlib.suppress(ResourceExistsError):
                    await poison.create_queue()
                await poison.send_message(message.content)
                await queue.delete_message(message)
                self.stats[f"{self.spec.name}:poison"] += 1
                log.warning("%s: message %s moved to %s-poison", self.spec.name, message.id, self.queue_name)
            else:
                await queue.update_message(message, visibility_timeout=int(self.options.visibility_timeout))
            return
        self.stats[f"{self.spec.name}:ok"] += 1
        await queue.delete_message(message)
