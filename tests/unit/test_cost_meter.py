"""The cost meter's accounting (shared/cost/meter.py, ingestion's `cost` block): each car's charges land in its
own document under concurrency, a replay counts nothing twice, days and months roll over."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.cost import meter
from shared.cost.meter import Charges, CostMeter, When, month_to_date
from shared.cost.view import brand_cost, vehicle_cost
from shared.device_messages import DeviceMessage
from shared.errors import PreconditionFailedError, StoreError
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.documents import VehicleDocument
from shared.telemetry.ingest import (
    CARRIED_CARS,
    CARRIED_IDLE_SECONDS,
    BatchFailedError,
    TelemetryIngestor,
    carried_cars_for,
)
from tests.cost_support import ChargingStore
from tests.factories import drive, iso, message

DAY_1 = dt.datetime(2026, 1, 31, 23, 58, tzinfo=dt.UTC)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def batch(cars: int, seq: int, repeats: int = 1) -> list[DeviceMessage]:
    """Car n sends `repeats * (n % 3 + 1)` messages: documents of different sizes per car."""
    out = []
    for n in range(cars):
        for k in range((n % 3 + 1) * repeats):
            s = seq * 100 + k
            out.append(message(f"car-{n}", drive(s, s, speed=float(n), soc=50.0), enqueued_s=s, sequence_number=s))
    return out


def cost_of(store: MemoryDocumentStore, car: str) -> Any:
    return next(d for d in store.documents("vehicles") if d["vehicleId"] == car)["cost"]


async def test_each_car_is_charged_its_own_writes_under_concurrency_carried_by_its_next_write() -> None:
    # GIVEN 30 cars of different document sizes whose writes interleave in the store
    store, clock = ChargingStore(), Clock(DAY_1)
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=CostMeter(clock), concurrency=8)
    first, second = batch(30, 1), batch(30, 2)
    # WHEN two batches are ingested
    await ingestor.ingest(first)
    after_first = {car: list(charges) for car, charges in store.charged.items()}
    await ingestor.ingest(second)
    # THEN each car's stored block holds exactly the charges of its own first batch's writes (the second's ride
    # on its next write), its messages, their 4 KB units and bytes
    for n in range(30):
        car = f"car-{n}"
        cost = cost_of(store, car)
        assert cost["estimated"] is True
        assert abs(cost["day"]["ru"] - sum(after_first[car])) < 0.02
        assert cost["day"]["ru"] == month_to_date(cost)["ru"]  # the month's closed days: none yet
        sent = [m for m in first + second if m.device_id == car]
        assert cost["day"]["messages"] == len(sent) == 2 * (n % 3 + 1)
        assert cost["day"]["hubUnits"] == len(sent)  # each well under 4 KB
        assert cost["day"]["bytes"] == sum(len(m.body) for m in sent)
    sizes = {round(cost_of(store, f"car-{n}")["day"]["ru"], 2) for n in range(30)}
    assert len(sizes) > 1  # the cars really were charged differently


class LoggedStore(ChargingStore):
    """The charging store, also noting which container each charged write went to (in `charged`'s order)."""

    def __init__(self) -> None:
        super().__init__()
        self.containers: dict[str, list[str]] = {}

    def _charge(self, document: Any) -> None:
        super()._charge(document)
        self.containers.setdefault(str(document.get("vehicleId")), []).append(str(document.get("type")))


async def test_a_cars_carried_charges_survive_its_leaving_the_cache() -> None:
    """A write's own charge waits for the car's next write: in the ingestor, not in the cached document, so a car
    evicted in between (a working set over the cache, a car that sends once an hour) still has it counted."""
    store, clock = LoggedStore(), Clock(DAY_1)
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=CostMeter(clock), concurrency=8)
    await ingestor.ingest(batch(12, 1))
    for n in range(12):
        ingestor.cache.evict(f"car-{n}")
    await ingestor.ingest(batch(12, 2))
    for n in range(12):
        car = f"car-{n}"
        kinds = store.containers[car]
        last_vehicle_write = len(kinds) - 1 - kinds[::-1].index("vehicle")
        # everything charged before the stored document's own write: the first batch's writes, the outbox the
        # second batch wrote again on reading the car back
        assert abs(cost_of(store, car)["day"]["ru"] - sum(store.charged[car][:last_vehicle_write])) < 0.02


