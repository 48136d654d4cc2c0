"""Builders for the calendar, meeting and request tests: a clock, the Graph sandbox, a wired CalendarSync."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from devstack.graph_sandbox import GraphSandbox, serve
from shared.calendar.config import CalendarSettings
from shared.calendar.documents import DRIVER_ID, KIND_DRIVER
from shared.calendar.jobs import MemorySyncQueue
from shared.calendar.sync import CalendarSync
from shared.containers import CALENDARS, VEHICLES, partition_keys
from shared.device_messages import safe_id
from shared.graph.base import GraphClient
from shared.graph.msgraph_client import MsGraphClient
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.stores.base import DocumentStore
from shared.stores.memory import MemoryDocumentStore

NOW = dt.datetime(2026, 11, 21, 8, 0, tzinfo=dt.UTC)
USER = "7d3c0a51-2b7e-4c1f-9a43-3f1d2c6e8a01"
VEHICLE = "car-001"
HOUR = dt.timedelta(hours=1)
NOTIFY_URL = "https://fleet.example/api/graph/notifications"


@dataclass
class Clock:
    now: dt.datetime = NOW

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@dataclass
class World:
    """Everything a calendar test touches, in memory except Graph (the sandbox, through the real SDK)."""

    sandbox: GraphSandbox
    graph: GraphClient
    store: DocumentStore = field(default_factory=lambda: MemoryDocumentStore(partition_keys()))
    gateway: MemoryIoTHubGateway = field(default_factory=MemoryIoTHubGateway)
    queue: MemorySyncQueue = field(default_factory=MemorySyncQueue)
    clock: Clock = field(default_factory=Clock)
    settings: CalendarSettings = field(default_factory=CalendarSettings)

    def sync(self) -> CalendarSync:
        return CalendarSync(self.store, self.graph, self.gateway, self.queue, self.settings, self.clock)

    async def link(self, user: str = USER, vehicle: str = VEHICLE, calendar: bool = True) -> None:
        """As DriverLinks.link leaves it: the car names its driver, whose driver document names the car (the
        sync sends an agenda only to a car its driver drives)."""
        stored = await self.store.read(VEHICLES, vehicle, safe_id(vehicle))
        car = dict(stored.document) if stored is not None else {"id": safe_id(vehicle), "vehicleId": vehicle}
        await self.store.upsert(VEHICLES, {"type": "vehicle", **car, "driver": {"userId": user}})
        await self.store.upsert(
            CALENDARS,
            {
                "id": DRIVER_ID,
                "userId": user,
                "kind": KIND_DRIVER,
                "vehicleId": vehicle,
                "consent": {"calendar": calendar, "location": True},
            },
        )

    async def events(self, user: str = USER) -> dict[str, dict[str, Any]]:
        query = "SELECT * FROM c WHERE c.userId = @u AND c.kind = @k"
        docs = await self.store.query(CALENDARS, query, {"@u": user, "@k": "event"}, user)
        return {d["eventId"]: d for d in docs}

    def agenda(self, vehicle: str = VEHICLE) -> dict[str, Any]:
        agenda: dict[str, Any] = self.gateway.desired.get(vehicle, {}).get("agenda", {})
        return agenda


async def subscribe_driver(store: DocumentStore, user: str, subscription: str) -> str:
    """Store a driver's Graph subscription (as subscriptions.py does) and return its clientState."""
    from shared.calendar.documents import SUBSCRIPTION_ID
    from shared.calendar.subscriptions import new_client_state

    state = new_client_state(user)
    await store.upsert(
        CALENDARS,
        {
            "id": SUBSCRIPTION_ID,
            "userId": user,
            "kind": "subscription",
            "subscriptionId": subscription,
            "clientState": state,
            "expiresAt": "2026-11-23T00:00:00.000Z",
        },
    )
    return state


@contextlib.asynccontextmanager
async def sandbox_world() -> AsyncIterator[World]:
    """A World whose Graph is the sandbox served over HTTP through the real SDK (no retries: tests count calls)."""
    box = GraphSandbox()
    async with serve(box) as url:
        client = MsGraphClient.create(url, None, max_retries=0)
        yield World(box, client)
        await client.close()
