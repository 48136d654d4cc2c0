"""The commands' fixed-window rate limit: a slot given back (a request refused after it was counted) is uncounted
once, never below zero, survives a concurrent writer, and a store that fails leaves the caller's answer standing."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from shared.commands.ratelimit import FixedWindowLimiter
from shared.containers import COMMANDS, partition_keys
from shared.errors import RateLimitedError, StoreError
from shared.stores.base import Document, Stored
from shared.stores.memory import MemoryDocumentStore

NOW = dt.datetime(2026, 12, 7, 8, 0, 30, tzinfo=dt.UTC)
SUBJECT = "driver@contoso.example"


def counts(store: MemoryDocumentStore) -> list[int]:
    return [int(d["count"]) for d in store.documents(COMMANDS)]


async def test_a_slot_given_back_is_taken_again_and_the_count_never_goes_below_zero() -> None:
    store = MemoryDocumentStore(partition_keys())
    limiter = FixedWindowLimiter(store)
    await limiter.take("car-1", SUBJECT, 1, NOW, "commands")
    with pytest.raises(RateLimitedError):
        await limiter.take("car-1", SUBJECT, 1, NOW, "commands")
    await limiter.give_back("car-1", SUBJECT, NOW)
    await limiter.give_back("car-1", SUBJECT, NOW)  # nothing left to give back
    assert counts(store) == [0]
    await limiter.take("car-1", SUBJECT, 1, NOW, "commands")
    assert counts(store) == [1]
    await limiter.give_back("car-1", SUBJECT, NOW + dt.timedelta(minutes=1))  # a window with nothing counted
    assert counts(store) == [1]


class RacingStore(MemoryDocumentStore):
    """Another instance counts once between the limiter's read and its write."""

    def __init__(self) -> None:
        super().__init__(partition_keys())
        self.raced = False

    async def replace(self, container: str, document: Document, etag: str) -> str:
        if not self.raced:
            self.raced = True
            stored = await self.read(container, str(document["vehicleId"]), str(document["id"]))
            assert stored is not None
            await self.upsert(container, {**stored.document, "count": int(stored.document["count"]) + 1})
        return await super().replace(container, document, etag)


async def test_a_slot_given_back_while_another_instance_counts_loses_neither() -> None:
    store = RacingStore()
    limiter = FixedWindowLimiter(store)
    await limiter.take("car-1", SUBJECT, 5, NOW, "commands")  # created: no replace
    await limiter.give_back("car-1", SUBJECT, NOW)  # 1, raced to 2, then given back: 1
    assert store.raced
    assert counts(store) == [1]


class FailingStore(MemoryDocumentStore):
    async def read(self, container: str, partition_key: str, item_id: str) -> Stored | None:
        raise StoreError("commands: HTTP 503")


async def test_a_store_failure_while_giving_back_is_logged_without_the_caller_and_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = FixedWindowLimiter(FailingStore(partition_keys()))
    with caplog.at_level(logging.WARNING, logger="shared.commands.ratelimit"):
        await limiter.give_back("car-1", SUBJECT, NOW)
    [record] = caplog.records
    assert "not given back" in record.getMessage()
    assert "StoreError" in record.getMessage()
    assert SUBJECT not in record.getMessage()
    assert "car-1" not in record.getMessage()