async def test_beyond_the_bound_only_the_cars_over_it_lose_their_carried_charge_and_the_loss_is_counted() -> None:
    """More cars than the ingestor keeps carried charges for, written in turn (steady state): dropping the oldest
    entry would drop every car's before its next write. The cars within the bound keep theirs; the rest's are
    counted as dropped, so stored + carried + dropped is every charge."""
    store, clock = ChargingStore(), Clock(DAY_1)
    costs = CostMeter(clock)
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=costs, concurrency=1, carried_cars=5)
    for s in range(1, 6):
        sent = [message(f"car-{n}", drive(s, s, speed=1.0), enqueued_s=s, sequence_number=s) for n in range(10)]
        await ingestor.ingest(sent)
    stored = {f"car-{n}": cost_of(store, f"car-{n}")["day"]["ru"] for n in range(10)}
    whole = [car for car, ru in stored.items() if abs(ru - sum(store.charged[car][:-1])) < 0.02]
    assert len(whole) == 5
    carried = sum(ingestor._carried[car].ru for car in ingestor._carried)
    charged = sum(sum(charges) for charges in store.charged.values())
    assert costs.dropped_ru > 0
    assert sum(stored.values()) + carried + costs.dropped_ru == pytest.approx(charged)


async def test_the_bound_follows_the_cars_of_the_event_hub_and_an_idle_car_makes_room(monkeypatch: Any) -> None:
    assert carried_cars_for(None) == carried_cars_for(0) == CARRIED_CARS
    assert carried_cars_for(4 * 250_000) == 1_000_000  # every car the partitions carry
    now = [1000.0]
    monkeypatch.setattr("shared.cost.meter.time.monotonic", lambda: now[0])
    store, costs = ChargingStore(), CostMeter(Clock(DAY_1))
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=costs, concurrency=1, carried_cars=2)

    async def send(car: str, s: int) -> None:
        await ingestor.ingest([message(car, drive(s, s, speed=1.0), enqueued_s=s, sequence_number=s)])

    await send("car-a", 1)
    await send("car-b", 1)
    await send("car-c", 1)  # full, both in use: car-c's write's own charge is the one dropped
    assert list(ingestor._carried) == ["car-a", "car-b"]
    assert costs.dropped_ru == pytest.approx(store.charged["car-c"][0])
    now[0] += CARRIED_IDLE_SECONDS + 1  # car-a and car-b go quiet
    await send("car-b", 2)  # written: its entry is its newest write's, put back at the end
    await send("car-c", 2)  # car-a, idle, makes room
    assert list(ingestor._carried) == ["car-b", "car-c"]
    assert costs.dropped_ru == pytest.approx(store.charged["car-c"][0] + store.charged["car-a"][0])


class LostAnswer(ChargingStore):
    """A vehicle write that lands (and is charged) but whose answer is lost: a timeout, or the SDK's retry of it
    answered 412 by the store it changed."""

    lose: type[Exception] | None = None

    async def replace(self, container: str, document: Any, etag: str) -> str:
        new = await super().replace(container, document, etag)
        if container == "vehicles" and self.lose is not None:
            lost, self.lose = self.lose, None
            raise lost("answer lost")
        return new


@pytest.mark.parametrize("lost", [PreconditionFailedError, StoreError])
async def test_a_write_that_landed_unanswered_does_not_count_its_carried_charges_twice(lost: type[Exception]) -> None:
    store = LostAnswer()
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=CostMeter(Clock(DAY_1)))

    def sent(s: int) -> DeviceMessage:
        return message("car-1", drive(s, s, speed=1.0, soc=50.0), enqueued_s=s, sequence_number=s)

    await ingestor.ingest([sent(1)])
    await ingestor.ingest([sent(2)])
    store.lose = lost
    try:
        await ingestor.ingest([sent(3)])
    except BatchFailedError:
        await ingestor.ingest([sent(3)])  # redelivered: a replay of what landed
    await ingestor.ingest([sent(4)])
    day = cost_of(store, "car-1")["day"]
    # every charge once but the last write's own (carried by the car's next write)
    assert day["ru"] == pytest.approx(sum(store.charged["car-1"][:-1]), abs=0.02)
    assert day["messages"] == 4


