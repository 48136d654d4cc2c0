"""The cost meter's Graph calls: every request the Graph client sends for a driver's sync job (retries included) is
counted into the sync state the job writes anyway, per day and car, and shown in the car's meter.

Graph is the local sandbox through the real msgraph-sdk; the store, queue and IoT Hub are in memory."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.graph_sandbox import GraphSandbox, serve
from shared.calendar.documents import DRIVER_ID, KIND_DRIVER, SYNC_STATE_ID
from shared.calendar.jobs import SyncJob
from shared.containers import CALENDARS
from shared.cost import graph_calls
from shared.errors import StoreError
from shared.graph.msgraph_client import MsGraphClient
from tests.calendar_support import HOUR, NOTIFY_URL, USER, VEHICLE, World
from tests.fleet_support import BRAND, FLEET, Fleet
from tests.fleet_support import USER as DRIVER

DAY = dt.timedelta(days=1)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    box = GraphSandbox()
    async with serve(box) as url:
        client = MsGraphClient.create(url, None, max_retries=1)
        w = World(box, client)
        w.settings = dataclasses.replace(w.settings, page_size=2)
        await w.link()
        yield w
        await client.close()


async def state(world: World) -> dict[str, object]:
    stored = await world.store.read(CALENDARS, USER, SYNC_STATE_ID)
    assert stored is not None
    return dict(stored.document)


async def test_a_sync_counts_every_graph_request_it_sent_into_the_sync_state(world: World) -> None:
    # GIVEN three events (two delta pages) and subscriptions on: the job also creates the subscription
    world.clock.now = dt.datetime.now(dt.UTC)  # the sandbox checks a subscription's expiry against the real clock
    for i in range(3):
        world.sandbox.add_event(USER, f"e{i}", world.clock.now + i * HOUR, world.clock.now + (i + 1) * HOUR)
    world.settings = dataclasses.replace(world.settings, notification_url=NOTIFY_URL)
    report = await world.sync().run(SyncJob(USER, "test"))
    assert report.subscription == "created"
    sent = len(world.sandbox.requests)
    assert sent == 3  # POST /subscriptions, two delta pages
    block = (await state(world))["graphCalls"]
    today = world.clock.now.strftime("%Y-%m-%d")
    assert block["day"] == {"on": today, "calls": sent, "cars": {VEHICLE: float(sent)}}  # type: ignore[index]
    # WHEN a delta page is throttled once and the SDK retries it
    world.sandbox.fail_next("delta", 429, {"Retry-After": "1"})  # (0 would mean the default backoff, ~3 s)
    await world.sync().run(SyncJob(USER, "test"))
    # THEN both attempts count: a retried 429 counts against Graph's throttling like any request
    assert len(world.sandbox.requests) == sent + 2
    block = (await state(world))["graphCalls"]
    assert block["day"]["calls"] == sent + 2  # type: ignore[index]


async def test_a_driver_with_two_cars_shares_the_calls_and_the_next_day_closes_the_last(world: World) -> None:
    await world.store.upsert(
        CALENDARS,
        {
            "id": DRIVER_ID,
            "userId": USER,
            "kind": KIND_DRIVER,
            "vehicleIds": ["car-b", "car-a"],
            "consent": {"calendar": True, "location": True},
        },
    )
    world.sandbox.add_event(USER, "stand-up", world.clock.now + HOUR, world.clock.now + 2 * HOUR)
    await world.sync().run(SyncJob(USER, "test"))
    await world.sync().run(SyncJob(USER, "test"))
    day = (await state(world))["graphCalls"]["day"]  # type: ignore[index]
    assert day["calls"] == 2
    assert day["cars"] == {"car-a": 1.0, "car-b": 1.0}
    world.clock.advance(DAY)
    await world.sync().run(SyncJob(USER, "test"))
    block = (await state(world))["graphCalls"]
    assert block["prevDay"]["calls"] == 2  # type: ignore[index]
    assert block["day"]["calls"] == 1  # type: ignore[index]
    assert graph_calls.car_calls(block, "car-a", world.clock.now) == (0.5, 1.5)  # type: ignore[arg-type]


async def test_a_throttled_job_that_writes_no_state_still_records_the_calls_it_sent(world: World) -> None:
    # GIVEN a driver synced once
    world.sandbox.add_event(USER, "e0", world.clock.now + HOUR, world.clock.now + 2 * HOUR)
    await world.sync().run(SyncJob(USER, "test"))
    recorded = (await state(world))["graphCalls"]["day"]["calls"]  # type: ignore[index]
    sent = len(world.sandbox.requests)
    # WHEN the next job is throttled past the SDK's retry: re-queued, no state of its own written
    world.sandbox.fail_next("delta", 429, {"Retry-After": "1"}, times=2)
    report = await world.sync().run(SyncJob(USER, "test"))
    assert report.outcome == "throttled"
    # THEN the two requests it sent are in the driver's sync state all the same, shared over their car
    block = (await state(world))["graphCalls"]
    assert len(world.sandbox.requests) == sent + 2
    assert block["day"]["calls"] == recorded + 2  # type: ignore[index]
    assert block["day"]["cars"] == {VEHICLE: float(recorded + 2)}  # type: ignore[index]


async def test_a_state_write_whose_answer_was_lost_counts_the_calls_once(world: World) -> None:
    """The state's replace went through but its answer did not come back (a timeout; the SDK's retry answered 412):
    the job records its calls on its way out, and finds them already there (its run's mark), so once."""
    world.sandbox.add_event(USER, "e0", world.clock.now + HOUR, world.clock.now + 2 * HOUR)
    await world.sync().run(SyncJob(USER, "test"))
    recorded = (await state(world))["graphCalls"]["day"]["calls"]  # type: ignore[index]
    replace = world.store.replace

    async def lost_answer(container: str, document: dict[str, object], etag: str) -> str:
        await replace(container, document, etag)
        if document.get("id") == SYNC_STATE_ID and not lost:
            lost.append(True)
            raise StoreError("the write's answer was lost")
        return etag

    lost: list[bool] = []
    world.store.replace = lost_answer  # type: ignore[method-assign]
    with pytest.raises(StoreError):
        await world.sync().run(SyncJob(USER, "test"))
    assert (await state(world))["graphCalls"]["day"]["calls"] == recorded + 1  # type: ignore[index]


async def test_a_job_that_does_not_reach_graph_counts_nothing(world: World) -> None:
    await world.link(calendar=False)
    await world.sync().run(SyncJob(USER, "test"))
    assert world.sandbox.requests == []
    assert await world.store.read(CALENDARS, USER, SYNC_STATE_ID) is None


def test_calls_outside_a_job_are_not_counted_and_jobs_do_not_mix() -> None:
    graph_calls.graph_call()  # no job: nothing to count into
    with graph_calls.counting() as outer:
        graph_calls.graph_call()
        with graph_calls.counting() as inner:
            graph_calls.graph_call()
            graph_calls.graph_call()
        graph_calls.graph_call()
    assert (outer.calls, inner.calls) == (2, 2)
    assert graph_calls.current() is None


CARS = st.lists(st.sampled_from(["car-a", "car-b", "car-c"]), max_size=3)


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 9), CARS), max_size=30))
def test_the_block_keeps_every_call_once_whatever_the_days(records: list[tuple[int, int, list[str]]]) -> None:
    """Days in any order (a clock behind adds to the current day): over two months, the current day, the month's
    closed days and the previous month add up to every call recorded; the cars' shares never exceed the calls."""
    start = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
    block: graph_calls.GraphCallBlock | None = None
    total = 0
    for offset, calls, cars in records:
        now = start + offset * DAY
        block = graph_calls.record(block, now, calls, cars)
        total += calls
        if not cars:
            continue
        shares = block["day"]["cars"]
        assert all(shares[car] > 0 for car in cars if calls)
    if block is None:
        return
    previous = block.get("prevMonth")
    assert graph_calls.month_to_date(block)["calls"] + (previous["calls"] if previous else 0) == total
    for period in (block["day"], block["month"]):
        assert sum(period["cars"].values()) <= period["calls"] + 1e-9


