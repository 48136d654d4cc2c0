"""The ingestion backlog (shared/observability/backlog.py): each consumer's distance behind its partitions, from
the partitions' last sequence numbers and the checkpoints, recorded as `carlink.ingest.backlog` into a real SDK
MeterProvider. Both sources are the interfaces' local implementations (the local stack's in-memory hubs, a
checkpoint table); tests/integration/test_backlog_checkpoints.py reads real checkpoint blobs from Azurite."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from devstack.eventhubs import LOCAL_NAMESPACE, EventHubsNamespace, LocalPartitionPositions
from shared.observability import metrics
from shared.observability.backlog import (
    BACKLOG,
    CheckpointSource,
    PartitionEnd,
    PartitionPositions,
    backlog_of,
    checkpoint_blob_name,
    measure_backlog,
)
from shared.settings import SETTINGS
from tests.unit import test_metrics_emission

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
reader = test_metrics_emission.reader  # the fixture: a MeterProvider of the test's own


class CheckpointTable(CheckpointSource):
    """Checkpoints by (namespace, hub, consumer group): what a blob listing returns, without the blobs."""

    def __init__(self, table: Mapping[tuple[str, str, str], Mapping[str, int]]) -> None:
        self.table = table
        self.asked: list[tuple[str, str, str]] = []

    async def checkpoints(self, namespace: str, hub: str, consumer_group: str) -> Mapping[str, int]:
        self.asked.append((namespace, hub, consumer_group))
        return self.table.get((namespace, hub, consumer_group), {})


class Unreachable(PartitionPositions):
    """A namespace whose hub `broken` cannot be read (the others come from the local hubs)."""

    def __init__(self, inner: PartitionPositions) -> None:
        self.namespace = inner.namespace
        self.inner = inner

    async def partitions(self, hub: str) -> list[PartitionEnd]:
        if hub == "broken":
            raise ConnectionError("no route to the namespace")
        return list(await self.inner.partitions(hub))


def fill(hubs: EventHubsNamespace, hub: str, per_partition: Mapping[int, int]) -> None:
    """Append events until each partition holds the given count (device ids found by the hub's own hash)."""
    target = hubs.hub(hub)
    for partition, count in per_partition.items():
        device = next(f"car-{n}" for n in range(10_000) if target.partition_for(f"car-{n}") == partition)
        for _ in range(count):
            target.append(device, b"{}", {}, {"connection-device-id": device}, NOW)


def test_checkpoint_blobs_are_named_as_the_functions_extension_names_them() -> None:
    name = checkpoint_blob_name("Carlink-EH.servicebus.windows.net", "Telemetry", "$Default", "3")
    assert name == "carlink-eh.servicebus.windows.net/telemetry/$default/checkpoint/3"


def test_the_backlog_counts_events_after_the_checkpoint() -> None:
    assert backlog_of(PartitionEnd("0", 0, 99), 89) == 10
    assert backlog_of(PartitionEnd("0", 0, 99), 99) == 0
    assert backlog_of(PartitionEnd("0", 0, 99), None) == 100  # no checkpoint yet: the consumer starts at 0
    assert backlog_of(PartitionEnd("0", 50, 99), None) == 50  # events before 50 expired (retention)
    assert backlog_of(PartitionEnd("0", 50, 99), 10) == 50  # a checkpoint older than the retention
    assert backlog_of(PartitionEnd("0", 0, -1, empty=True), None) == 0


@given(
    beginning=st.integers(0, 10**12),
    retained=st.integers(0, 10**6),
    checkpoint=st.none() | st.integers(-1, 10**12 + 10**6),
)
def test_the_backlog_is_the_retained_events_the_consumer_has_not_processed(
    beginning: int, retained: int, checkpoint: int | None
) -> None:
    last = beginning + retained - 1
    end = PartitionEnd("0", beginning, last, empty=retained == 0)
    done = -1 if checkpoint is None else checkpoint
    # the events beginning..last whose sequence number is after the checkpoint, counted without the formula
    expected = retained - min(retained, max(0, done - beginning + 1))
    assert backlog_of(end, checkpoint) == expected


async def test_each_consumer_partition_records_its_backlog(reader: InMemoryMetricReader) -> None:
    # GIVEN the local hubs: telemetry with 5, 3, 0 and 2 events in its partitions, requests with 1 in partition 2
    hubs = EventHubsNamespace()
    fill(hubs, "telemetry", {0: 5, 1: 3, 3: 2})
    fill(hubs, "requests", {2: 1})
    # AND the telemetry consumer checkpointed event 4 of partition 0 and event 0 of partition 1; requests nothing
    checkpoints = CheckpointTable({(LOCAL_NAMESPACE, "telemetry", "functions"): {"0": 4, "1": 0}})

    # WHEN the backlog is measured for both consumers
    found = await measure_backlog(
        LocalPartitionPositions(hubs),
        checkpoints,
        {"ingest_telemetry": "telemetry", "handle_requests": "requests"},
    )

    # THEN each partition's distance is the events after its checkpoint
    by_partition = {(b.function, b.partition): b.events for b in found}
    assert by_partition == {
        ("ingest_telemetry", "0"): 0,
        ("ingest_telemetry", "1"): 2,
        ("ingest_telemetry", "2"): 0,
        ("ingest_telemetry", "3"): 2,  # never checkpointed: both events wait
        ("handle_requests", "0"): 0,
        ("handle_requests", "1"): 0,
        ("handle_requests", "2"): 1,
        ("handle_requests", "3"): 0,
    }
    assert checkpoints.asked == [
        (LOCAL_NAMESPACE, "telemetry", "functions"),
        (LOCAL_NAMESPACE, "requests", "functions"),
    ]
    # AND each is one value of the histogram, attributed to its function, hub and partition
    series = {
        (s.attributes["function"], s.attributes["hub"], s.attributes["partition"]): (s.count, s.value)
        for s in metrics.snapshot(reader)[BACKLOG]
    }
    assert series[("ingest_telemetry", "telemetry", "1")] == (1, 2.0)
    assert series[("handle_requests", "requests", "2")] == (1, 1.0)
    assert len(series) == 8


async def test_a_hub_that_cannot_be_read_does_not_hide_the_others(
    reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    hubs = EventHubsNamespace(partitions=2)
    fill(hubs, "telemetry", {1: 3})
    found = await measure_backlog(
        Unreachable(LocalPartitionPositions(hubs)),
        CheckpointTable({}),
        {"dead_letter_unrouted": "broken", "ingest_telemetry": "telemetry"},
    )
    assert [(b.hub, b.partition, b.events) for b in found] == [("telemetry", "0", 0), ("telemetry", "1", 3)]
    assert "backlog of dead_letter_unrouted (event hub broken) not measured" in caplog.text


async def test_the_default_consumers_are_the_apps_event_hubs_triggers(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN hub names from the settings
    monkeypatch.setenv("TELEMETRY_EVENTHUB", "t-hub")
    monkeypatch.setenv("REQUESTS_EVENTHUB", "r-hub")
    monkeypatch.setenv("UNROUTED_EVENTHUB", "u-hub")
    checkpoints = CheckpointTable({})
    # WHEN measured without naming consumers
    found = await measure_backlog(LocalPartitionPositions(EventHubsNamespace(partitions=1)), checkpoints)
    # THEN every Event Hubs trigger of the app is measured on the hub its setting names
    assert {(b.function, b.hub) for b in found} == {
        ("ingest_telemetry", "t-hub"),
        ("handle_requests", "r-hub"),
        ("dead_letter_unrouted", "u-hub"),
    }
    # AND those are the app's Event Hubs triggers and their hubs, as the host binds them
    from devstack.function_index import indexed_functions
    from devstack.host.bindings import function_specs

    environ = {s.name: s.default for s in SETTINGS if s.default is not None} | dict(os.environ)
    bound = {
        spec.name: spec.trigger["eventHubName"]
        for spec in function_specs(indexed_functions().values(), environ)
        if spec.trigger_type == "eventHubTrigger"
    }
    assert bound == {"ingest_telemetry": "t-hub", "handle_requests": "r-hub", "dead_letter_unrouted": "u-hub"}
