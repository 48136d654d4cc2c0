"""A brand's cost summed at any size (shared/cost/view.py `BrandCostSum`, shared/cost/rollup.py): the running sum
equals the whole-list sum it replaced, the brand's cars are read a page at a time, and the snapshot is answered
while fresh and summed again when not."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.containers import TENANCY, VEHICLES, partition_keys
from shared.cost import rollup
from shared.cost.meter import month_to_date
from shared.cost.view import PRICES, BrandCostSum, _sum_into, brand_cost, rounded, vehicle_cost
from shared.device_messages import canonical_time
from shared.stores.base import Document
from shared.stores.memory import MemoryDocumentStore
from shared.telemetry.vehicle import ERASED
from shared.tenancy.documents import BRAND_DOC_ID, COST_SNAPSHOT_DOC_ID, KIND_BRAND, KIND_COST_SNAPSHOT
from tests.cost_support import RecordingStore

NOW = dt.datetime(2026, 1, 31, 18, 30, tzinfo=dt.UTC)
SINCE = ("2025-12-15T08:00:00.000Z", "2026-01-01T00:00:00.000Z", "2026-01-30T12:00:00.000Z", "2026-01-31T18:29:30.000Z")


def reference_brand_cost(brand_id: str, costs: Iterable[Mapping[str, Any]], now: dt.datetime) -> dict[str, Any]:
    """`view.brand_cost` as a list of every car's month, summed at the end: each period's sums rounded once, and
    only the cars metered this month in its USD (a car silent since an earlier month priced that month)."""
    days: dict[str, dict[str, Any]] = {}
    months: dict[str, dict[str, Any]] = {}
    cars = 0
    estimated = False
    monthly: list[float] = []
    for row in costs:
        cost = row.get("cost")
        if not isinstance(cost, dict):
            continue
        cars += 1
        estimated = estimated or bool(cost.get("estimated"))
        for key, into in (("day", days), ("prevDay", days), ("prevMonth", months)):
            period = cost.get(key)
            if isinstance(period, dict):
                _sum_into(into, period)
        this_month = month_to_date(cost)  # type: ignore[arg-type]
        _sum_into(months, this_month)
        usd = vehicle_cost(cost, now)["monthlyUsd"]  # type: ignore[arg-type]
        if usd is not None and this_month["on"] == now.strftime("%Y-%m"):
            monthly.append(usd)
    return {
        "brandId": brand_id,
        "estimated": estimated,
        "cars": cars,
        "days": [rounded(days[on]) for on in sorted(days, reverse=True)],
        "months": [rounded(months[on]) for on in sorted(months, reverse=True)],
        "monthlyUsdPerCar": round(sum(monthly) / len(monthly), 4) if monthly else None,
        "monthlyUsdTotal": round(sum(monthly), 4) if monthly else None,
        "prices": PRICES,
    }


def period(on: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "on": st.just(on),
            "since": st.sampled_from(SINCE),
            "ru": st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
            "messages": st.integers(0, 100_000),
            "hubUnits": st.integers(0, 200_000),
            "bytes": st.integers(0, 10**9),
            "cpuMs": st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
        }
    )


def cost_block() -> st.SearchStrategy[dict[str, Any]]:
    """A car's block: its current day and month (this one or an older one), maybe the previous ones."""
    return st.sampled_from(["2026-01-31", "2026-01-30", "2025-12-31"]).flatmap(
        lambda day: st.fixed_dictionaries(
            {"estimated": st.booleans(), "day": period(day), "month": period(day[:7])},
            optional={"prevDay": period("2026-01-29"), "prevMonth": period("2025-12")},
        )
    )


ROWS = st.lists(st.one_of(cost_block().map(lambda c: {"cost": c}), st.just({"cost": None}), st.just({})), max_size=12)


@given(ROWS, st.sampled_from([NOW, NOW + dt.timedelta(days=3), NOW - dt.timedelta(days=400)]))
def test_the_running_sum_is_the_whole_list_sum_it_replaced(rows: list[dict[str, Any]], now: dt.datetime) -> None:
    assert brand_cost("b", rows, now) == reference_brand_cost("b", rows, now)


@given(ROWS, st.integers(1, 5))
def test_adding_page_by_page_is_adding_car_by_car(rows: list[dict[str, Any]], page: int) -> None:
    total = BrandCostSum("b", NOW)
    for start in range(0, len(rows), page):
        for row in rows[start : start + page]:
            total.add(row)
        total.result()  # a look in the middle changes nothing
    assert total.result() == reference_brand_cost("b", rows, NOW)


