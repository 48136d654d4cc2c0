"""The brand's cost history: the daily rollup writes each brand's closed day once (a replay changes nothing), and
the brand route shows it after the cars' own blocks have moved on."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from azure.functions.timer import TimerRequest

from devstack.function_index import indexed_functions
from devstack.host.ncrontab import Schedule
from shared.containers import TENANCY
from shared.cost import rollup
from shared.cost.meter import CostMeter
from shared.per_loop import PerLoop
from shared.settings import SETTINGS
from shared.stores.base import strip_system_properties
from shared.telemetry.ingest import TelemetryIngestor
from tests.cost_support import ChargingStore
from tests.factories import drive, message
from tests.fleet_support import BRAND, FLEET, Fleet

DAY = dt.timedelta(days=1)
CARS = ("car-000", "car-001")


def cost_days_in(fleet: Fleet) -> list[dict[str, object]]:
    assert isinstance(fleet.store, ChargingStore)
    return [d for d in fleet.store.documents(TENANCY) if d.get("kind") == rollup.KIND_COST_DAY]


def default(name: str) -> str | None:
    return next(s.default for s in SETTINGS if s.name == name)


async def fleet_over(days: int, messages_a_day: int, now: dt.datetime | None = None) -> tuple[Fleet, dt.datetime]:
    """Two cars of BRAND, each sending `messages_a_day` on each of `days` days ending today (fleet.now)."""
    fleet = Fleet(store=ChargingStore())
    if now is not None:
        fleet.now = now
    await fleet.add_fleet()
    for car in CARS:
        assert (
            await fleet.call("POST", f"/api/brands/{BRAND}/fleets/{FLEET}/vehicles", body={"vehicleId": car})
        ).status == 201
    first = (fleet.now - (days - 1) * DAY).replace(hour=9, minute=0, second=0, microsecond=0)
    clock = {"now": first}
    ingestor = TelemetryIngestor(fleet.store, fleet.dead_letters, cost=CostMeter(lambda: clock["now"]))
    seq = 0
    for d in range(days):
        for m in range(messages_a_day):
            clock["now"] = first + d * DAY + m * dt.timedelta(minutes=1)
            seq += 1
            await ingestor.ingest(
                [message(car, drive(seq, seq, speed=40.0), enqueued_s=seq, sequence_number=seq) for car in CARS]
            )
    return fleet, first


async def test_the_rollup_keeps_yesterday_once_and_a_replay_changes_nothing() -> None:
    fleet, first = await fleet_over(days=2, messages_a_day=3)
    yesterday = first.strftime("%Y-%m-%d")
    run_at = fleet.now
    report = await rollup.roll_up(fleet.store, run_at)
    assert (report.day, report.written, report.failed) == (yesterday, [BRAND], [])
    stored = await fleet.store.read(TENANCY, BRAND, rollup.cost_day_id(yesterday))
    assert stored is not None
    document = strip_system_properties(stored.document)
    assert document["kind"] == rollup.KIND_COST_DAY
    assert (document["period"], document["cars"], document["messages"], document["hubUnits"]) == (yesterday, 2, 6, 6)
    assert document["estimated"] is True
    assert document["requestUnits"] > 0
    # the same figures as the brand route's yesterday
    live = (await fleet.call("GET", f"/api/brands/{BRAND}/cost")).json
    (live_yesterday,) = [d for d in live["days"] if d["period"] == yesterday]
    assert {k: document[k] for k in rollup.FIGURES} == {k: live_yesterday[k] for k in rollup.FIGURES}
    # WHEN the run is replayed (the host retries it, or it runs twice): the same document
    again = await rollup.roll_up(fleet.store, run_at + dt.timedelta(minutes=5))
    assert again.written == [BRAND]
    replayed = await fleet.store.read(TENANCY, BRAND, rollup.cost_day_id(yesterday))
    assert replayed is not None
    assert strip_system_properties(replayed.document) == document
    assert len(cost_days_in(fleet)) == 1


async def test_the_brand_route_keeps_days_the_cars_blocks_no_longer_hold() -> None:
    # GIVEN a day of traffic, then three more days, the rollup running each morning before the cars send
    fleet, first = await fleet_over(days=1, messages_a_day=2)
    days = [first.strftime("%Y-%m-%d")]
    ingestor = TelemetryIngestor(fleet.store, fleet.dead_letters, cost=CostMeter(lambda: fleet.now))
    for d, seq in ((1, 100), (2, 200), (3, 300)):
        fleet.now = first + d * DAY
        days.append(fleet.now.strftime("%Y-%m-%d"))
        assert (await rollup.roll_up(fleet.store, fleet.now)).written == [BRAND]
        await ingestor.ingest(
            [message(car, drive(seq, seq, speed=40.0), enqueued_s=seq, sequence_number=seq) for car in CARS]
        )
    answer = (await fleet.call("GET", f"/api/brands/{BRAND}/cost")).json
    # THEN the cars' blocks hold only today and yesterday; the history holds every closed day since
    assert [d["period"] for d in answer["days"]] == [days[3], days[2]]
    assert [d["period"] for d in answer["history"]] == [days[2], days[1], days[0]]
    assert answer["history"][2]["messages"] == 4  # day 1: two cars, two messages each
    assert answer["history"][0]["messagesPerCar"] == 1
    # AND `days` bounds it: the last N days before today
    short = (await fleet.call("GET", f"/api/brands/{BRAND}/cost", query={"days": "2"})).json
    assert [d["period"] for d in short["history"]] == [days[2], days[1]]
    assert (await fleet.call("GET", f"/api/brands/{BRAND}/cost", query={"days": "0"})).status == 400


async def test_a_brand_whose_cars_counted_nothing_that_day_gets_no_document() -> None:
    fleet = Fleet(store=ChargingStore())
    await fleet.add_fleet()
    await fleet.add_fleet("quiet", "nowhere")
    report = await rollup.roll_up(fleet.store, fleet.now)
    assert (report.written, sorted(report.empty)) == ([], [BRAND, "quiet"])
    assert cost_days_in(fleet) == []


async def test_the_timer_fires_once_a_day_after_midnight_and_rolls_up_yesterday(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The function as the host indexes and calls it, on the app's store (here a memory one)."""
    from shared.stores import cosmos

    fn = indexed_functions()["cost_rollup"]
    (trigger,) = [json.loads(b) for b in fn.get_raw_bindings()]
    assert (trigger["type"], trigger["schedule"]) == ("timerTrigger", "%COST_ROLLUP_SCHEDULE%")
    retry = fn.get_settings_dict("retry_policy")  # a failed run is retried: a day missed today is gone tomorrow
    assert (retry["strategy"], retry["max_retry_count"]) == ("fixed_delay", "5")
    schedule = Schedule.parse(str(default("COST_ROLLUP_SCHEDULE")))
    first = schedule.next_after(dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC))
    assert (first, schedule.next_after(first)) == (first.replace(day=7, hour=0, minute=10), first + DAY)
    # WHEN it fires on a brand whose cars sent yesterday and today (by the real clock: the function reads it)
    fleet, first_day = await fleet_over(days=2, messages_a_day=1, now=dt.datetime.now(dt.UTC))
    monkeypatch.setattr(cosmos, "cosmos_store_from_env", PerLoop(lambda: fleet.store))
    await fn.get_user_function()(TimerRequest(past_due=False))
    # THEN yesterday's document is there
    (document,) = cost_days_in(fleet)
    assert (document["period"], document["messages"]) == (first_day.strftime("%Y-%m-%d"), 2)
