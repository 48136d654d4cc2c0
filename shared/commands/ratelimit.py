"""Fixed-window rate limits kept in Cosmos DB, so every instance of the app counts against the same limit.

A counter is one small document per subject and minute (`kind: rate`, item ttl 2 minutes) in the commands
container, incremented with an etag-conditional replace (a lost race re-reads and tries again). Commands are rare
next to telemetry, so one extra write per accepted command is the right price for a limit that holds across
instances; an in-process limit would let N instances accept N times the limit.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Final

from shared.containers import COMMANDS
from shared.device_messages import safe_id
from shared.errors import ConflictError, PreconditionFailedError, RateLimitedError, StoreError
from shared.stores.base import DocumentStore

WINDOW_SECONDS: Final = 60
COUNTER_TTL_SECONDS: Final = 2 * WINDOW_SECONDS
MAX_RACES: Final = 10
KIND: Final = "rate"

log = logging.getLogger(__name__)


class FixedWindowLimiter:
    def __init__(self, store: DocumentStore) -> None:
        self.store = store

    async def take(self, partition: str, subject: str, limit: int, now: dt.datetime, what: str) -> None:
        """Count one more for `subject` in this minute's window (documents in `partition` of the commands
        container); RateLimitedError, counting nothing, when the window already holds `limit`."""
        window = int(now.timestamp()) // WINDOW_SECONDS
        item_id = safe_id(f"rate:{subject}:{window}")
        for _ in range(MAX_RACES):
            stored = await self.store.read(COMMANDS, partition, item_id)
            count = int(stored.document.get("count", 0)) if stored else 0
            if count >= limit:
                retry_after = (window + 1) * WINDOW_SECONDS - int(now.timestamp())
                raise RateLimitedError(f"at most {limit} {what} per minute", retry_after)
            document = {
                "id": item_id,
                "vehicleId": partition,
                "kind": KIND,
                "count": count + 1,
                "ttl": COUNTER_TTL_SECONDS,
            }
            try:
                if stored is None:
                    await self.store.create(COMMANDS, document)
                else:
                    await self.store.replace(COMMANDS, document, stored.etag)
                return
            except (ConflictError, PreconditionFailedError):
                continue  # another instance counted first: read its count and try again
        raise RateLimitedError(f"too many concurrent {what}", 1)

    async def give_back(self, partition: str, subject: str, now: dt.datetime) -> None:
        """Uncount one `take` of this minute's window for a request refused after it (best effort: a lost race
        re-reads; a window that ended meanwhile has nothing to give back to)."""
        window = int(now.timestamp()) // WINDOW_SECONDS
        item_id = safe_id(f"rate:{subject}:{window}")
        try:
            for _ in range(MAX_RACES):
                stored = await self.store.read(COMMANDS, partition, item_id)
                count = int(stored.document.get("count", 0)) if stored else 0
                if stored is None or count <= 0:
                    return
                try:
                    await self.store.replace(COMMANDS, {**stored.document, "count": count - 1}, stored.etag)
                    return
                except (ConflictError, PreconditionFailedError):
                    continue
        except StoreError as exc:  # the caller's answer (a 429, the stored command) stands; the slot stays taken
            log.warning("rate limit %s: slot not given back: %s", KIND, type(exc).__name__)