async def test_a_write_refused_by_another_writers_change_keeps_its_carried_charges_for_the_next() -> None:
    store = ChargingStore()
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=CostMeter(Clock(DAY_1)))

    def sent(s: int) -> DeviceMessage:
        return message("car-1", drive(s, s, speed=1.0, soc=50.0), enqueued_s=s, sequence_number=s)

    await ingestor.ingest([sent(1)])
    await ingestor.ingest([sent(2)])
    # another writer changes the car (uncharged here): the cached etag is stale, the next write gets a real 412
    (doc,) = store.documents("vehicles")
    await MemoryDocumentStore.upsert(store, "vehicles", {**doc, "label": "renamed"})
    report = await ingestor.ingest([sent(3)])
    assert report.conflicts == 1
    await ingestor.ingest([sent(4)])
    assert cost_of(store, "car-1")["day"]["ru"] == pytest.approx(sum(store.charged["car-1"][:-1]), abs=0.02)


def test_overlapping_batches_share_one_cpu_window(monkeypatch: Any) -> None:
    """Batch A (100 messages) and batch B (1) overlap: the CPU while they ran is shared over their 101 messages,
    not B's start time overwriting A's and A's 100 messages sharing only what followed B; the CPU while no batch
    runs is not a message's."""
    cpu = [10.0]
    monkeypatch.setattr("shared.cost.meter.time.process_time", lambda: cpu[0])
    costs = CostMeter(Clock(DAY_1))
    costs.batch_started()  # A
    cpu[0] += 0.5
    costs.batch_started()  # B
    cpu[0] += 0.01
    costs.batch_ended(1)  # B: under the window, no rate yet
    assert costs.cpu_ms_per_message == 0.0
    cpu[0] += 0.5
    costs.batch_ended(100)  # A
    assert costs.cpu_ms_per_message == pytest.approx(1010 / 101)
    cpu[0] += 5.0  # no batch running: idle, the API, a timer's work
    costs.batch_started()
    cpu[0] += 0.2
    costs.batch_ended(100)
    assert costs.cpu_ms_per_message == pytest.approx(2.0)  # only the CPU while batches ran


async def test_a_failed_batch_leaves_the_cpu_window_counting_only_while_batches_run(monkeypatch: Any) -> None:
    """A batch that raises (a store outage: redelivered) ends its share of the window all the same: the next
    batches' rate still leaves out the time no batch ran."""
    cpu = [100.0]
    monkeypatch.setattr("shared.cost.meter.time.process_time", lambda: cpu[0])

    class Down(ChargingStore):
        async def read(self, container: str, partition_key: str, item_id: str) -> Any:
            raise StoreError("down")

    costs = CostMeter(Clock(DAY_1))
    failing = TelemetryIngestor(Down(), MemoryDeadLetterSink(), cost=costs)
    with pytest.raises(BatchFailedError):
        await failing.ingest(batch(3, 1))
    cpu[0] += 50.0  # idle: no batch running
    costs.batch_started()
    cpu[0] += 0.3
    costs.batch_ended(100)
    assert costs.cpu_ms_per_message == pytest.approx(3.0)


async def test_the_cpu_of_repeated_and_rejected_messages_is_carried_by_the_charged_ones(monkeypatch: Any) -> None:
    """The CPU rate divides by the messages charged to cars, not by every message of a batch: a redelivered batch
    (all repeats) and dead letters charge no car, so their CPU is carried by the messages that are charged, and the
    sum over cars is the CPU spent (the first batch's excepted: charged before any rate was measured)."""
    ticks = iter(range(10**6))
    monkeypatch.setattr("shared.cost.meter.time.process_time", lambda: float(next(ticks)))  # 1 s of CPU per batch
    store, clock = ChargingStore(), Clock(DAY_1)
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=CostMeter(clock))

    def cars(seq: int) -> list[DeviceMessage]:  # 10 cars, 10 messages each, and a dead letter
        out = [message("car-x", b"not json", enqueued_s=seq, sequence_number=seq)]
        for n in range(10):
            for k in range(10):
                s = seq + k
                out.append(message(f"car-{n}", drive(s, s, speed=1.0), enqueued_s=s, sequence_number=s))
        return out

    plan = [cars(0), cars(100), cars(100), cars(200), cars(200), cars(300), cars(400)]  # two redeliveries
    for sent in plan:
        await ingestor.ingest(sent)
    charged = sum(d["cost"]["day"]["cpuMs"] for d in store.documents("vehicles"))
    assert charged == pytest.approx(1000.0 * (len(plan) - 1))


