"""Per-driver sync jobs and the queue that carries them (Storage queue `calendar-sync`).

A job names a driver and why it runs; it holds no calendar data, so running it twice is harmless (delta sync
is idempotent) and any number of producers (timer, webhooks, car requests, driver link) can enqueue freely.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson

from shared.errors import FleetError
from shared.per_loop import PerLoop

log = logging.getLogger(__name__)

SubscriptionAction = Literal["renew", "reauthorize", "recreate"]
SUBSCRIPTION_ACTIONS: Final = ("renew", "reauthorize", "recreate")


class InvalidJobError(FleetError):
    """A queue message that is not a sync job (the trigger logs it and drops it: retrying cannot help)."""


@dataclass(frozen=True, slots=True)
class SyncJob:
    user_id: str
    reason: str  # timer | notification | missed | request | link | unlink | renewal | lifecycle
    full: bool = False  # start a new delta round (lifecycle `missed`, `subscriptionRemoved`)
    subscription: SubscriptionAction | None = None
    vehicle_id: str | None = None  # unlink: the car whose agenda to clear

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"userId": self.user_id, "reason": self.reason, "full": self.full}
        if self.subscription:
            body["subscription"] = self.subscription
        if self.vehicle_id:
            body["vehicleId"] = self.vehicle_id
        return orjson.dumps(body)

    @classmethod
    def from_json(cls, raw: bytes) -> SyncJob:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidJobError(f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidJobError("not a JSON object")
        user, reason, full = body.get("userId"), body.get("reason", "unknown"), body.get("full", False)
        action, vehicle = body.get("subscription"), body.get("vehicleId")
        if not isinstance(user, str) or not user or not isinstance(reason, str) or not isinstance(full, bool):
            raise InvalidJobError("userId (string), reason (string) and full (bool) expected")
        if action is not None and action not in SUBSCRIPTION_ACTIONS:
            raise InvalidJobError(f"unknown subscription action {action!r}")
        if vehicle is not None and not isinstance(vehicle, str):
            raise InvalidJobError("vehicleId must be a string")
        return cls(user, reason, full, action, vehicle)


class SyncQueue(ABC):
    @abstractmethod
    async def enqueue(self, job: SyncJob, delay_seconds: int = 0) -> None:
        """Queue one job; `delay_seconds` keeps it invisible that long (Retry-After, coalescing)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemorySyncQueue(SyncQueue):
    def __init__(self) -> None:
        self.jobs: list[tuple[SyncJob, int]] = []

    async def enqueue(self, job: SyncJob, delay_seconds: int = 0) -> None:
        self.jobs.append((job, delay_seconds))


class StorageSyncQueue(SyncQueue):
    """The `calendar-sync` storage queue (shared/stores/queues.py)."""

    def __init__(self, service: Any, queue_name: str) -> None:
        from shared.stores.queues import StorageQueue

        self._queue = StorageQueue(service, queue_name)

    async def enqueue(self, job: SyncJob, delay_seconds: int = 0) -> None:
        await self._queue.send(job.to_json(), delay_seconds)

    async def close(self) -> None:
        await self._queue.close()


def _storage_sync_queue() -> SyncQueue:
    from shared.calendar.config import CALENDAR_SYNC_QUEUE
    from shared.stores.storage_account import queue_service_client

    return StorageSyncQueue(queue_service_client(), CALENDAR_SYNC_QUEUE)


# The one client of the `calendar-sync` queue per process and loop, for everyone who enqueues jobs (the calendar
# runtime, the driver accounts, ingestion's travel trigger).
sync_queue_from_env: PerLoop[SyncQueue] = PerLoop(_storage_sync_queue)
