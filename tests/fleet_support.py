"""Builders for the fleet API tests: the service on in-memory stores, fed by the real telemetry ingestion."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.calendar.jobs import MemorySyncQueue
from shared.containers import partition_keys
from shared.drivers.link import DriverLinks, parse_link
from shared.fleet.http import ApiRequest, handle
from shared.fleet.service import FleetService
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.stores.base import DocumentStore
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import T0, drive, message

USER = "7d3c0a51-2b7e-4c1f-9a43-3f1d2c6e8a01"
NOW = T0 + dt.timedelta(minutes=30)


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str | None
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Fleet:
    store: DocumentStore = field(default_factory=lambda: MemoryDocumentStore(partition_keys()))
    gateway: MemoryIoTHubGateway = field(default_factory=MemoryIoTHubGateway)
    queue: MemorySyncQueue = field(default_factory=MemorySyncQueue)
    forgotten: list[tuple[str, str | None]] = field(default_factory=list)
    now: dt.datetime = NOW

    async def _forget(self, user: str, vehicle: str | None) -> None:
        self.forgotten.append((user, vehicle))

    @property
    def service(self) -> FleetService:
        links = DriverLinks(self.store, self.queue, lambda: self.now)
        return FleetService(self.store, self.gateway, links, self._forget, lambda: self.now)

    async def call(
        self,
        method: str,
        route: str,
        params: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        body: bytes | Any = b"",
    ) -> Answer:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        result = await handle(route, ApiRequest(method, params or {}, query or {}, raw), self.service)
        return Answer(result.status, result.body, result.content_type, result.headers)

    async def drive(self, vehicle: str, seconds: range, **signals: Any) -> None:
        """Real ingestion: one message per second of `seconds` (seq = second + 1)."""
        batch = [message(vehicle, drive(t + 1, t, **signals), enqueued_s=t, sequence_number=t) for t in seconds]
        await TelemetryIngestor(self.store, MemoryDeadLetterSink()).ingest(batch)

    async def link_driver(self, vehicle: str, calendar: bool = True, location: bool = True) -> None:
        link = {"userId": USER, "upn": "driver@contoso.com", "timeZone": "Europe/Berlin"}
        link["consent"] = {"calendar": calendar, "location": location}  # type: ignore[assignment]
        await DriverLinks(self.store, self.queue, lambda: self.now).link(vehicle, parse_link(orjson.dumps(link)))