def test_a_brand_counts_what_each_car_adds_below_the_last_digit_and_prices_only_this_months_cars() -> None:
    """Sums are rounded once: 1,000 cars of 0.004 RU each make 4 RU, not 0 (rounded at each addition, every car
    added nothing). A car silent since last month shows in last month's totals, not in this month's USD."""
    tiny = {"on": "2026-01-31", "since": SINCE[2], "ru": 0.004, "messages": 1, "hubUnits": 1, "bytes": 400}
    tiny |= {"cpuMs": 0.004}
    rows = [{"cost": {"estimated": True, "day": tiny, "month": {**tiny, "on": "2026-01", "messages": 0}}}] * 1_000
    answer = brand_cost("b", rows, NOW)
    assert answer["days"][0]["requestUnits"] == 4.0
    assert answer["days"][0]["cpuMs"] == 4.0
    silent = {**tiny, "on": "2025-12-20", "since": SINCE[0], "ru": 900.0, "messages": 100}
    old = {"cost": {"estimated": True, "day": silent, "month": {**silent, "on": "2025-12", "messages": 0}}}
    with_silent = brand_cost("b", [*rows, old], NOW)
    assert with_silent["monthlyUsdTotal"] == answer["monthlyUsdTotal"]
    assert with_silent["cars"] == 1_001
    assert [m["period"] for m in with_silent["months"]] == ["2026-01", "2025-12"]


def block(messages: int) -> dict[str, Any]:
    day = {"on": "2026-01-31", "since": SINCE[2], "ru": 7.5 * messages, "messages": messages, "hubUnits": messages}
    day |= {"bytes": 600 * messages, "cpuMs": 0.2 * messages}
    return {"estimated": True, "day": day, "month": {**day, "on": "2026-01", "messages": 0, "ru": 0.0}}


async def brand_of(cars: int) -> RecordingStore:
    """`cars` metered cars of brand b, and what the sum must leave out: an erased car, a car never metered, a car
    of another brand."""
    memory = MemoryDocumentStore(partition_keys())
    for n in range(cars):
        car = f"car-{n:03d}"
        await memory.upsert(
            VEHICLES, {"id": car, "vehicleId": car, "brandId": "b", "type": "vehicle", "cost": block(n)}
        )
    for car, brand, kind, cost in (
        ("car-000a", "b", ERASED, block(5)),
        ("car-000b", "b", "vehicle", None),
        ("car-000c", "other", "vehicle", block(5)),
    ):
        document = {"id": car, "vehicleId": car, "brandId": brand, "type": kind}
        await memory.upsert(VEHICLES, document | ({"cost": cost} if cost else {}))
    return RecordingStore(memory)


async def test_a_brand_is_summed_a_page_at_a_time_in_id_order() -> None:
    store = await brand_of(7)
    pages = [page async for page in rollup.brand_cost_pages(store, "b", page_size=3)]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [r["id"] for p in pages for r in p] == [f"car-{n:03d}" for n in range(7)]
    queries = store.of("query", VEHICLES)
    assert len(queries) == 3
    assert [q.parameters["@after"] for q in queries] == ["", "car-002", "car-005"]
    assert {q.parameters["@n"] for q in queries} == {3}
    # the same figures as the old one-query sum over the brand's cars
    rows = [{"cost": block(n)} for n in range(7)]
    assert await rollup.sum_brand_cost(store, "b", NOW, page_size=3) == reference_brand_cost("b", rows, NOW)


async def test_a_brand_of_whole_pages_ends_on_an_empty_page() -> None:
    store = await brand_of(6)
    assert [len(p) async for p in rollup.brand_cost_pages(store, "b", page_size=3)] == [3, 3]
    assert [q.parameters["@after"] for q in store.of("query", VEHICLES)] == ["", "car-002", "car-005"]


async def test_the_snapshot_is_answered_while_fresh_and_summed_again_after() -> None:
    store = await brand_of(4)
    first = await rollup.brand_cost_now(store, "b", NOW, max_age_s=900)
    assert first["asOf"] == canonical_time(NOW)
    assert first["cars"] == 4
    stored = await store.read(TENANCY, "b", COST_SNAPSHOT_DOC_ID)
    assert stored is not None
    assert (stored.document["kind"], stored.document["asOf"]) == (KIND_COST_SNAPSHOT, first["asOf"])
    # WHEN a car is added and the route asked again within the age: the snapshot, one point read
    car = {"id": "car-100", "vehicleId": "car-100", "brandId": "b", "type": "vehicle", "cost": block(9)}
    await store.upsert(VEHICLES, car)
    store.calls.clear()
    assert await rollup.brand_cost_now(store, "b", NOW + dt.timedelta(seconds=899), max_age_s=900) == first
    assert [(c.operation, c.container) for c in store.calls] == [("read", TENANCY)]
    # AND at the age: summed again, with the new car, and kept
    later = NOW + dt.timedelta(seconds=900)
    again = await rollup.brand_cost_now(store, "b", later, max_age_s=900)
    assert (again["cars"], again["asOf"]) == (5, canonical_time(later))
    assert len(store.of("query", VEHICLES)) == 1
    assert len(store.of("upsert", TENANCY)) == 1


