"""The anonymous Graph webhook under a flood: what one forged POST may cost in reads, log lines and time.

No test here measures time: the deadline is injected (a `Deadline` whose phases end on an event the test
controls), so "answers within the budget whatever the store does" is checked deterministically.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import azure.functions as func
import orjson
import pytest

from devstack.function_index import indexed_functions
from shared.calendar import notifications, runtime
from shared.calendar.jobs import MemorySyncQueue, SyncJob, SyncQueue
from shared.calendar.notifications import (
    MAX_BODY_BYTES,
    MAX_ITEMS,
    MAX_VALIDATION_TOKEN,
    READ_CONCURRENCY,
    Deadline,
    InvalidNotificationError,
    NotificationTooLargeError,
    handle_notifications,
)
from shared.containers import partition_keys
from shared.per_loop import PerLoop
from shared.stores.base import DocumentStore, Stored
from shared.stores.memory import MemoryDocumentStore
from tests.calendar_support import USER, subscribe_driver
from tests.store_support import DelegatingStore

OTHER = "0f9b8e2d-6c1a-4f57-8d3e-5a7b9c1d2e02"
SUB, OTHER_SUB = "8f1c1d0e-0000-4000-8000-000000000001", "8f1c1d0e-0000-4000-8000-000000000002"


class CountingStore(DelegatingStore):
    """A memory store that counts reads and the most reads in flight at once; `hold` makes reads of the named
    partitions wait until released (a slow store), and `fail` makes them raise."""

    def __init__(self) -> None:
        super().__init__(MemoryDocumentStore(partition_keys()))
        self.reads = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.hold: set[str] = set()
        self.fail: set[str] = set()
        self.held = asyncio.Event()  # set once a held read is waiting
        self.release = asyncio.Event()

    async def read(self, container: str, partition_key: str, item_id: str) -> Stored | None:
        self.reads += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let the other readers start: concurrency becomes observable
            if partition_key in self.fail:
                raise RuntimeError("store unavailable")
            if partition_key in self.hold:
                self.held.set()
                await self.release.wait()
            return await self.inner.read(container, partition_key, item_id)
        finally:
            self.in_flight -= 1


class EventDeadline(Deadline):
    """Verification ends when `over` is set (by the test or the slow store), never by the wall clock."""

    def __init__(self, over: asyncio.Event, enqueue_over: asyncio.Event | None = None) -> None:
        super().__init__()
        self.over, self.enqueue_over_event = over, enqueue_over or asyncio.Event()

    async def verification_over(self) -> None:
        await self.over.wait()

    async def enqueue_over(self) -> None:
        await self.enqueue_over_event.wait()


class StuckQueue(SyncQueue):
    """A queue whose sends never finish (Storage hanging)."""

    def __init__(self, stuck: asyncio.Event) -> None:
        self.stuck = stuck

    async def enqueue(self, job: SyncJob, delay_seconds: int = 0) -> None:
        self.stuck.set()
        await asyncio.Event().wait()


async def subscribe(store: DocumentStore, user: str = USER, subscription: str = SUB) -> str:
    return await subscribe_driver(store, user, subscription)


def item(state: str, subscription: str = SUB, **extra: Any) -> dict[str, Any]:
    return {"subscriptionId": subscription, "clientState": state, "changeType": "updated", **extra}


def body(*items: Any) -> bytes:
    return orjson.dumps({"value": list(items)})


def forged_flood(count: int) -> bytes:
    """`count` notifications, each a different subscription of a made-up driver, as small as JSON allows."""
    return body(*({"subscriptionId": f"s{i}", "clientState": f"u{i}.x"} for i in range(count)))


async def guarded(coro: Any) -> Any:
    """A hang is a failure, not a stuck suite (a guard only: nothing asserts on time)."""
    async with asyncio.timeout(30):
        return await coro


# ---- caps: refused before any read ------------------------------------------------------------------------------


async def test_a_one_megabyte_20000_item_forged_post_is_refused_without_a_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, queue = CountingStore(), MemorySyncQueue()
    flood = forged_flood(20_000)
    assert 400_000 < len(flood) <= MAX_BODY_BYTES  # under the byte cap: the item cap must catch it
    with caplog.at_level(logging.DEBUG), pytest.raises(NotificationTooLargeError, match="at most 1000"):
        await guarded(handle_notifications(flood, store, queue))
    assert store.reads == 0
    assert queue.jobs == []
    assert len(caplog.records) <= 2


async def test_a_body_over_the_byte_cap_is_refused_before_parsing() -> None:
    store = CountingStore()
    with pytest.raises(NotificationTooLargeError, match="bytes"):
        await handle_notifications(b" " * (MAX_BODY_BYTES + 1), store, MemorySyncQueue())
    assert store.reads == 0


async def test_at_the_item_cap_reads_are_one_per_distinct_subscription_and_at_most_eight_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, queue = CountingStore(), MemorySyncQueue()
    state = await subscribe(store)
    # 1,000 items: 499 forged distinct subscriptions, each twice, plus the real one twice
    forged = [{"subscriptionId": f"s{i}", "clientState": f"u{i}.x"} for i in range(499)]
    with caplog.at_level(logging.DEBUG):
        report = await guarded(handle_notifications(body(*forged, *forged, item(state), item(state)), store, queue))
    assert report.items == MAX_ITEMS
    assert store.reads == report.reads == report.subscriptions == 500
    assert 1 < store.max_in_flight <= READ_CONCURRENCY
    assert (report.accepted, report.rejected) == (2, 998)
    assert queue.jobs == [(SyncJob(USER, "notification"), 0)]
    assert len(caplog.records) == 1  # one line per POST, with counts
    assert "rejected=998" in caplog.records[0].getMessage()


async def test_a_subscription_repeated_in_a_post_costs_one_read_and_one_job() -> None:
    store, queue = CountingStore(), MemorySyncQueue()
    state = await subscribe(store)
    report = await handle_notifications(body(*[item(state)] * 500), store, queue)
    assert store.reads == 1
    assert report.accepted == 500
    assert queue.jobs == [(SyncJob(USER, "notification"), 0)]


async def test_malformed_and_oversized_fields_are_rejected_without_a_read() -> None:
    store = CountingStore()
    state = await subscribe(store)
    bad = [
        "not an object",
        {"subscriptionId": SUB},
        {"subscriptionId": SUB, "clientState": 7},
        {"subscriptionId": SUB, "clientState": "no-dot"},
        item(state[:-1] + "x" * (200 - len(state))),  # longer than Graph's 128
        item(state, subscription="s" * 129),
        item(state, subscription=""),
        item(state, lifecycleEvent="somethingNew"),  # ignored, not read
    ]
    report = await handle_notifications(body(*bad), store, MemorySyncQueue())
    assert store.reads == 0
    assert (report.rejected, report.ignored) == (7, 1)


async def test_attacker_strings_are_logged_escaped_and_bounded(caplog: pytest.LogCaptureFixture) -> None:
    store = CountingStore()
    hostile = "evil\nERROR fake log line\x1b[31m" + "A" * 100
    items = [item(f"u{i}.secret", subscription=hostile) for i in range(50)]
    items.append({"subscriptionId": SUB, "clientState": "u.x", "lifecycleEvent": "\n" + "B" * 5000})
    with caplog.at_level(logging.DEBUG):
        await handle_notifications(body(*items), store, MemorySyncQueue())
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message
    assert "\x1b" not in message
    assert "A" * 65 not in message
    assert "B" * 65 not in message
    assert len(message) < 1000


async def test_lifecycle_events_of_one_subscription_merge_into_the_strongest_job() -> None:
    store, queue = CountingStore(), MemorySyncQueue()
    state = await subscribe(store)
    other = await subscribe(store, OTHER, OTHER_SUB)
    items = [
        item(state),
        item(state, lifecycleEvent="missed"),
        item(state, lifecycleEvent="reauthorizationRequired"),
        item(other, OTHER_SUB),
        item(other, OTHER_SUB, lifecycleEvent="subscriptionRemoved"),
    ]
    await handle_notifications(body(*items), store, queue)
    assert store.reads == 2
    assert sorted(queue.jobs, key=lambda j: j[0].user_id) == sorted(
        [
            (SyncJob(USER, "lifecycle", full=True, subscription="reauthorize"), 0),
            (SyncJob(OTHER, "lifecycle", full=True, subscription="recreate"), 0),
        ],
        key=lambda j: j[0].user_id,
    )


# ---- the deadline: a slow store or queue never holds the answer -------------------------------------------------


async def test_a_store_that_never_answers_still_gets_an_answer_and_the_fast_ones_are_queued() -> None:
    store, queue = CountingStore(), MemorySyncQueue()
    state = await subscribe(store)
    slow = await subscribe(store, OTHER, OTHER_SUB)
    store.hold = {OTHER}  # this driver's read never returns
    report = await guarded(
        handle_notifications(body(item(state), item(slow, OTHER_SUB)), store, queue, EventDeadline(store.held))
    )
    assert queue.jobs == [(SyncJob(USER, "notification"), 0)]
    assert (report.accepted, report.unverified) == (1, 1)
    assert not report.complete
    assert store.in_flight == 0  # the held read was cancelled, not left running


async def test_a_failing_read_is_counted_not_raised_and_the_others_go_on(caplog: pytest.LogCaptureFixture) -> None:
    store, queue = CountingStore(), MemorySyncQueue()
    state = await subscribe(store)
    broken = await subscribe(store, OTHER, OTHER_SUB)
    store.fail = {OTHER}
    with caplog.at_level(logging.DEBUG):
        report = await handle_notifications(body(item(state), item(broken, OTHER_SUB)), store, queue)
    assert queue.jobs == [(SyncJob(USER, "notification"), 0)]
    assert report.unverified == 1
    assert "first_error=RuntimeError" in caplog.text


async def test_a_queue_that_never_answers_still_gets_an_answer() -> None:
    store = CountingStore()
    state = await subscribe(store)
    stuck = asyncio.Event()
    report = await guarded(
        handle_notifications(body(item(state)), store, StuckQueue(stuck), EventDeadline(asyncio.Event(), stuck))
    )
    assert (report.accepted, report.not_queued, report.jobs) == (1, 1, [])
    assert not report.complete


# ---- the HTTP function -----------------------------------------------------------------------------------------


def fn() -> Any:
    return indexed_functions()["graph_notifications"].get_user_function()


def post(payload: bytes = b"", params: dict[str, str] | None = None) -> func.HttpRequest:
    return func.HttpRequest("POST", "/api/graph/notifications", body=payload, params=params or {}, headers={})


@pytest.fixture
def wired(monkeypatch: pytest.MonkeyPatch) -> tuple[CountingStore, MemorySyncQueue]:
    store, queue = CountingStore(), MemorySyncQueue()
    monkeypatch.setattr(runtime, "cosmos_store_from_env", PerLoop(lambda: store))
    monkeypatch.setattr(runtime, "sync_queue", PerLoop(lambda: queue))
    return store, queue


async def test_the_flood_is_a_413_problem_without_a_stack_trace(
    wired: tuple[CountingStore, MemorySyncQueue], caplog: pytest.LogCaptureFixture
) -> None:
    store, queue = wired
    with caplog.at_level(logging.DEBUG):
        response = await fn()(post(forged_flood(20_000)))
    assert response.status_code == 413
    assert response.mimetype == "application/problem+json"
    assert orjson.loads(response.get_body())["status"] == 413
    assert (store.reads, queue.jobs) == (0, [])
    assert len(caplog.records) <= 2
    assert not any(r.exc_info for r in caplog.records)


async def test_the_function_answers_503_when_the_store_is_too_slow(
    wired: tuple[CountingStore, MemorySyncQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, queue = wired
    slow = await subscribe(store)
    store.hold = {USER}
    monkeypatch.setattr(notifications, "Deadline", lambda: EventDeadline(store.held))
    response = await guarded(fn()(post(body(item(slow)))))
    assert response.status_code == 503  # Graph redelivers later
    assert response.headers["Retry-After"]
    assert queue.jobs == []


async def test_the_validation_token_is_echoed_as_plain_text_with_nosniff(
    wired: tuple[CountingStore, MemorySyncQueue],
) -> None:
    store, queue = wired
    token = "Validation: Testing client application reachability for subscription Request-Id: " + "a" * 900
    token = token[:MAX_VALIDATION_TOKEN]
    response = await fn()(post(params={"validationToken": token}))
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.get_body().decode() == token
    assert (store.reads, queue.jobs) == (0, [])


async def test_an_absurd_validation_token_is_a_400_problem(wired: tuple[CountingStore, MemorySyncQueue]) -> None:
    response = await fn()(post(params={"validationToken": "<html>" + "x" * MAX_VALIDATION_TOKEN}))
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert b"<html>" not in response.get_body()


def test_the_validation_bound_is_a_domain_error() -> None:
    with pytest.raises(InvalidNotificationError):
        notifications.validation_reply("x" * (MAX_VALIDATION_TOKEN + 1))
