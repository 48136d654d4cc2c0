"""The cost meter's Graph calls and the brand's daily rollup against the local Cosmos server through the real SDK,
with Graph served by the sandbox through the real msgraph-sdk."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from devstack.graph_sandbox import GraphSandbox, serve
from shared.calendar.config import CalendarSettings
from shared.calendar.documents import SYNC_STATE_ID
from shared.calendar.jobs import SyncJob
from shared.calendar.sync import CalendarSync
from shared.containers import CALENDARS, TENANCY
from shared.cost import rollup
from shared.cost.meter import CostMeter
from shared.drivers.link import parse_link
from shared.graph.msgraph_client import MsGraphClient
from shared.stores.base import strip_system_properties
from shared.stores.cosmos import CosmosDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from tests.calendar_support import HOUR
from tests.factories import drive, message
from tests.fleet_support import Fleet

pytestmark = pytest.mark.integration


@pytest.fixture
async def graph() -> AsyncIterator[tuple[GraphSandbox, MsGraphClient]]:
    box = GraphSandbox()
    async with serve(box) as url:
        client = MsGraphClient.create(url, None, max_retries=0)
        yield box, client
        await client.close()


async def test_a_sync_carries_its_graph_calls_in_cosmos_and_the_car_shows_them(
    cosmos_store: CosmosDocumentStore, graph: tuple[GraphSandbox, MsGraphClient]
) -> None:
    box, client = graph
    brand, car = f"b-{uuid.uuid4().hex[:8]}", f"car-{uuid.uuid4().hex[:8]}"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    fleet = Fleet(store=cosmos_store, now=now)
    await fleet.register(brand, "f1", [car])
    user = str(uuid.uuid4())
    link = {"userId": user, "upn": "a@contoso.example", "timeZone": "UTC", "consent": {"calendar": True}}
    await fleet.links.link(car, parse_link(orjson.dumps(link)))
    for i in range(3):
        box.add_event(user, f"e{i}", now + i * HOUR, now + (i + 1) * HOUR)
    sync = CalendarSync(cosmos_store, client, fleet.gateway, fleet.queue, CalendarSettings(page_size=2), lambda: now)
    report = await sync.run(SyncJob(user, "test", full=True))
    assert report.outcome == "synced"
    sent = len(box.requests)
    assert sent == 2  # three events in pages of two; no notification URL, so no subscription
    stored = await cosmos_store.read(CALENDARS, user, SYNC_STATE_ID)
    assert stored is not None
    assert stored.document["graphCalls"]["day"] == {"on": now.strftime("%Y-%m-%d"), "calls": 2, "cars": {car: 2.0}}
    cost = (await fleet.call("GET", f"/api/vehicles/{car}")).json["cost"]
    assert cost["graphCallsToday"] == pytest.approx(float(sent))
    assert cost["graphCalls"] == pytest.approx(float(sent))


async def test_the_daily_rollup_writes_one_document_per_brand_and_day_and_the_route_reads_it(
    cosmos_store: CosmosDocumentStore,
) -> None:
    brand, cars = f"b-{uuid.uuid4().hex[:8]}", [f"car-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    today = dt.datetime.now(dt.UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    fleet = Fleet(store=cosmos_store, now=today)
    await fleet.register(brand, "f1", cars)
    yesterday = today - dt.timedelta(days=1)
    ingestor = TelemetryIngestor(cosmos_store, fleet.dead_letters, cost=CostMeter(lambda: yesterday))
    for seq in (1, 2):
        await ingestor.ingest(
            [message(c, drive(seq, seq, speed=30.0), enqueued_s=seq, sequence_number=seq) for c in cars]
        )
    day = yesterday.strftime("%Y-%m-%d")
    written = await rollup.roll_up_brand(cosmos_store, brand, today)
    assert written is not None
    stored = await cosmos_store.read(TENANCY, brand, rollup.cost_day_id(day))
    assert stored is not None
    document = strip_system_properties(stored.document)
    assert (document["cars"], document["messages"], document["estimated"]) == (2, 4, True)
    # a replay writes the same document
    assert await rollup.roll_up_brand(cosmos_store, brand, today) == written
    replayed = await cosmos_store.read(TENANCY, brand, rollup.cost_day_id(day))
    assert replayed is not None
    assert strip_system_properties(replayed.document) == document
    # the route reads the history from the brand's partition on the real server
    answer = (await fleet.call("GET", f"/api/brands/{brand}/cost", query={"days": "7"})).json
    assert [(h["period"], h["messages"], h["cars"]) for h in answer["history"]] == [(day, 4, 2)]