async def test_a_replayed_batch_counts_no_message_twice_and_what_it_did_not_write_costs_nothing() -> None:
    store, clock = ChargingStore(), Clock(DAY_1)
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=CostMeter(clock))
    batches = [batch(10, s) for s in range(1, 4)]
    for b in batches:
        await ingestor.ingest(b)
    writes = sum(store.writes.values())
    before = {f"car-{n}": cost_of(store, f"car-{n}") for n in range(10)}
    # WHEN the last batch is redelivered to the warm ingestor: nothing to write
    report = await ingestor.ingest(batches[-1])
    assert report.accepted == 0
    assert sum(store.writes.values()) == writes
    assert {f"car-{n}": cost_of(store, f"car-{n}") for n in range(10)} == before
    # THEN the next batch counts only its own messages on top
    await ingestor.ingest(batch(10, 4))
    for n in range(10):
        cost = cost_of(store, f"car-{n}")
        assert cost["day"]["messages"] == 4 * (n % 3 + 1)
        assert cost["day"]["ru"] > before[f"car-{n}"]["day"]["ru"]


@pytest.mark.parametrize("first_big", [True, False])
async def test_a_batch_mixing_a_repeat_and_a_new_message_counts_the_new_ones_units_and_bytes(first_big: bool) -> None:
    """A redelivery overlapping a new message: the new one's own 4 KB units and bytes are counted, not the batch's
    average share (a 16 KB repeat and a 100-byte new message are one unit, not three)."""

    def sized(seq: int, samples: int) -> DeviceMessage:
        body = orjson.dumps(
            {
                "v": 1,
                "seq": seq,
                "samples": [{"ts": iso(seq + k / 1000), "signals": {"Vehicle.Speed": 1.0}} for k in range(samples)],
            }
        )
        return message("car-1", body, enqueued_s=seq, sequence_number=seq)

    store = ChargingStore()
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=CostMeter(Clock(DAY_1)))
    first, second = (sized(1, 250), sized(2, 1)) if first_big else (sized(1, 1), sized(2, 250))
    await ingestor.ingest([first])
    await ingestor.ingest([first, second])  # the first again, and a new one
    sizes = sorted(len(m.body) for m in (first, second))
    assert sizes[1] > 3 * 4096 > sizes[0]
    day = cost_of(store, "car-1")["day"]
    units = sum(-(-size // 4096) or 1 for size in sizes)
    assert (day["messages"], day["hubUnits"], day["bytes"]) == (2, units, sum(sizes))


async def test_an_erased_cars_messages_from_before_it_was_registered_again_count_no_units_nor_bytes() -> None:
    store = ChargingStore()
    registered = {"id": "car-1", "vehicleId": "car-1", "type": "vehicle", "notBefore": iso(10)}
    await store.create("vehicles", registered)
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=CostMeter(Clock(DAY_1)))
    before = message("car-1", drive(1, 1, speed=1.0, soc=50.0, odo=10.0), enqueued_s=5, sequence_number=1)
    after = message("car-1", drive(2, 12, speed=2.0), enqueued_s=12, sequence_number=2)
    assert len(before.body) != len(after.body)
    report = await ingestor.ingest([before, after])
    assert (report.erased, report.accepted) == (1, 1)
    day = cost_of(store, "car-1")["day"]
    assert (day["messages"], day["hubUnits"], day["bytes"]) == (1, 1, len(after.body))


async def test_a_replay_through_a_cold_ingestor_counts_no_message_twice() -> None:
    store, clock = ChargingStore(), Clock(DAY_1)
    first = batch(5, 1)
    await TelemetryIngestor(store, MemoryDeadLetterSink(), cost=CostMeter(clock)).ingest(first)
    cold = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=CostMeter(clock))
    await cold.ingest(first)  # a host restart redelivers it: all duplicates
    await cold.ingest(batch(5, 2))
    for n in range(5):
        assert cost_of(store, f"car-{n}")["day"]["messages"] == 2 * (n % 3 + 1)