async def test_the_cars_meter_shows_its_share_of_its_drivers_graph_calls() -> None:
    fleet = Fleet()
    await fleet.add_fleet()
    await fleet.call("POST", f"/api/brands/{BRAND}/fleets/{FLEET}/vehicles", body={"vehicleId": VEHICLE})
    cost = (await fleet.call("GET", f"/api/vehicles/{VEHICLE}")).json["cost"]
    assert (cost["graphCalls"], cost["graphCallsToday"]) == (None, None)  # no driver
    await fleet.link_driver(VEHICLE)
    block = graph_calls.record(None, fleet.now - DAY, 4, [VEHICLE])
    block = graph_calls.record(block, fleet.now, 3, [VEHICLE])
    await fleet.store.upsert(
        CALENDARS, {"id": SYNC_STATE_ID, "userId": DRIVER, "kind": "syncState", "graphCalls": block}
    )
    cost = (await fleet.call("GET", f"/api/vehicles/{VEHICLE}")).json["cost"]
    month_to_date = 7.0 if (fleet.now - DAY).month == fleet.now.month else 3.0
    assert (cost["graphCallsToday"], cost["graphCalls"]) == (3.0, month_to_date)
    assert "Graph" not in " ".join(cost["monthlyUsdByService"])  # free of charge: not priced
