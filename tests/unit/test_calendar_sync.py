"""The calendar sync job: delta rounds into the store, resync, throttling, the agenda twin, subscriptions.

Graph is the local sandbox driven through the real msgraph-sdk; the store, queue and IoT Hub are in memory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator

import orjson
import pytest

from devstack.graph_sandbox import GraphSandbox, serve
from shared.calendar.agenda import build_agenda
from shared.calendar.documents import SUBSCRIPTION_ID, SYNC_STATE_ID
from shared.calendar.jobs import SyncJob
from shared.containers import CALENDARS
from shared.graph.msgraph_client import MsGraphClient
from tests.calendar_support import HOUR, NOTIFY_URL, USER, VEHICLE, World

DAY = 24 * HOUR


@pytest.fixture
async def world() -> AsyncIterator[World]:
    box = GraphSandbox()
    async with serve(box) as url:
        client = MsGraphClient.create(url, None, max_retries=0)
        w = World(box, client)
        # pages of two, so every round in these tests spans several pages
        w.settings = dataclasses.replace(w.settings, page_size=2)
        await w.link()
        yield w
        await client.close()


def job(**kw: object) -> SyncJob:
    return SyncJob(USER, "test", **kw)  # type: ignore[arg-type]


async def test_first_sync_stores_every_event_in_the_window_and_publishes_the_agenda(world: World) -> None:
    # GIVEN three events in the window and one beyond it
    t = world.clock.now
    soon = world.sandbox.add_event(USER, "stand-up", t + HOUR, t + 2 * HOUR, join_url="https://teams/x")
    later = world.sandbox.add_event(USER, "review", t + 3 * DAY, t + 3 * DAY + HOUR)
    world.sandbox.add_event(USER, "lunch", t + 4 * HOUR, t + 5 * HOUR, location="Cafe", latitude=1.5, longitude=2.5)
    world.sandbox.add_event(USER, "far away", t + 30 * DAY, t + 30 * DAY + HOUR)
    # WHEN the first job runs
    report = await world.sync().run(job())
    # THEN the events in the window are stored, the sync state holds the deltaLink, the car has its agenda
    events = await world.events()
    assert set(events) >= {soon, later}
    assert len(events) == 3
    assert report.full
    assert report.graph_requests == 2  # three events, pages of two
    state = (await world.store.read(CALENDARS, USER, SYNC_STATE_ID)).document  # type: ignore[union-attr]
    assert state["deltaLink"]
    assert state["window"]["start"] == "2026-11-21T07:00:00.000Z"
    agenda = world.agenda()
    assert [e["subject"] for e in agenda["events"]] == ["stand-up", "lunch"]  # the next 24 hours only
    assert agenda["events"][0]["joinUrl"] == "https://teams/x"
    assert agenda["events"][1]["coordinates"] == {"lat": 1.5, "lon": 2.5}
    assert agenda["truncated"] is False


async def test_a_sync_without_changes_costs_one_graph_request_and_no_twin_patch(world: World) -> None:
    world.sandbox.add_event(USER, "stand-up", world.clock.now + HOUR, world.clock.now + 2 * HOUR)
    await world.sync().run(job())
    patches = len(world.gateway.patches)
    before = len(world.sandbox.calls("delta"))
    report = await world.sync().run(job())
    assert len(world.sandbox.calls("delta")) - before == 1
    assert report.graph_requests == 1
    assert not report.full
    assert len(world.gateway.patches) == patches
    assert not report.agenda_patched


async def test_changes_and_removals_are_applied_and_the_agenda_follows(world: World) -> None:
    t = world.clock.now
    a = world.sandbox.add_event(USER, "a", t + HOUR, t + 2 * HOUR)
    b = world.sandbox.add_event(USER, "b", t + 3 * HOUR, t + 4 * HOUR)
    await world.sync().run(job())
    world.sandbox.delete_event(USER, a)
    world.sandbox.update_event(USER, b, subject="b, moved")
    report = await world.sync().run(job())
    assert (report.upserted, report.removed) == (1, 1)
    assert list((await world.events()).keys()) == [b]
    assert [e["subject"] for e in world.agenda()["events"]] == ["b, moved"]


async def test_a_change_beyond_the_next_24_hours_does_not_patch_the_twin(world: World) -> None:
    t = world.clock.now
    far = world.sandbox.add_event(USER, "review", t + 3 * DAY, t + 3 * DAY + HOUR)
    await world.sync().run(job())
    patches = len(world.gateway.patches)
    world.sandbox.update_event(USER, far, subject="review (new room)")
    report = await world.sync().run(job())
    assert report.upserted == 1
    assert (await world.events())[far]["subject"] == "review (new room)"
    assert len(world.gateway.patches) == patches


async def test_an_expired_delta_token_triggers_a_full_resync_that_drops_stale_events(world: World) -> None:
    t = world.clock.now
    keep = world.sandbox.add_event(USER, "keep", t + HOUR, t + 2 * HOUR)
    gone = world.sandbox.add_event(USER, "gone", t + 3 * HOUR, t + 4 * HOUR)
    await world.sync().run(job())
    # GIVEN Graph lost the sync state, and an event was deleted meanwhile (a delta round would never say so)
    world.sandbox.invalidate_delta_tokens()
    world.sandbox.delete_event(USER, gone)
    report = await world.sync().run(job())
    assert report.full
    assert list((await world.events()).keys()) == [keep]
    state = (await world.store.read(CALENDARS, USER, SYNC_STATE_ID)).document  # type: ignore[union-attr]
    assert state["deltaLink"]


async def test_a_drifted_window_is_re_baselined(world: World) -> None:
    t = world.clock.now
    world.sandbox.add_event(USER, "today", t + HOUR, t + 2 * HOUR)
    world.sandbox.add_event(USER, "in 8 days", t + 8 * DAY, t + 8 * DAY + HOUR)
    await world.sync().run(job())
    assert len(await world.events()) == 1
    world.clock.advance(2 * DAY)  # the window has drifted by more than CALENDAR_REBASELINE_MINUTES
    report = await world.sync().run(job())
    assert report.full
    assert [e["subject"] for e in (await world.events()).values()] == ["in 8 days"]  # "today" fell out


async def test_throttling_requeues_the_job_after_retry_after(world: World) -> None:
    world.sandbox.fail_next("delta", 429, {"Retry-After": "42"})
    report = await world.sync().run(job())
    assert report.outcome == "throttled"
    [(queued, delay)] = world.queue.jobs
    assert queued == job()
    assert 42 <= delay <= 42 + 21  # Retry-After plus jitter of up to half of it


async def test_an_unlinked_driver_is_forgotten_and_the_agenda_cleared(world: World) -> None:
    world.sandbox.add_event(USER, "a", world.clock.now + HOUR, world.clock.now + 2 * HOUR)
    await world.sync().run(job())
    assert world.agenda()
    await world.store.delete(CALENDARS, USER, "driver")
    report = await world.sync().run(SyncJob(USER, "unlink", vehicle_id=VEHICLE))
    assert report.outcome == "not_linked"
    assert await world.events() == {}
    assert "agenda" not in world.gateway.desired[VEHICLE]
    assert world.gateway.patches[-1] == (VEHICLE, {"agenda": None})


async def test_an_unlinked_drivers_meeting_places_late_mails_and_the_cars_routes_go_with_the_calendar(
    world: World,
) -> None:
    """The travel planner derived geocoded meeting places, late-mail records (the driver's partition) and the car's
    routes to the meetings (its travel state): calendar data too, deleted with the calendar; another driver's stay."""
    from shared.calendar.sync import CalendarSync
    from shared.containers import TRAVEL
    from shared.travel.stores import KIND_LATE, KIND_PLACE, TRAVEL_DOC_ID, forget_travel

    for doc in ({"id": "place-k1", "userId": USER, "kind": KIND_PLACE, "place": None},
                {"id": "late-k2", "userId": USER, "kind": KIND_LATE, "eventId": "a"},
                {"id": "place-k3", "userId": "someone-else", "kind": KIND_PLACE, "place": None}):  # fmt: skip
        await world.store.upsert(CALENDARS, doc)
    await world.store.upsert(TRAVEL, {"id": TRAVEL_DOC_ID, "vehicleId": VEHICLE, "kind": "travel", "state": {}})
    sync = CalendarSync(world.store, world.graph, world.gateway, world.queue, world.settings, world.clock,
                        forget_derived=lambda user, car: forget_travel(world.store, user, car))  # fmt: skip
    await world.store.delete(CALENDARS, USER, "driver")
    report = await sync.run(SyncJob(USER, "unlink", vehicle_id=VEHICLE))
    assert report.outcome == "not_linked"
    assert await world.store.read(CALENDARS, USER, "place-k1") is None
    assert await world.store.read(CALENDARS, USER, "late-k2") is None
    assert await world.store.read(TRAVEL, VEHICLE, TRAVEL_DOC_ID) is None
    assert await world.store.read(CALENDARS, "someone-else", "place-k3") is not None


async def test_an_unlinked_drivers_agenda_goes_from_the_edge_modules_twin_too(world: World) -> None:
    """The car's Edge module keeps a copy of the agenda (for the driver offline): it goes with the car's."""
    from shared.calendar.sync import CalendarSync

    sync = CalendarSync(world.store, world.graph, world.gateway, world.queue, world.settings, world.clock,
                        module_id="carlink")  # fmt: skip
    world.sandbox.add_event(USER, "a", world.clock.now + HOUR, world.clock.now + 2 * HOUR)
    await sync.run(job())
    assert world.gateway.module_desired[VEHICLE, "carlink"]["agenda"]["events"]
    await world.store.delete(CALENDARS, USER, "driver")
    await sync.run(SyncJob(USER, "unlink", vehicle_id=VEHICLE))
    assert "agenda" not in world.gateway.module_desired[VEHICLE, "carlink"]


async def test_subscriptions_are_created_renewed_when_due_and_recreated_when_gone(world: World) -> None:
    world.settings = dataclasses.replace(world.settings, notification_url=NOTIFY_URL)
    # the sandbox checks expiry against the real clock
    world.clock.now = dt.datetime.now(dt.UTC)
    assert (await world.sync().run(job())).subscription == "created"
    doc = (await world.store.read(CALENDARS, USER, SUBSCRIPTION_ID)).document  # type: ignore[union-attr]
    assert doc["clientState"].startswith(f"{USER}.")
    assert world.sandbox.subscriptions[doc["subscriptionId"]]["clientState"] == doc["clientState"]
    assert (await world.sync().run(job())).subscription == "kept"
    assert (await world.sync().run(job(subscription="renew"))).subscription == "renewed"
    assert (await world.sync().run(job(subscription="reauthorize"))).subscription == "reauthorized"
    world.sandbox.subscriptions.clear()  # Graph removed it
    assert (await world.sync().run(job(subscription="renew"))).subscription == "recreated"
    assert len(world.sandbox.subscriptions) == 1


async def test_without_a_notification_url_no_subscription_is_made(world: World) -> None:
    assert (await world.sync().run(job())).subscription == "disabled"
    assert world.sandbox.calls("subscriptions") == []


def test_the_agenda_is_cut_to_its_size_limit_and_says_so() -> None:
    items = [
        {
            "id": f"id-{i}" * 20,
            "subject": "x" * 100,
            "start": "a",
            "end": "b",
            "location": None,
            "isOnlineMeeting": False,
            "joinUrl": None,
        }
        for i in range(100)
    ]
    agenda, digest = build_agenda(items, "2026-11-21T08:00:00.000Z", 8192)
    assert len(orjson.dumps(agenda)) <= 8192
    assert agenda["truncated"] is True
    assert 0 < agenda["count"] < 100
    _, same_digest = build_agenda(items, "2026-11-21T09:00:00.000Z", 8192)
    assert same_digest == digest  # syncedAt alone is no change


async def test_a_car_with_the_edge_module_gets_its_agenda_on_the_module_twin_too(world: World) -> None:
    """The in-car module keeps the agenda for a tunnel (edge/): the sync writes it to the module twin as well; a
    car without the module (IoT Hub 404) is not asked again for a while."""
    t = world.clock.now
    world.sandbox.add_event(USER, "stand-up", t + HOUR, t + 2 * HOUR)
    sync = world.sync()
    sync.module_id = "carlink"
    await sync.run(job())
    [(device, module, patch)] = world.gateway.module_patches
    assert (device, module) == (VEHICLE, "carlink")
    assert patch["agenda"] == world.agenda()
    world.gateway.answers[VEHICLE] = (404, "ModuleNotFound")
    sync._no_module.clear()
    await sync._to_module(VEHICLE, {"events": []})  # 404: remembered
    assert VEHICLE in sync._no_module
    before = len(world.gateway.module_patches)
    await sync._to_module(VEHICLE, {"events": []})  # not asked again
    assert len(world.gateway.module_patches) == before