async def test_days_and_months_roll_over_and_keep_the_previous_one() -> None:
    store, clock = ChargingStore(), Clock(DAY_1)
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=CostMeter(clock))
    await ingestor.ingest(batch(3, 1))
    await ingestor.ingest(batch(3, 2))
    clock.now = DAY_1 + dt.timedelta(minutes=5)  # 1 February, 00:03
    await ingestor.ingest(batch(3, 3))
    cost = cost_of(store, "car-2")
    assert cost["prevDay"]["on"] == "2026-01-31"
    assert cost["prevDay"]["messages"] == 6
    assert cost["day"] == {**cost["day"], "on": "2026-02-01", "messages": 3, "since": "2026-02-01T00:03:00Z"}
    assert cost["prevMonth"]["on"] == "2026-01"
    assert cost["prevMonth"]["messages"] == 6
    assert cost["month"] == {**cost["month"], "on": "2026-02", "messages": 0}  # no closed day yet
    assert month_to_date(cost)["messages"] == 3
    # the view reads a period the clock has left as the previous one
    view = vehicle_cost(cost, DAY_1 + dt.timedelta(days=1, minutes=5))
    assert view["today"] is None
    assert view["previousDay"]["period"] == "2026-02-01"
    assert view["monthToDate"]["period"] == "2026-02"


@given(
    st.lists(
        st.tuples(st.integers(0, 60 * 24 * 70), st.floats(0, 50), st.integers(0, 20)),
        min_size=1,
        max_size=30,
    )
)
def test_record_keeps_every_charge_in_exactly_one_day_and_one_month(steps: list[tuple[int, float, int]]) -> None:
    """Whatever the order of the clock (a little behind on another instance, too), the day and month blocks plus
    the previous ones never lose or double what was recorded within the last day or month."""
    doc: VehicleDocument = {"id": "c", "vehicleId": "c", "type": "vehicle"}
    start = dt.datetime(2026, 12, 30, tzinfo=dt.UTC)
    recorded: list[tuple[dt.datetime, int]] = []
    for minutes, ru, messages in sorted(steps):
        now = start + dt.timedelta(minutes=minutes)
        meter.record(doc, When.of(now), Charges(ru=ru, requests=1, estimated=True), messages, messages, 100 * messages)
        if ru or messages:  # nothing to record opens no period
            recorded.append((now, messages))
    cost = doc.get("cost")
    if cost is None:
        assert all(ru == 0 and m == 0 for _, ru, m in steps)
        return
    last = recorded[-1][0]
    today = sum(m for when, m in recorded if when.date() == last.date())
    this_month = sum(m for when, m in recorded if (when.year, when.month) == (last.year, last.month))
    assert cost["day"]["messages"] == today
    assert month_to_date(cost)["messages"] == this_month
    for key, form in (("prevDay", "%Y-%m-%d"), ("prevMonth", "%Y-%m")):  # the last period before, whole
        if key in cost:
            on = cost[key]["on"]  # type: ignore[literal-required]
            assert cost[key]["messages"] == sum(m for when, m in recorded if when.strftime(form) == on)  # type: ignore[literal-required]
    assert cost["day"]["hubUnits"] == today
    assert cost["day"]["bytes"] == 100 * today


async def test_the_view_estimates_the_month_in_usd_and_the_brand_sums_its_cars() -> None:
    store, clock = ChargingStore(), Clock(DAY_1 - dt.timedelta(hours=1))
    ingestor = TelemetryIngestor(store, MemoryDeadLetterSink(), cost=CostMeter(clock))
    for s in range(1, 6):
        clock.now += dt.timedelta(minutes=1)
        await ingestor.ingest(batch(6, s))
    costs = [{"cost": d["cost"]} for d in store.documents("vehicles")]
    view = vehicle_cost(costs[0]["cost"], clock.now)
    assert view["estimated"] is True
    assert view["monthlyUsd"] is not None
    assert view["monthlyUsd"] > 0
    assert set(view["monthlyUsdByService"]) >= {"IoT Hub", "Cosmos DB", "Functions"}
    brand = brand_cost("b", [*costs, {"cost": None}], clock.now)
    assert brand["cars"] == 6
    assert brand["days"][0]["period"] == "2026-01-31"
    assert brand["days"][0]["messages"] == sum(c["cost"]["day"]["messages"] for c in costs)
    assert brand["monthlyUsdPerCar"] is not None
    assert brand["monthlyUsdPerCar"] > 0


async def test_without_a_meter_the_document_carries_no_cost() -> None:
    store = ChargingStore()
    await TelemetryIngestor(store, MemoryDeadLetterSink()).ingest(batch(3, 1))
    assert all("cost" not in d for d in store.documents("vehicles"))
