"""Review fixes of the calendar sync: concurrent jobs converge, subscriptions are replaced create-first, throttled
jobs come back with jitter.

Graph is the local sandbox driven through the real msgraph-sdk; the store, queue and IoT Hub are in memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.calendar.documents import SUBSCRIPTION_ID
from shared.calendar.jobs import SyncJob
from shared.calendar.subscriptions import SubscriptionManager
from shared.calendar.sync import SUPERSEDED_REASON, TRAVEL_REASON, CalendarSync, jittered
from shared.containers import CALENDARS
from shared.device_messages import canonical_time
from shared.graph.exceptions import GraphError
from tests.calendar_support import HOUR, NOTIFY_URL, USER, World, sandbox_world


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with sandbox_world() as w:
        await w.link()
        yield w


def job(**kw: Any) -> SyncJob:
    return SyncJob(USER, "test", **kw)


class HeldGateway:
    """The world's gateway, except that the first agenda patch waits until the test releases it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def patch_desired_if_present(self, device_id: str, patch: Any) -> bool:
        self.reached.set()
        await self.release.wait()
        result: bool = await self.inner.patch_desired_if_present(device_id, patch)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Graph:
    """The world's Graph client with `create_subscription` replaced for a test."""

    def __init__(self, inner: Any, create: Any) -> None:
        self.inner = inner
        self.create_subscription = create

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def drain(world: World, sync: CalendarSync | None = None) -> list[SyncJob]:
    """Run every queued job (and what they queue) as the queue trigger would."""
    ran: list[SyncJob] = []
    while world.queue.jobs:
        queued, _ = world.queue.jobs.pop(0)
        ran.append(queued)
        await (sync or world.sync()).run(queued)
    return ran


# ---- 1. concurrent jobs of one driver ----------------------------------------------------------------------------


async def test_a_superseded_job_that_pushed_a_deleted_meeting_is_followed_by_a_full_job_that_removes_it(
    world: World,
) -> None:
    # GIVEN a synced driver, and a new meeting X
    t = world.clock.now
    world.sandbox.add_event(USER, "keep", t + HOUR, t + 2 * HOUR)
    await world.sync().run(job())
    x = world.sandbox.add_event(USER, "cancelled soon", t + 3 * HOUR, t + 4 * HOUR)
    # WHEN a slow job reads X and stalls before its twin patch, the organiser deletes X, a second job syncs
    held = HeldGateway(world.gateway)
    slow = CalendarSync(world.store, world.graph, held, world.queue, world.settings, world.clock)  # type: ignore[arg-type]
    stalled = asyncio.create_task(slow.run(job()))
    await asyncio.wait_for(held.reached.wait(), 10)
    world.sandbox.delete_event(USER, x)
    fast = await world.sync().run(job())
    assert fast.outcome == "synced"
    assert [e["subject"] for e in world.agenda()["events"]] == ["keep"]
    # ... and then the slow job pushes its agenda (with X) and loses the state write
    held.release.set()
    assert (await stalled).outcome == "superseded"
    assert "cancelled soon" in [e["subject"] for e in world.agenda()["events"]]
    # THEN once the queued jobs and a timer sync ran, the car has no X (neither has the store)
    queued = [(j.reason, j.full, j.subscription, 5 <= delay <= 10) for j, delay in world.queue.jobs]
    await drain(world)
    await world.sync().run(SyncJob(USER, "timer"))
    assert [e["subject"] for e in world.agenda()["events"]] == ["keep"]
    assert x not in await world.events()
    # ... because the superseded job queued a full follow-up, a few seconds later
    assert queued == [(SUPERSEDED_REASON, True, None, True)]


