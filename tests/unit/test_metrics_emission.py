"""Metrics where the facts are known: recorded through shared/observability/metrics.py into a real SDK
MeterProvider with an InMemoryMetricReader (no mocks), and read back as the local views read them."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator

import azure.functions as func
import orjson
import pytest
from azure.functions.meta import Datum
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared.containers import partition_keys
from shared.cost.meter import CostMeter
from shared.observability import metrics
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from tests.cost_support import ChargingStore
from tests.factories import drive, message


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """A provider of the test's own (the global one can be set once per process)."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics.use_meter_provider(provider)
    yield reader
    metrics.use_meter_provider(None)
    provider.shutdown()


def view(reader: InMemoryMetricReader, name: str) -> list[metrics.Series]:
    return metrics.snapshot(reader).get(name, [])


def partition_event(partition: str, enqueued: dt.datetime, seq: int) -> func.EventHubEvent:
    """An event as the Functions host hands it over, with the batch's `PartitionContext` trigger metadata."""
    context = {"EventHubName": "telemetry", "ConsumerGroup": "functions", "PartitionId": partition}
    return func.EventHubEvent(
        body=b"{}",
        trigger_metadata={"PartitionContext": Datum(orjson.dumps(context).decode(), "json")},
        enqueued_time=enqueued.replace(tzinfo=None),
        sequence_number=seq,
        iothub_metadata={},
    )


async def test_a_telemetry_batch_counts_its_messages_by_outcome_and_reason(reader: InMemoryMetricReader) -> None:
    # GIVEN a batch with good messages, a replay, a broken message and a car whose document breaks the fold
    store, letters = MemoryDocumentStore(partition_keys()), MemoryDeadLetterSink()
    await store.create("vehicles", {"id": "car-9", "vehicleId": "car-9", "state": {"signals": "oops"}})
    batch = [
        message("car-1", drive(1, 1, speed=1.0, soc=50.0)),
        message("car-1", drive(1, 1, speed=1.0, soc=50.0)),  # the same seq again: a duplicate
        message("car-2", drive(1, 1, speed=2.0)),
        message("car-3", b'{"v": 1, "seq": "broken"'),
        message("car-9", drive(1, 1, speed=3.0)),
    ]
    # WHEN it is ingested and its report recorded
    report = await TelemetryIngestor(store, letters).ingest(batch)
    report.record_metrics()
    # THEN the counters say what the report says, by outcome and reason
    rows = view(reader, "carlink.ingest.messages")
    assert metrics.total(rows, outcome="accepted") == report.accepted == 2
    assert metrics.total(rows, outcome="duplicate") == report.duplicates == 1
    assert metrics.total(rows, outcome="dead_letter", reason="invalid_json") == 1
    assert metrics.total(rows, outcome="parked", reason="processing_error") == report.parked == 1
    samples = view(reader, "carlink.ingest.samples")
    assert metrics.total(samples, outcome="accepted") == report.samples


def test_a_committed_batch_records_its_lag_and_partition(reader: InMemoryMetricReader) -> None:
    # GIVEN two batches of partition 3 whose oldest events were enqueued 2 s and 30 s ago, one of 7 failing
    now = dt.datetime.now(dt.UTC)
    first = [partition_event("3", now - dt.timedelta(seconds=2), 10), partition_event("3", now, 11)]
    second = [partition_event("3", now - dt.timedelta(seconds=30), 12)]
    # WHEN they finish
    metrics.observe_batch("ingest_telemetry", first, committed=True)
    metrics.observe_batch("ingest_telemetry", second, committed=True)
    metrics.observe_batch("ingest_telemetry", [partition_event("7", now, 1)], committed=False)
    # THEN partition 3's lag histogram holds the batches' oldest events; partition 7 counts a failed batch
    [lag] = view(reader, "carlink.ingest.lag")
    assert lag.attributes == {"function": "ingest_telemetry", "partition": "3"}
    assert lag.count == 2
    assert lag.minimum is not None
    assert 2 <= lag.minimum < 30
    assert lag.maximum is not None
    assert lag.maximum >= 30
    batches = view(reader, "carlink.ingest.batches")
    assert metrics.total(batches, partition="3", outcome="committed") == 2
    assert metrics.total(batches, partition="7", outcome="failed") == 1
    assert metrics.total(batches, partition="7", outcome="committed") == 0


def test_percentiles_come_from_the_histogram_within_its_buckets(reader: InMemoryMetricReader) -> None:
    for value in [0.2] * 90 + [7.0] * 10:
        metrics.record("carlink.ingest.lag", value, {"function": "f", "partition": "0"})
    lag = metrics.merged(view(reader, "carlink.ingest.lag"))
    assert lag is not None
    assert lag.count == 100
    p50, p95 = metrics.percentile(lag, 0.5), metrics.percentile(lag, 0.95)
    assert p50 is not None
    assert 0.1 <= p50 <= 0.25
    assert p95 is not None
    assert 5.0 <= p95 <= 7.0


def test_a_name_outside_the_catalogue_is_refused(reader: InMemoryMetricReader) -> None:
    with pytest.raises(KeyError):
        metrics.add("carlink.not.in.the.catalogue", 1)


