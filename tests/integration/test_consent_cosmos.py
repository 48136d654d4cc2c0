"""Consent records against the local Cosmos server: conditional creates of deterministic ids keep racing decisions
apart, the single-partition query reads the history back, the projection lands in the vehicle document with an
etag condition while real ingestion writes the same document, and ingestion then drops what was withdrawn."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from shared.calendar.jobs import MemorySyncQueue
from shared.containers import CONSENTS, VEHICLES
from shared.drivers.link import DriverLinks, parse_link
from shared.errors import ConflictError
from shared.fleet.service import FleetService
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.privacy.consent import Actor, decision, record_id
from shared.stores.cosmos import CosmosDocumentStore
from shared.stores.memory import MemoryDeadLetterSink
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import drive, message
from tests.fleet_support import BRAND, FLEET, add_fleet, api_app, request

pytestmark = pytest.mark.integration
LAT = "Vehicle.CurrentLocation.Latitude"


async def forget(user: str, vehicle: str | None) -> None:
    """No calendar to forget here."""


async def ingest(store: CosmosDocumentStore, vehicle: str, seconds: range, **signals: Any) -> None:
    batch = [message(vehicle, drive(t + 1, t, **signals), enqueued_s=t, sequence_number=t) for t in seconds]
    await TelemetryIngestor(store, MemoryDeadLetterSink()).ingest(batch)


async def test_consent_records_on_the_local_server(cosmos_store: CosmosDocumentStore) -> None:
    # GIVEN a registered, driving car with a linked driver, on the local Cosmos server
    gateway, queue = MemoryIoTHubGateway(), MemorySyncQueue()
    service = FleetService(cosmos_store, gateway, DriverLinks(cosmos_store, queue), forget)
    app = api_app(service)
    await add_fleet(cosmos_store)
    car, user = f"car-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    registered = await request(app, "POST", f"/api/brands/{BRAND}/fleets/{FLEET}/vehicles", body={"vehicleId": car})
    assert registered.status == 201, registered.body
    await ingest(cosmos_store, car, range(0, 5), lv="ON", speed=30.0, lat=52.0, lon=10.0)
    link = {"userId": user, "upn": "d@contoso.com", "timeZone": "UTC", "consent": {"calendar": False, "location": True}}
    await service.links.link(car, parse_link(orjson.dumps(link)))

    # WHEN the driver withdraws position while the car keeps sending, and decides about two other categories
    # in racing calls, one of them twice (an API retry)
    consents = service.consents
    actor = Actor("driver", user)

    def decide(**categories: bool) -> Any:
        return consents.record(car, decision(categories, "companion_app", "2026-11", actor))

    outcomes = await asyncio.gather(
        decide(position=False, navigation_destination=False),
        ingest(cosmos_store, car, range(5, 25), lv="ON", speed=30.0, lat=52.1, lon=10.1),
        decide(media_usage=True),
        decide(media_usage=True),
        decide(occupant_monitoring=False),
    )

    # THEN every category has exactly the records it needs, with consecutive deterministic ids
    stored = await cosmos_store.query(CONSENTS, "SELECT * FROM c WHERE c.vehicleId = @v", {"@v": car}, car)
    ids = sorted(d["id"] for d in stored)
    assert ids == sorted(
        [record_id(user, c, 1) for c in ("calendar", "position", "navigation_destination")]  # the link's choices
        + [record_id(user, c, 2) for c in ("position", "navigation_destination")]
        + [record_id(user, c, 1) for c in ("media_usage", "occupant_monitoring")]
    )
    assert sum(o["recorded"] for o in outcomes if isinstance(o, dict)) == 4  # the retry recorded nothing
    # AND a conditional create of an existing record id is refused by the server (the append-only guard)
    with pytest.raises(ConflictError):
        await cosmos_store.create(CONSENTS, {k: v for k, v in stored[0].items() if not k.startswith("_")})
    # AND the projection saw every record, and ingestion keeps the position out from now on
    await ingest(cosmos_store, car, range(25, 30), lv="ON", speed=30.0, lat=52.2, lon=10.2)
    vehicle = await cosmos_store.read(VEHICLES, car, car)
    assert vehicle is not None
    consent = vehicle.document["consent"]
    assert (consent["location"], consent["records"], consent["userId"]) == (False, len(stored), user)
    assert consent["categories"] == {
        "calendar": False, "media_usage": True, "navigation_destination": False, "occupant_monitoring": False,
        "position": False,
    }  # fmt: skip
    assert LAT not in vehicle.document["state"]["signals"]
    assert (vehicle.document.get("trip") or {}).get("lastPosition") is None
    # AND the API shows the state and the history, newest first, and the car's twin says the same
    answer = await request(app, "GET", f"/api/vehicles/{car}/consent")
    assert answer.status == 200, answer.body
    state = {c["category"]: c for c in answer.json["categories"]}
    assert (state["position"]["collected"], state["media_usage"]["collected"]) == (False, True)
    assert [r["at"] for r in answer.json["history"]] == sorted((r["at"] for r in answer.json["history"]), reverse=True)
    assert gateway.desired[car]["consent"]["categories"]["media_usage"]["collected"] is True
