"""Builders for the fleet API tests: the service on in-memory stores, fed by the real telemetry ingestion, and the
HTTP application called in process through httpx's ASGI transport (the same app function_app.py mounts)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from shared.api import runtime
from shared.api.app import create_fastapi
from shared.api.handlers import Shield
from shared.auth.access import Access, Grant, Resource
from shared.auth.policy import Requirement, Role
from shared.auth.principal import Principal
from shared.brands import BrandConfigs
from shared.calendar.jobs import MemorySyncQueue
from shared.containers import TENANCY, partition_keys
from shared.drivers.link import DriverLinks, parse_link
from shared.errors import AuthenticationError
from shared.fleet.service import FleetService
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.stores.base import DocumentStore
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry.ingest import TelemetryIngestor
from shared.tenancy.documents import BRAND_DOC_ID, fleet_doc_id
from tests.factories import T0, drive, message

BRAND, FLEET = "contoso", "berlin"
USER = "7d3c0a51-2b7e-4c1f-9a43-3f1d2c6e8a01"
NOW = T0 + dt.timedelta(minutes=30)
TOKEN = "Bearer test-token"
ADMIN = Principal(
    "0f5c2b7e-1111-4c1f-9a43-3f1d2c6e8a02", "tenant-1", "client-1", frozenset({"Platform.Admin"}), frozenset(), True
)


class OpenGatekeeper:
    """Any bearer token is a platform admin: these tests are about the routes, not access (the access matrix
    runs against the local OpenID provider's real tokens). A missing or non-bearer header is still a 401."""

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthenticationError("no bearer token")
        if not authorization.startswith("Bearer "):
            raise AuthenticationError("not a bearer token")
        return ADMIN

    async def authorize(self, principal: Principal, requirement: Requirement, params: Mapping[str, str]) -> Access:
        return Access(principal, (Grant(Role.PLATFORM_ADMIN),), Resource(params.get("brandId"), params.get("fleetId")))


@dataclass
class RecordingAudit:
    records: list[dict[str, Any]] = field(default_factory=list)

    async def record(
        self,
        actor: Any,
        requirement: Requirement,
        route_name: str,
        path_params: Mapping[str, str],
        outcome: str,
        status: int,
        client: Mapping[str, str],
    ) -> None:
        self.records.append(
            {"route": route_name, "params": dict(path_params), "outcome": outcome, "status": status, "actor": actor}
        )

    async def read(self, access: Any, brand_id: str | None, query: Any) -> dict[str, Any]:
        return {"items": [], "continuationToken": None}


@dataclass
class RecordingGraph:
    """Graph's online meetings as erasure sees them: which exist (user, meeting id), and what was deleted."""

    meetings: set[tuple[str, str]] = field(default_factory=set)
    deleted: list[tuple[str, str]] = field(default_factory=list)

    async def delete_meeting(self, user_id: str, meeting_id: str) -> bool:
        if (user_id, meeting_id) not in self.meetings:
            return False  # Graph answered 404
        self.meetings.discard((user_id, meeting_id))
        self.deleted.append((user_id, meeting_id))
        return True


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str | None
    headers: httpx.Headers

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
    gatekeeper: Any = field(default_factory=OpenGatekeeper)
    audit: RecordingAudit = field(default_factory=RecordingAudit)
    overrides: dict[Any, Any] = field(default_factory=dict)
    dead_letters: MemoryDeadLetterSink = field(default_factory=MemoryDeadLetterSink)
    graph: RecordingGraph = field(default_factory=RecordingGraph)

    async def _forget(self, user: str, vehicle: str | None) -> None:
        self.forgotten.append((user, vehicle))

    @property
    def links(self) -> DriverLinks:
        return DriverLinks(self.store, self.queue, lambda: self.now)

    @property
    def service(self) -> FleetService:
        return FleetService(
            self.store,
            self.gateway,
            self.links,
            self._forget,
            lambda: self.now,
            dead_letters=lambda: self.dead_letters,
            graph=lambda: self.graph,  # type: ignore[arg-type,return-value]
            brands=BrandConfigs(self.store),
        )

    def app(self) -> Shield:
        return api_app(
            self.service, links=self.links, gatekeeper=self.gatekeeper, audit=self.audit, overrides=self.overrides
        )

    async def call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: bytes | Any = b"",
        token: str | None = TOKEN,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """One request to the application, e.g. `await fleet.call("GET", "/api/vehicles/car-001")`."""
        return await request(self.app(), method, path, query, body, token, headers)

    async def add_fleet(self, brand_id: str = BRAND, fleet_id: str = FLEET) -> None:
        await add_fleet(self.store, brand_id, fleet_id)

    async def register(self, brand_id: str, fleet_id: str, vehicles: Iterable[str]) -> None:
        """A new fleet with these cars, registered through the API as its operator would."""
        await self.add_fleet(brand_id, fleet_id)
        for vehicle in vehicles:
            path = f"/api/brands/{brand_id}/fleets/{fleet_id}/vehicles"
            answer = await self.call("POST", path, body={"vehicleId": vehicle})
            assert answer.status == 201, answer.body

    async def drive(self, vehicle: str, seconds: range, **signals: Any) -> None:
        """Real ingestion: one message per second of `seconds` (seq = second + 1)."""
        batch = [message(vehicle, drive(t + 1, t, **signals), enqueued_s=t, sequence_number=t) for t in seconds]
        await TelemetryIngestor(self.store, self.dead_letters).ingest(batch)

    async def link_driver(self, vehicle: str, calendar: bool = True, location: bool = True) -> None:
        link = {"userId": USER, "upn": "driver@contoso.com", "timeZone": "Europe/Berlin"}
        link["consent"] = {"calendar": calendar, "location": location}  # type: ignore[assignment]
        await self.links.link(vehicle, parse_link(orjson.dumps(link)))


def api_app(
    service: FleetService,
    links: DriverLinks | None = None,
    gatekeeper: Any = None,
    audit: Any = None,
    overrides: Mapping[Any, Any] | None = None,
) -> Shield:
    """The application on this service, an open gatekeeper and a recording audit log unless given."""
    app = create_fastapi()
    opened, recorded = gatekeeper or OpenGatekeeper(), audit or RecordingAudit()
    app.dependency_overrides.update({
        runtime.gatekeeper: lambda: opened,
        runtime.audit_log: lambda: recorded,
        runtime.fleet_service: lambda: service,
        runtime.driver_links: lambda: links or service.links,
        **(overrides or {}),
    })  # fmt: skip
    return Shield(app)


async def request(
    app: Shield,
    method: str,
    path: str,
    query: Mapping[str, str] | None = None,
    body: bytes | Any = b"",
    token: str | None = TOKEN,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """One request through httpx's ASGI transport (no server, no socket)."""
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"Authorization": token} if token else {}
    if raw:
        sent["Content-Type"] = "application/json"
    sent.update(headers or {})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fleet.test") as client:
        response = await client.request(method, path, params=query, content=raw or None, headers=sent)
    return Answer(response.status_code, response.content, response.headers.get("content-type"), response.headers)


async def add_fleet(store: DocumentStore, brand_id: str = BRAND, fleet_id: str = FLEET) -> None:
    """The brand and fleet documents a registration needs (what PUT /api/brands/... writes)."""
    await store.upsert(TENANCY, {"id": BRAND_DOC_ID, "kind": "brand", "brandId": brand_id, "name": brand_id})
    fleet = {"id": fleet_doc_id(fleet_id), "kind": "fleet", "brandId": brand_id, "fleetId": fleet_id, "name": fleet_id}
    await store.upsert(TENANCY, fleet)
