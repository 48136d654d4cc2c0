"""Checkpoints in the Functions Event Hubs extension's blob layout, on Azurite with the real blob SDK: the backlog's
reader (shared/observability/backlog.BlobCheckpoints) reads blobs laid out as Azure.Messaging.EventHubs'
BlobCheckpointStore writes them, and the local host's trigger writes the same blobs, so the backlog measured on
the local stack goes up while the consumer is stopped and back to 0 once it has caught up."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import azure.functions as func
import pytest
from azure.storage.blob.aio import BlobServiceClient, ContainerClient

from devstack.eventhubs import EventHubsNamespace, LocalPartitionPositions
from devstack.host.bindings import function_specs
from devstack.host.checkpoints import BlobCheckpointWriter
from devstack.host.eventhub_trigger import EventHubsOptions, EventHubTrigger
from shared.observability.backlog import CHECKPOINT_CONTAINER, BlobCheckpoints, measure_backlog

WAIT_SECONDS = 20.0


@pytest.fixture
async def container(storage_connection_string: str) -> AsyncIterator[ContainerClient]:
    async with BlobServiceClient.from_connection_string(storage_connection_string) as service:
        client = service.get_container_client(CHECKPOINT_CONTAINER)
        if not await client.exists():
            await client.create_container()
        yield client


@pytest.fixture
async def reader(storage_connection_string: str) -> AsyncIterator[BlobCheckpoints]:
    """The backlog's checkpoint reader, on its own client as the timer makes it."""
    reader = BlobCheckpoints(BlobServiceClient.from_connection_string(storage_connection_string))
    yield reader
    await reader.close()


@pytest.fixture
def namespace() -> str:
    """A namespace of the test's own, so tests sharing Azurite never read each other's checkpoints."""
    return f"ns-{uuid.uuid4().hex[:8]}.servicebus.windows.net"


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"still not {what} after {WAIT_SECONDS} s"
        await asyncio.sleep(0.05)


async def test_the_reader_reads_checkpoints_as_the_functions_extension_stores_them(
    container: ContainerClient, reader: BlobCheckpoints, namespace: str
) -> None:
    # GIVEN blobs as the extension (v5) leaves them: the checkpoints of consumer group `functions` of hub
    # `telemetry`, with the namespace, hub and group in lower case; ownership blobs beside them; another group's
    # checkpoint; and one checkpoint whose metadata is not a number
    base = f"{namespace}/telemetry/functions"
    blobs = {
        f"{base}/checkpoint/0": {"sequencenumber": "41", "offset": "8800"},
        f"{base}/checkpoint/1": {"sequencenumber": "7", "offset": "1400"},
        f"{base}/checkpoint/2": {"sequencenumber": "x", "offset": "0"},
        f"{base}/ownership/0": {"ownerid": "host-a"},
        f"{namespace}/telemetry/$default/checkpoint/3": {"sequencenumber": "99", "offset": "0"},
    }
    for name, metadata in blobs.items():
        await container.upload_blob(name, b"", overwrite=True, metadata=metadata)

    # WHEN the backlog's reader lists them, the names given as the trigger metadata spells them
    found = await reader.checkpoints(namespace.upper(), "Telemetry", "Functions")

    # THEN it has this group's checkpoints by partition, nothing else
    assert found == {"0": 41, "1": 7}


def consumer_app(handled: list[int]) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.function_name("ingest_telemetry")
    @app.event_hub_message_trigger(
        arg_name="events",
        connection="EVENTHUB",
        event_hub_name="telemetry",
        consumer_group="functions",
        cardinality=func.Cardinality.MANY,
    )
    async def ingest(events: list[func.EventHubEvent]) -> None:
        handled.extend(int(e.sequence_number or 0) for e in events)

    return app


async def test_stopping_the_consumer_grows_the_backlog_and_resuming_drains_it(
    storage_connection_string: str, reader: BlobCheckpoints, namespace: str
) -> None:
    # GIVEN the local host's trigger on a hub of 2 partitions, checkpointing to Azurite
    handled: list[int] = []
    [spec] = function_specs(consumer_app(handled).get_functions(), {})
    hubs = EventHubsNamespace(partitions=2)
    hub = hubs.hub("telemetry")
    writer = BlobCheckpointWriter(storage_connection_string, namespace)
    trigger = EventHubTrigger(
        spec, hubs, EventHubsOptions(max_batch_size=10, max_wait_seconds=0.05), Counter(), checkpoints=writer
    )
    positions = LocalPartitionPositions(hubs, namespace)
    now = dt.datetime.now(dt.UTC)

    def send(count: int) -> None:
        for n in range(count):
            hub.append(f"car-{n % 7}", b"{}", {}, {}, now)

    async def backlog() -> dict[str, int]:
        found = await measure_backlog(positions, reader, {"ingest_telemetry": "telemetry"})
        return {b.partition: b.events for b in found}

    tasks = trigger.tasks()
    try:
        # WHEN cars send while the consumer runs, THEN it catches up and its checkpoints say so
        send(30)

        async def caught_up() -> bool:
            return await backlog() == {"0": 0, "1": 0}

        await eventually(caught_up, "caught up")
        assert sorted(handled) == sorted(e.sequence_number for p in hub.partitions for e in p.events)

        # WHEN the consumer stops and cars send 40 more, THEN the backlog is exactly those 40
        trigger.pause()  # caught up: no batch under way, every checkpoint written
        send(40)
        stopped = await backlog()
        assert sum(stopped.values()) == 40
        assert stopped == {str(i): trigger_waiting(trigger, i) for i in range(2)}

        # WHEN it resumes, THEN the backlog drains to 0 on every partition
        trigger.resume()
        await eventually(caught_up, "drained")
        assert len(handled) == 70
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def trigger_waiting(trigger: EventHubTrigger, partition: int) -> int:
    """Events of a partition the local host has not processed (its own count, to compare with the checkpoints')."""
    return len(trigger.hub.partitions[partition].events) - trigger.positions[partition]