async def test_settled_commands_count_their_outcome_and_latency_once(reader: InMemoryMetricReader) -> None:
    from tests.unit.test_commands import CAR, OPERATOR, World

    # GIVEN a moving car, one unlock (rejected on its preconditions) and one lock the car answers
    world = World()
    await world.car(**{"Vehicle_IsMoving": True, "Vehicle_Speed": 42.0})
    world.answer(200, {"status": "succeeded"})
    await world.service.issue(OPERATOR, CAR, "unlock", {}, "u")
    cmd, _ = await world.service.issue(OPERATOR, CAR, "lock", {}, "l")
    world.clock.now += dt.timedelta(seconds=3)
    # WHEN the lock is dispatched, and dispatched again (a redelivery changes nothing)
    await world.dispatch_all()
    await world.service.dispatch(CAR, cmd["commandId"])
    # THEN each settled command counted once, with its reason, and its time from accepted to settled
    outcomes = view(reader, "carlink.commands.outcomes")
    assert metrics.total(outcomes, command="unlock", status="rejected", reason="vehicle_moving") == 1
    assert metrics.total(outcomes, command="lock", status="succeeded") == 1
    assert metrics.total(outcomes) == 2
    latency = metrics.merged(view(reader, "carlink.commands.latency"), command="lock")
    assert latency is not None
    assert latency.count == 1
    assert latency.value == 3.0


async def test_sign_ins_count_each_flow_that_ended_by_its_outcome(reader: InMemoryMetricReader) -> None:
    from tests.accounts_support import CAR, OTHER_CAR
    from tests.accounts_support import World as Accounts

    world = Accounts()
    await world.register(CAR, OTHER_CAR)
    # GIVEN one driver who signs in, one who declines and a flow left to expire
    await world.sign_in(CAR, "1")
    await world.service.start(OTHER_CAR, "contoso-motors", "1", "r2")
    world.identity.answers = ["declined"]
    await world.run_polls()
    await world.service.start(OTHER_CAR, "contoso-motors", "2", "r3")
    world.now += dt.timedelta(minutes=16)
    await world.run_polls()
    # THEN each ended flow is counted once by outcome; pending polls are not outcomes
    signins = view(reader, "carlink.accounts.signins")
    assert {r.attributes["outcome"]: r.value for r in signins} == {"signed_in": 1, "declined": 1, "expired": 1}


async def test_the_local_host_serves_the_local_view_at_admin_metrics() -> None:
    import aiohttp

    from devstack.host.http_trigger import HttpHost

    # GIVEN the local stack's metrics (the global provider around local_reader(), as a stack starts them)
    metrics.configure_local_metrics()
    metrics.use_meter_provider(None)
    metrics.local_view().reset()
    metrics.add("carlink.ingest.messages", 7, {"outcome": "accepted"})
    metrics.record("carlink.ingest.lag", 0.3, {"function": "ingest_telemetry", "partition": "1"})
    host = HttpHost([], Counter())
    await host.start("127.0.0.1", 0)
    try:
        # WHEN the host is asked, twice (the view adds the reader's deltas up: a second read loses nothing)
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.get(f"http://127.0.0.1:{host.port}/admin/metrics") as response:
                    assert response.status == 200
                    body = await response.json()
    finally:
        await host.stop()
    # THEN it answers what was recorded since the reset
    [accepted] = body["carlink.ingest.messages"]["series"]
    assert (accepted["attributes"], accepted["value"]) == ({"outcome": "accepted"}, 7.0)
    [lag] = body["carlink.ingest.lag"]["series"]
    assert (lag["count"], lag["max"]) == (1, 0.3)
    assert 0.25 <= lag["p50"] <= 0.3


def test_locally_the_metrics_can_go_to_the_console(capsys: pytest.CaptureFixture[str]) -> None:
    assert metrics.exporting_readers({}) == []
    [reader] = metrics.exporting_readers({"OTEL_METRICS_EXPORTER": "console"})
    provider = MeterProvider(metric_readers=[reader])
    metrics.use_meter_provider(provider)
    try:
        metrics.add("carlink.accounts.signins", 1, {"outcome": "signed_in"})
        provider.force_flush()
    finally:
        metrics.use_meter_provider(None)
        provider.shutdown()
    printed = capsys.readouterr().out
    assert '"name": "carlink.accounts.signins"' in printed
    assert '"outcome": "signed_in"' in printed


async def test_the_cost_meter_counts_the_carried_charges_it_had_to_drop(reader: InMemoryMetricReader) -> None:
    costs = CostMeter()
    ingestor = TelemetryIngestor(ChargingStore(), MemoryDeadLetterSink(), cost=costs, concurrency=1, carried_cars=1)
    await ingestor.ingest([message("car-1", drive(1, 1, speed=1.0)), message("car-2", drive(1, 1, speed=1.0))])
    assert costs.dropped_ru > 0
    rows = view(reader, "carlink.cost.carried_dropped")
    assert metrics.total(rows, reason="full") == pytest.approx(costs.dropped_ru)
