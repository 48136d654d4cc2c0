"""The fleet API against the local Cosmos server, the Graph sandbox and the real ingestion and calendar sync:
the queries page on the server's query subset, and erasure leaves no document behind in any container."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from devstack.graph_sandbox import GraphSandbox, serve
from shared.calendar.config import CalendarSettings
from shared.calendar.jobs import MemorySyncQueue, SyncJob
from shared.calendar.sync import CalendarSync
from shared.containers import partition_keys
from shared.drivers.link import DriverLinks, parse_link
from shared.fleet.service import FleetService
from shared.graph.msgraph_client import MsGraphClient
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.meetings.service import MeetingService
from shared.stores.cosmos import CosmosDocumentStore
from shared.stores.memory import MemoryDeadLetterSink
from shared.telemetry.gaps import DATED_FROM_QUERY
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import drive, iso, message
from tests.fleet_support import BRAND, FLEET, add_fleet, api_app, request

pytestmark = pytest.mark.integration
NOTIFY_URL = "https://fleet.example/api/graph/notifications"


@dataclasses.dataclass
class Stack:
    store: CosmosDocumentStore
    sandbox: GraphSandbox
    sync: CalendarSync
    service: FleetService
    gateway: MemoryIoTHubGateway
    queue: MemorySyncQueue
    graph: MsGraphClient

    async def call(self, method: str, path: str, query: Any = None, body: Any = b"") -> Any:
        answer = await request(api_app(self.service), method, path, query, body)
        assert answer.status < 300, answer.body
        return answer.json if answer.body else None

    async def everything(self) -> list[dict[str, Any]]:
        """Every document of every container, read back from the server (cross-partition)."""
        out: list[dict[str, Any]] = []
        for container in partition_keys():
            out += await self.store.query(container, "SELECT * FROM c")
        return out


@pytest.fixture
async def stack(cosmos_store: CosmosDocumentStore) -> AsyncIterator[Stack]:
    box = GraphSandbox()
    now = dt.datetime.now(dt.UTC)
    async with serve(box) as url:
        graph = MsGraphClient.create(url, None, max_retries=0)
        gateway, queue = MemoryIoTHubGateway(), MemorySyncQueue()
        settings = dataclasses.replace(CalendarSettings(), notification_url=NOTIFY_URL)
        sync = CalendarSync(cosmos_store, graph, gateway, queue, settings, lambda: now)

        async def forget(user: str, vehicle: str | None) -> None:
            await sync.run(SyncJob(user, "erasure", vehicle_id=vehicle))

        links = DriverLinks(cosmos_store, queue, lambda: now)
        service = FleetService(cosmos_store, gateway, links, forget, lambda: now, graph=lambda: graph)
        await add_fleet(cosmos_store)
        yield Stack(cosmos_store, box, sync, service, gateway, queue, graph)


async def ingest(store: CosmosDocumentStore, vehicle: str, seconds: range, **signals: Any) -> None:
    batch = [message(vehicle, drive(t + 1, t, **signals), enqueued_s=t, sequence_number=t) for t in seconds]
    await TelemetryIngestor(store, MemoryDeadLetterSink()).ingest(batch)


async def test_history_trips_and_alerts_page_on_the_local_server(stack: Stack) -> None:
    car = f"car-{uuid.uuid4().hex[:8]}"
    await ingest(stack.store, car, range(0, 40), lv="ON", speed=30.0, lat=52.0, lon=10.0, dtc=["P0300", "P0171"])
    vehicle = f"/api/vehicles/{car}"
    seqs: list[int] = []
    token = None
    while True:
        query = {"from": iso(0), "to": iso(50), "limit": "1", **({"continuationToken": token} if token else {})}
        page = await stack.call("GET", f"{vehicle}/telemetry", query)
        seqs += [m["seq"] for m in page["items"]]
        token = page["continuationToken"]
        if token is None:
            break
    assert sorted(seqs) == list(range(1, 41))
    # two alerts raised at the same instant: ties on raisedAt page without loss or repetition
    ids: list[str] = []
    token = None
    while True:
        query = {"limit": "1", **({"continuationToken": token} if token else {})}
        page = await stack.call("GET", f"{vehicle}/alerts", query)
        ids += [a["id"] for a in page["items"]]
        token = page["continuationToken"]
        if token is None:
            break
    assert len(ids) == len(set(ids)) == 2
    acked = await stack.call("POST", f"{vehicle}/alerts/{ids[0]}/ack")
    assert acked["acknowledged"] is True
    listed = await stack.call("GET", f"{vehicle}/alerts")
    assert sorted(a["acknowledged"] for a in listed["items"]) == [False, True]  # the ack is no alert itself
    trips = await stack.call("GET", f"{vehicle}/trips")
    assert [t["status"] for t in trips["items"]] == ["open"]


async def test_a_drivers_alert_pages_hold_their_time_and_the_cars_condition_on_the_local_server(stack: Stack) -> None:
    """From a driver's `since` on, plus the trouble codes from before still active in their time (the car's
    state): the query's OR clause and ARRAY_CONTAINS run on the server, one alert a page."""
    car = f"car-{uuid.uuid4().hex[:8]}"
    await ingest(stack.store, car, range(0, 5), lv="ON", speed=30.0, dtc=["P0300", "P0171"])
    await ingest(stack.store, car, range(5, 10), lv="ON", speed=30.0, dtc=["P0300"])  # P0171 cleared at 5
    await stack.store.upsert("alerts", {"id": f"{car}:speeding", "vehicleId": car, "type": "alert", "key": "speeding",
                                        "status": "active", "raisedAt": iso(1), "clearedAt": None,
                                        "kind": "speeding"})  # fmt: skip
    await ingest(stack.store, car, range(100, 102), lv="ON", speed=30.0, dtc=["P0300", "P0420"])
    await ingest(stack.store, car, range(102, 103), lv="ON", speed=30.0, dtc=["P0420"])  # P0300 cleared in it

    async def pages(since: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        token = None
        while True:
            page = await stack.service.alerts(car, 1, token, since=since)
            found += [(a.get("code") or a["kind"], a["status"]) for a in page["items"]]
            token = page["continuationToken"]
            if token is None:
                return found

    assert await pages(iso(50)) == [("P0420", "active"), ("P0300", "cleared")]
    assert await pages(iso(103)) == [("P0420", "active")], "a trouble code cleared before their time is theirs"
    everyone = await stack.service.alerts(car, 10, None)
    assert sorted(a.get("code") or a["kind"] for a in everyone["items"]) == ["P0171", "P0300", "P0420", "speeding"]


async def test_a_drivers_gap_summary_is_dated_by_the_loss_on_the_local_server(stack: Stack) -> None:
    """Gap reports are a driver's when the loss began in their time (`fromTs`), or, undated (a reset store), when
    they arrived: the query's OR with IS_STRING runs on the server, and a late report of an earlier loss is not
    counted."""
    car = f"car-{uuid.uuid4().hex[:8]}"
    reports = [("early-loss-late-report", iso(10), iso(200), 5), ("undated", None, iso(150), 7),
               ("undated-before", None, iso(20), 11), ("in-time", iso(120), iso(130), 13)]  # fmt: skip
    for name, lost, reported, samples in reports:
        await stack.store.upsert("gaps", {"id": f"{car}:{name}", "vehicleId": car, "type": "gap", "fromTs": lost,
                                          "toTs": lost, "samples": samples, "reportedAt": reported})  # fmt: skip
    found = await stack.store.query("gaps", DATED_FROM_QUERY, {"@v": car, "@s": iso(100)}, partition_key=car)
    assert sorted(d["id"] for d in found) == [f"{car}:in-time", f"{car}:undated"]
    summary = await stack.service._gaps_since(car, iso(100))
    assert summary == {"count": 2, "samples": 20, "unknown": 0, "lastAt": iso(150)}


async def test_the_fleet_list_pages_across_partitions(stack: Stack) -> None:
    prefix = f"pg-{uuid.uuid4().hex[:6]}"
    cars = [f"{prefix}-{n}" for n in range(5)]
    for car in cars:
        await ingest(stack.store, car, range(1), speed=10.0)
    seen: list[str] = []
    token = None
    while True:
        query = {"limit": "3", **({"continuationToken": token} if token else {})}
        page = await stack.call("GET", "/api/vehicles", query)
        seen += [v["vehicleId"] for v in page["items"]]
        token = page["continuationToken"]
        if token is None:
            break
    assert [s for s in seen if s.startswith(prefix)] == cars
    assert len(seen) == len(set(seen))


async def test_erasure_leaves_no_document_of_the_car_or_the_driver_in_any_container(stack: Stack) -> None:
    # GIVEN a registered car with history, trips, alerts and an ack, a linked driver whose calendar was
    # synced (events, sync state, Graph subscription), a Teams meeting and a request record
    car, user = f"car-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    await stack.call("POST", f"/api/brands/{BRAND}/fleets/{FLEET}/vehicles", body={"vehicleId": car})
    await ingest(stack.store, car, range(0, 40), lv="ON", speed=30.0, lat=52.0, lon=10.0, dtc=["P0300"])
    alert = (await stack.call("GET", f"/api/vehicles/{car}/alerts"))["items"][0]
    await stack.call("POST", f"/api/vehicles/{car}/alerts/{alert['id']}/ack")
    link = {"userId": user, "upn": "d@contoso.com", "timeZone": "UTC", "consent": {"calendar": True, "location": True}}
    await DriverLinks(stack.store, stack.queue).link(car, parse_link(orjson.dumps(link)))
    start = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    stack.sandbox.add_event(user, "Customer visit", start, start + dt.timedelta(hours=1), join_url="https://teams/x")
    report = await stack.sync.run(SyncJob(user, "link", full=True))
    assert report.subscription == "created"
    agenda = await stack.call("GET", f"/api/vehicles/{car}/agenda")
    assert [e["subject"] for e in agenda["events"]] == ["Customer visit"]
    # Teams meetings created in the Graph sandbox through the real SDK: one for the event, one ad hoc from the car
    meetings = MeetingService(stack.store, stack.graph, lambda: dt.datetime.now(dt.UTC))
    created = [await meetings.ad_hoc(user, car, request_id, "Call") for request_id in ("req-1", "req-2")]
    assert [m.source for m in created] == ["created", "created"]
    assert len(stack.sandbox.meetings) == 2
    await stack.store.upsert("requests", {"id": "r-" + car, "vehicleId": car, "action": "meeting.join"})
    # and a car they drove before, whose handover to its next driver a failure cut short (shared/drivers/handover.py)
    former = f"car-{uuid.uuid4().hex[:8]}"
    await stack.call("POST", f"/api/brands/{BRAND}/fleets/{FLEET}/vehicles", body={"vehicleId": former})
    next_driver = {**link, "userId": str(uuid.uuid4()), "upn": "n@contoso.com"}
    await DriverLinks(stack.store, stack.queue).link(former, parse_link(orjson.dumps(next_driver)))
    stored = await stack.store.read("vehicles", former, former)
    assert stored is not None
    handed = {**stored.document, "handovers": [{"userId": user, "profile": None, "at": "2026-12-01T08:00:00.000Z"}]}
    await stack.store.replace("vehicles", handed, stored.etag)
    before = [d for d in await stack.everything() if car in str(d) or user in str(d)]
    assert {d.get("type") or d.get("kind") or d.get("action") for d in before} >= {
        "vehicle", "telemetry", "trip", "alert", "alertAck", "driver", "event", "syncState", "subscription",
        "meeting.join",
    }  # fmt: skip

    # WHEN the driver, then the car, are erased (each twice: idempotent)
    receipts = [await stack.call("DELETE", f"/api/drivers/{user}") for _ in range(2)]
    assert not [d for d in await stack.everything() if user in str(d)]
    assert stack.sandbox.subscriptions == {}  # deleted in Graph too
    assert stack.sandbox.meetings == {}  # and the Teams meetings the app created, through the real SDK
    assert len(stack.sandbox.deleted_meetings) == 2
    assert [r["graph"] for r in receipts] == [
        {"onlineMeetings": 2, "subscriptions": 1},
        {"onlineMeetings": 0, "subscriptions": 0},
    ]
    assert receipts[0]["documents"]["meetings"] == 2
    assert stack.gateway.desired.get(car, {}).get("agenda") is None
    for _ in range(2):
        assert (await request(api_app(stack.service), "DELETE", f"/api/vehicles/{car}")).status == 200

    # THEN no container holds anything of either, but the car's tombstone (no personal data)
    left = [d for d in await stack.everything() if car in str(d) or user in str(d)]
    assert [(d["type"], sorted(d)) for d in left] == [("erased", ["erasedAt", "id", "ttl", "type", "vehicleId"])]
    assert car not in stack.gateway.devices
