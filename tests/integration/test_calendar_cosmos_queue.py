"""Calendar sync, driver links and car requests against the real local servers (Cosmos-compatible server,
Azurite queues), with Graph served by the sandbox through the real msgraph-sdk."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from devstack.graph_sandbox import GraphSandbox, serve
from shared.calendar.config import CALENDAR_SYNC_QUEUE, CalendarSettings
from shared.calendar.jobs import StorageSyncQueue, SyncJob
from shared.calendar.sync import CalendarSync
from shared.containers import CALENDARS, MEETINGS, REQUESTS, VEHICLES
from shared.device_messages import DeviceMessage
from shared.drivers.link import DriverLinks, parse_link
from shared.graph.msgraph_client import MsGraphClient
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.meetings.service import MeetingService
from shared.requests.processor import RequestProcessor
from shared.stores.base import Document
from shared.stores.cosmos import CosmosDocumentStore
from shared.stores.memory import MemoryDeadLetterSink
from shared.stores.storage_account import queue_service_client
from tests.calendar_support import HOUR, Clock

pytestmark = pytest.mark.integration


@pytest.fixture
async def queue(storage_connection_string: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StorageSyncQueue]:
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection_string)
    q = StorageSyncQueue(queue_service_client(), f"{CALENDAR_SYNC_QUEUE}-{uuid.uuid4().hex[:8]}")
    yield q
    await q.close()


@pytest.fixture
async def graph() -> AsyncIterator[tuple[GraphSandbox, MsGraphClient]]:
    box = GraphSandbox()
    async with serve(box) as url:
        client = MsGraphClient.create(url, None, max_retries=0)
        yield box, client
        await client.close()


async def received(q: StorageSyncQueue) -> list[SyncJob]:
    """What the queue trigger would get: the host base64-decodes each message."""
    jobs = []
    async for message in q._queue._queue.receive_messages():
        jobs.append(SyncJob.from_json(base64.b64decode(message.content)))
        await q._queue._queue.delete_message(message)
    return jobs


def ids() -> tuple[str, str]:
    return str(uuid.uuid4()), f"car-{uuid.uuid4().hex[:8]}"


async def test_link_enqueues_to_azurite_and_the_job_syncs_into_cosmos(
    cosmos_store: CosmosDocumentStore, queue: StorageSyncQueue, graph: tuple[GraphSandbox, MsGraphClient]
) -> None:
    box, client = graph
    user, vehicle = ids()
    clock = Clock(dt.datetime.now(dt.UTC).replace(microsecond=0))
    for i in range(5):
        box.add_event(user, f"event {i}", clock.now + i * HOUR, clock.now + (i + 1) * HOUR)
    # AND their car registered (a link names a car the platform knows)
    await cosmos_store.create(VEHICLES, {"id": vehicle, "vehicleId": vehicle})
    # WHEN the driver is linked (a fresh queue: the first send creates it)
    link = parse_link(
        orjson.dumps({"userId": user, "upn": "a@contoso.example", "timeZone": "UTC", "consent": {"calendar": True}})
    )
    await DriverLinks(cosmos_store, queue, clock).link(vehicle, link)
    # THEN one full job is queued, and running it stores the calendar in Cosmos and patches the twin
    (job,) = await received(queue)
    assert job == SyncJob(user, "link", full=True)
    gateway = MemoryIoTHubGateway()
    settings = dataclasses.replace(CalendarSettings(), page_size=2)
    sync = CalendarSync(cosmos_store, client, gateway, queue, settings, clock)
    report = await sync.run(job)
    assert (report.upserted, report.graph_requests) == (5, 3)
    query = "SELECT * FROM c WHERE c.userId = @u AND c.kind = @k"
    events = await cosmos_store.query(CALENDARS, query, {"@u": user, "@k": "event"}, user)
    assert sorted(e["subject"] for e in events) == [f"event {i}" for i in range(5)]
    assert len(gateway.desired[vehicle]["agenda"]["events"]) == 5
    # AND a second run resumes from the stored deltaLink: one Graph request, the state replaced by etag
    box.delete_event(user, next(iter(box.mailbox(user).events)))
    again = await sync.run(SyncJob(user, "timer"))
    assert (again.graph_requests, again.removed, again.outcome) == (1, 1, "synced")
    assert len(gateway.patches) == 2
    # AND the timer's query finds the linked driver across partitions
    drivers = await cosmos_store.query(CALENDARS, "SELECT c.userId FROM c WHERE c.kind = @k", {"@k": "driver"})
    assert {"userId": user} in drivers


class RacingTelemetry(CosmosDocumentStore):
    """Telemetry ingestion writes the vehicle between our read and our replace, once."""

    def __init__(self, inner: CosmosDocumentStore) -> None:
        self.__dict__.update(inner.__dict__)
        self.raced = False

    async def replace(self, container: str, document: Document, etag: str) -> str:
        if container == VEHICLES and not self.raced:
            self.raced = True
            current = await self.read(container, document["vehicleId"], document["id"])
            assert current is not None
            await super().replace(container, {**current.document, "lastSeen": "raced"}, current.etag)
        return await super().replace(container, document, etag)


async def test_linking_retries_on_412_and_keeps_what_telemetry_wrote(
    cosmos_store: CosmosDocumentStore, queue: StorageSyncQueue
) -> None:
    user, vehicle = ids()
    await cosmos_store.create(VEHICLES, {"id": vehicle, "vehicleId": vehicle, "lastSeen": "before", "state": {"a": 1}})
    store = RacingTelemetry(cosmos_store)
    link = parse_link(orjson.dumps({"userId": user, "upn": "a@contoso.example", "timeZone": "UTC", "consent": {}}))
    await DriverLinks(store, queue).link(vehicle, link)
    doc = (await cosmos_store.read(VEHICLES, vehicle, vehicle)).document  # type: ignore[union-attr]
    assert store.raced
    assert (doc["lastSeen"], doc["state"], doc["driver"]["userId"]) == ("raced", {"a": 1}, user)


async def test_meeting_join_replayed_against_cosmos_makes_one_meeting(
    cosmos_store: CosmosDocumentStore, queue: StorageSyncQueue, graph: tuple[GraphSandbox, MsGraphClient]
) -> None:
    box, client = graph
    user, vehicle = ids()
    clock = Clock(dt.datetime.now(dt.UTC))
    event_id = box.add_event(user, "Review", clock.now + HOUR, clock.now + 2 * HOUR)
    await cosmos_store.create(
        VEHICLES,
        {
            "id": vehicle,
            "vehicleId": vehicle,
            "driver": {"userId": user, "upn": "a@contoso.example", "timeZone": "UTC"},
            "consent": {"calendar": True, "location": False},
            "state": {"signals": {"Vehicle.IsMoving": {"value": True, "ts": "x"}}},
        },
    )
    await cosmos_store.upsert(
        CALENDARS,
        {"id": "driver", "userId": user, "kind": "driver", "vehicleId": vehicle, "consent": {"calendar": True}},
    )
    await CalendarSync(cosmos_store, client, MemoryIoTHubGateway(), queue, CalendarSettings(), clock).run(
        SyncJob(user, "test")
    )
    gateway = MemoryIoTHubGateway()
    processor = RequestProcessor(
        cosmos_store, gateway, MemoryDeadLetterSink(), MeetingService(cosmos_store, client, clock), queue
    )
    body = orjson.dumps({"v": 1, "requestId": str(uuid.uuid4()), "action": "meeting.join", "eventId": event_id})
    # the car asks twice with the same requestId (two events; a redelivered event is not answered twice)
    await processor.process([DeviceMessage(body, vehicle, None, 1)])
    await processor.process([DeviceMessage(body, vehicle, None, 2)])
    replies: list[dict[str, Any]] = [s.json() for s in gateway.sent]
    assert replies[0] == replies[1]
    assert replies[0]["status"] == "ok"
    assert replies[0]["audioOnly"] is True
    assert len(box.meetings) == 1
    meetings = await cosmos_store.query(MEETINGS, "SELECT * FROM c WHERE c.userId = @u", {"@u": user}, user)
    assert len(meetings) == 1
    records = await cosmos_store.query(REQUESTS, "SELECT * FROM c WHERE c.vehicleId = @v", {"@v": vehicle}, vehicle)
    assert [r["reply"] for r in records] == [replies[0]]


async def test_meeting_now_without_calendar_consent_answers_no_consent(
    cosmos_store: CosmosDocumentStore, queue: StorageSyncQueue, graph: tuple[GraphSandbox, MsGraphClient]
) -> None:
    # GIVEN a car whose linked driver withheld calendar consent
    box, client = graph
    user, vehicle = ids()
    clock = Clock(dt.datetime.now(dt.UTC))
    driver = {"userId": user, "upn": "a@contoso.example", "timeZone": "UTC"}
    await cosmos_store.create(
        VEHICLES, {"id": vehicle, "vehicleId": vehicle, "driver": driver, "consent": {"calendar": False}}
    )
    gateway = MemoryIoTHubGateway()
    processor = RequestProcessor(
        cosmos_store, gateway, MemoryDeadLetterSink(), MeetingService(cosmos_store, client, clock), queue
    )
    # WHEN the car asks for an ad-hoc meeting (made in the driver's name)
    body = orjson.dumps({"v": 1, "requestId": str(uuid.uuid4()), "action": "meeting.now", "subject": "Call"})
    await processor.process([DeviceMessage(body, vehicle, None, 1)])
    # THEN no_consent: no meeting in Graph, none stored
    [reply] = [s.json() for s in gateway.sent]
    assert (reply["status"], reply["error"]["code"]) == ("error", "no_consent")
    assert box.meetings == {}
    assert await cosmos_store.query(MEETINGS, "SELECT * FROM c WHERE c.userId = @u", {"@u": user}, user) == []