async def test_a_superseded_job_that_changed_nothing_queues_no_follow_up(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Graph's duplicate notifications start jobs that find nothing new: the one that loses the state write has
    nothing to put right, so it queues nothing (a follow-up would cost a full round and a push to every car)."""
    from shared.calendar.documents import SYNC_STATE_ID
    from shared.errors import PreconditionFailedError

    world.sandbox.add_event(USER, "keep", world.clock.now + HOUR, world.clock.now + 2 * HOUR)
    await world.sync().run(job())
    replace = world.store.replace
    lost: list[bool] = []

    async def another_job_wrote_first(container: str, document: Any, etag: str) -> str:
        if container == CALENDARS and document.get("id") == SYNC_STATE_ID and not lost:
            lost.append(True)
            raise PreconditionFailedError("sync state changed")
        return await replace(container, document, etag)

    monkeypatch.setattr(world.store, "replace", another_job_wrote_first)
    world.queue.jobs.clear()
    report = await world.sync().run(job())
    assert report.outcome == "superseded"
    assert (report.upserted, report.removed, report.agenda_patched) == (0, 0, False)
    assert world.queue.jobs == []


async def test_a_superseded_agenda_job_is_followed_by_one_that_sends_the_agenda_whatever_the_hash(
    world: World,
) -> None:
    # GIVEN a synced driver whose agenda carries travel figures from where the car is
    t = world.clock.now
    world.sandbox.add_event(USER, "visit", t + HOUR, t + 2 * HOUR)
    here = {"at": "A"}

    async def enrich(vehicle: str, user: str, items: list[dict[str, Any]], now: dt.datetime) -> list[dict[str, Any]]:
        return [dict(item, travel={"from": here["at"]}) for item in items]

    def sync(gateway: Any = None) -> CalendarSync:
        gw = gateway or world.gateway
        return CalendarSync(world.store, world.graph, gw, world.queue, world.settings, world.clock, enrich=enrich)

    await sync().run(job())
    # WHEN a travel job from B stalls before its patch while one from C runs through, then B's patch lands
    here["at"] = "B"
    held = HeldGateway(world.gateway)
    stalled = asyncio.create_task(sync(held).run(SyncJob(USER, TRAVEL_REASON)))
    await asyncio.wait_for(held.reached.wait(), 10)
    here["at"] = "C"
    assert (await sync().run(SyncJob(USER, TRAVEL_REASON))).agenda_patched
    held.release.set()
    assert (await stalled).outcome == "superseded"
    assert world.agenda()["events"][0]["travel"] == {"from": "B"}  # stale, and the stored hash is C's
    # THEN once the queued jobs and another travel job from C ran, the car has C's agenda again
    queued = [(j.reason, j.full) for j, _ in world.queue.jobs]
    delta_calls = len(world.sandbox.calls("delta"))
    await drain(world, sync())
    await sync().run(SyncJob(USER, TRAVEL_REASON))
    assert world.agenda()["events"][0]["travel"] == {"from": "C"}
    # ... because the superseded job queued an agenda-only job that ignores the stored hash (no Graph)
    assert queued == [(TRAVEL_REASON, True)]
    assert len(world.sandbox.calls("delta")) == delta_calls


# ---- 2. subscriptions ----------------------------------------------------------------------------------------------


def subscribed(world: World) -> None:
    world.settings = dataclasses.replace(world.settings, notification_url=NOTIFY_URL)
    world.clock.now = dt.datetime.now(dt.UTC)  # the sandbox checks expiry against the real clock


async def failing_create(*args: Any, **kwargs: Any) -> Any:
    raise GraphError("create subscription: 503 injected", 503)


async def test_a_failed_recreate_keeps_the_old_subscription_and_makes_it_due(world: World) -> None:
    subscribed(world)
    assert (await world.sync().run(job())).subscription == "created"
    old = (await world.store.read(CALENDARS, USER, SUBSCRIPTION_ID)).document["subscriptionId"]  # type: ignore[union-attr]
    # WHEN a recreate cannot create the new subscription
    broken = Graph(world.graph, failing_create)
    sync = CalendarSync(world.store, broken, world.gateway, world.queue, world.settings, world.clock)  # type: ignore[arg-type]
    assert (await sync.run(job(subscription="recreate"))).subscription == "failed"
    # THEN the old one still exists in Graph, the stored one is due now, and the next job does not just keep it
    assert old in world.sandbox.subscriptions
    doc = (await world.store.read(CALENDARS, USER, SUBSCRIPTION_ID)).document  # type: ignore[union-attr]
    assert doc["subscriptionId"] == old
    assert doc["expiresAt"] <= canonical_time(world.clock.now)
    assert (await world.sync().run(job())).subscription == "renewed"


async def test_a_recreate_creates_the_new_subscription_before_deleting_the_old(world: World) -> None:
    subscribed(world)
    await world.sync().run(job())
    before = len(world.sandbox.requests)
    assert (await world.sync().run(job(subscription="recreate"))).subscription == "recreated"
    calls = [
        (r.method, r.path.rsplit("/", 1)[-1]) for r in world.sandbox.requests[before:] if r.route == "subscriptions"
    ]
    assert [m for m, _ in calls] == ["POST", "DELETE"]
    assert len(world.sandbox.subscriptions) == 1


async def test_a_throttled_job_is_requeued_without_the_subscription_action_it_already_did(world: World) -> None:
    subscribed(world)
    await world.sync().run(job())
    world.sandbox.fail_next("delta", 429, {"Retry-After": "42"})
    report = await world.sync().run(job(subscription="recreate"))
    assert (report.outcome, report.subscription) == ("throttled", "recreated")
    [(queued, _)] = world.queue.jobs
    assert queued.subscription is None
    # ... but one whose subscription upkeep failed keeps its action for the retry
    world.queue.jobs.clear()
    world.sandbox.fail_next("delta", 429, {"Retry-After": "42"})
    broken = Graph(world.graph, failing_create)
    sync = CalendarSync(world.store, broken, world.gateway, world.queue, world.settings, world.clock)  # type: ignore[arg-type]
    assert (await sync.run(job(subscription="recreate"))).subscription == "failed"
    [(queued, _)] = world.queue.jobs
    assert queued.subscription == "recreate"
    assert len(world.sandbox.subscriptions) == 1


async def test_two_first_time_subscribes_at_once_leave_one_subscription(world: World) -> None:
    subscribed(world)
    arrived: list[int] = []
    both = asyncio.Event()

    async def create_together(*args: Any, **kwargs: Any) -> Any:
        arrived.append(1)
        if len(arrived) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 10)
        return await world.graph.create_subscription(*args, **kwargs)

    graph = Graph(world.graph, create_together)

    def manager() -> SubscriptionManager:
        return SubscriptionManager(world.store, graph, NOTIFY_URL, world.settings.renew_before, world.clock)  # type: ignore[arg-type]

    outcomes = await asyncio.gather(manager().maintain(USER), manager().maintain(USER))
    assert sorted(outcomes) == ["created", "kept"]
    doc = (await world.store.read(CALENDARS, USER, SUBSCRIPTION_ID)).document  # type: ignore[union-attr]
    assert list(world.sandbox.subscriptions) == [doc["subscriptionId"]]


# ---- 4. jitter -----------------------------------------------------------------------------------------------------


async def test_throttled_jobs_are_requeued_with_bounded_jitter(world: World) -> None:
    for _ in range(12):
        world.sandbox.fail_next("delta", 429, {"Retry-After": "42"})
        assert (await world.sync().run(job())).outcome == "throttled"
    delays = [delay for _, delay in world.queue.jobs]
    assert all(42 <= d <= 63 for d in delays)
    assert len(set(delays)) > 1


def test_jitter_is_bounded() -> None:
    assert all(1 <= jittered(1) <= 6 for _ in range(50))
    assert all(600 <= jittered(600) <= 630 for _ in range(50))
    assert jittered(3600) == 3600


# ---- a handover a failure cut short (shared/drivers/handover.py) ------------------------------------------------


async def test_a_departed_drivers_sync_sends_nothing_to_the_car_their_link_still_names(world: World) -> None:
    """The car named its next driver, and the failure came before the former driver's link went: the former
    driver's sync goes on (their calendar is theirs) but their agenda no longer goes to the car, whose twin keeps
    the next driver's."""
    from shared.containers import VEHICLES
    from tests.calendar_support import VEHICLE

    # GIVEN the driver's agenda on the car, then the car handed to another driver, their link left naming it
    t = world.clock.now
    world.sandbox.add_event(USER, "theirs", t + HOUR, t + 2 * HOUR)
    await world.sync().run(job())
    assert [e["subject"] for e in world.agenda()["events"]] == ["theirs"]
    stored = await world.store.read(VEHICLES, VEHICLE, VEHICLE)
    assert stored is not None
    handed = {**stored.document, "driver": {"userId": "0f9b8e2d-6c1a-4f57-8d3e-5a7b9c1d2e02"},
              "handovers": [{"userId": USER, "profile": None, "at": canonical_time(t)}]}  # fmt: skip
    await world.store.replace(VEHICLES, handed, stored.etag)
    world.gateway.desired[VEHICLE]["agenda"] = {"events": [], "owner": "the next driver's"}
    # WHEN their calendar changes and their sync runs (a full one too: it sends whatever the stored hash says)
    world.sandbox.add_event(USER, "theirs too", t + 3 * HOUR, t + 4 * HOUR)
    for again in (job(), job(full=True)):
        report = await world.sync().run(again)
        assert report.outcome == "synced"
    # THEN their calendar is synced, and the car's twin is the next driver's still
    assert sorted(e["subject"] for e in (await world.events()).values()) == ["theirs", "theirs too"]
    assert world.agenda() == {"events": [], "owner": "the next driver's"}