async def test_a_snapshot_from_a_clock_ahead_is_summed_again() -> None:
    store = await brand_of(2)
    await rollup.brand_cost_now(store, "b", NOW + dt.timedelta(minutes=5), max_age_s=900)
    store.calls.clear()
    assert (await rollup.brand_cost_now(store, "b", NOW, max_age_s=900))["asOf"] == canonical_time(NOW)
    assert len(store.of("query", VEHICLES)) == 1


async def test_a_snapshot_from_an_instance_a_little_ahead_is_fresh() -> None:
    # Instances' clocks differ by seconds: a snapshot written "in the future" by less than CLOCK_SKEW_S is recent.
    store = await brand_of(2)
    ahead = NOW + dt.timedelta(seconds=rollup.CLOCK_SKEW_S - 1)
    first = await rollup.brand_cost_now(store, "b", ahead, max_age_s=900)
    store.calls.clear()
    assert await rollup.brand_cost_now(store, "b", NOW, max_age_s=900) == first
    assert store.of("query", VEHICLES) == []


class Suspending(RecordingStore):
    """A store whose queries take a round trip (the memory store's never suspend, so calls would not overlap)."""

    async def query(
        self, container: str, query: str, parameters: Mapping[str, Any] | None = None, partition_key: str | None = None
    ) -> Sequence[Document]:
        await asyncio.sleep(0.01)
        return await super().query(container, query, parameters, partition_key)


async def test_calls_that_find_the_snapshot_stale_at_once_sum_the_brand_once() -> None:
    store = Suspending((await brand_of(4)).inner)
    answers = await asyncio.gather(*(rollup.brand_cost_now(store, "b", NOW, max_age_s=900) for _ in range(5)))
    assert all(a == answers[0] for a in answers)
    assert answers[0]["cars"] == 4
    assert len(store.of("query", VEHICLES)) == 1  # one summation (one page), shared by the five calls
    # and the next stale call sums again: nothing is left waiting
    store.calls.clear()
    await rollup.brand_cost_now(store, "b", NOW + dt.timedelta(seconds=900), max_age_s=900)
    assert len(store.of("query", VEHICLES)) == 1


async def test_no_snapshot_when_disabled_or_when_the_brand_has_no_metered_car() -> None:
    store = await brand_of(2)
    assert (await rollup.brand_cost_now(store, "b", NOW, max_age_s=0))["cars"] == 2
    assert [c.operation for c in store.calls] == ["query"]  # no read, no write
    assert (await rollup.brand_cost_now(store, "nobody", NOW, max_age_s=900))["cars"] == 0
    assert store.of("upsert", TENANCY) == []
    assert await store.read(TENANCY, "nobody", COST_SNAPSHOT_DOC_ID) is None


async def test_a_registered_brand_with_no_metered_car_keeps_its_empty_sum() -> None:
    # A fleet registered before its first message: scanned once per max age, not on every call.
    store = await brand_of(0)
    await store.upsert(TENANCY, {"id": BRAND_DOC_ID, "brandId": "e", "kind": KIND_BRAND, "name": "E"})
    first = await rollup.brand_cost_now(store, "e", NOW, max_age_s=900)
    assert first["cars"] == 0
    assert len(store.of("upsert", TENANCY)) == 2  # the brand, then its snapshot
    store.calls.clear()
    again = await rollup.brand_cost_now(store, "e", NOW + dt.timedelta(seconds=60), max_age_s=900)
    assert again == first
    assert store.of("query", VEHICLES) == []  # one point read
    assert [c.operation for c in store.calls] == ["read"]


async def test_the_daily_rollup_sums_the_brand_by_pages_too(monkeypatch: pytest.MonkeyPatch) -> None:
    store = await brand_of(7)
    monkeypatch.setattr(rollup, "PAGE_SIZE", 3)
    document = await rollup.roll_up_brand(store, "b", NOW + dt.timedelta(days=1))
    assert document is not None
    assert (document["period"], document["cars"], document["messages"]) == ("2026-01-31", 7, sum(range(7)))
    assert [q.parameters["@after"] for q in store.of("query", VEHICLES)] == ["", "car-002", "car-005"]
