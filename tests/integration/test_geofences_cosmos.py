"""Geofences against the local Cosmos server: the API stores them in `tenancy`, ingestion reads them with one query
per fleet (ARRAY_CONTAINS on the server's query engine), writes events and alerts through the outbox into
`geofenceEvents` and `alerts` exactly once under shuffled, split and replayed batches and a second instance, and
the events list pages newest first on a real query engine."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from shared.containers import GEOFENCE_EVENTS
from shared.fleet.service import FleetService
from shared.geofences.store import CachedGeofenceSource
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.stores.cosmos import CosmosDocumentStore
from shared.stores.memory import MemoryDeadLetterSink
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import drive, message
from tests.fleet_support import BRAND, FLEET, add_fleet, api_app, request

pytestmark = pytest.mark.integration
LAT, LON = 52.52, 13.405
# outside, in the depot, in the depot and the restricted yard, outside
POINTS = [(LAT + 0.02, LON), (LAT, LON - 0.002), (LAT, LON + 0.001), (LAT - 0.02, LON)]


async def call(service: FleetService, method: str, path: str, query: Any = None, body: Any = b"") -> Any:
    answer = await request(api_app(service), method, path, query, body)
    assert answer.status < 300, answer.body
    return answer.json if answer.body else None


def circle(name: str, lon: float, radius: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "shape": {"type": "Circle", "center": [lon, LAT], "radiusM": radius}, **extra}


async def test_events_exactly_once_through_the_outbox_and_the_api(cosmos_store: CosmosDocumentStore) -> None:
    store = cosmos_store
    car = f"geo-{uuid.uuid4().hex[:8]}"
    service = FleetService(store, MemoryIoTHubGateway(), None, None)  # type: ignore[arg-type]
    await add_fleet(store)
    await call(service, "POST", f"/api/brands/{BRAND}/fleets/{FLEET}/vehicles", body={"vehicleId": car})
    fences = f"/api/brands/{BRAND}/fleets/{FLEET}/geofences"
    await call(service, "PUT", f"{fences}/depot-{car}", body=circle("Depot", LON, 300, alerts={"exit": True}))
    yard = {
        "type": "Polygon",
        "coordinates": [
            [
                [LON, LAT - 0.001],
                [LON + 0.003, LAT - 0.001],
                [LON + 0.003, LAT + 0.001],
                [LON, LAT + 0.001],
                [LON, LAT - 0.001],
            ]
        ],
    }
    await call(service, "PUT", f"{fences}/yard-{car}", body={"name": "Yard", "shape": yard, "restricted": True})
    await call(service, "PUT", f"/api/vehicles/{car}/geofences/home", body=circle("Home", LON - 0.002, 80))
    assert [g["geofenceId"] for g in (await call(service, "GET", f"/api/vehicles/{car}/geofences"))["items"]] == [
        "home"
    ]

    # WHEN the car drives 40 samples, delivered split, shuffled within a lateness of 4 samples, with replays,
    # through two ingestion instances
    rng = random.Random(11)
    route = [rng.randrange(len(POINTS)) for _ in range(40)]
    messages = [
        message(car, drive(i + 1, i * 10, lat=POINTS[p][0], lon=POINTS[p][1], speed=20.0), enqueued_s=i * 10 + 1)
        for i, p in enumerate(route)
    ]
    order = sorted(range(len(messages)), key=lambda i: i + rng.uniform(0, 4))
    batches = [[messages[i] for i in order[at : at + 5]] for at in range(0, len(order), 5)]
    instances = [
        TelemetryIngestor(store, MemoryDeadLetterSink(), geofences=CachedGeofenceSource(store)) for _ in range(2)
    ]
    for n, part in enumerate(batches):
        rng.shuffle(part)
        await instances[n % 2].ingest(part)
    stored = {
        d["id"]: d
        for d in await store.query(
            GEOFENCE_EVENTS, "SELECT * FROM c WHERE c.vehicleId = @v", {"@v": car}, partition_key=car
        )
    }
    for part in batches:  # every batch again, on both instances
        for instance in instances:
            report = await instance.ingest(part)
            assert report.geofence_events == 0
    again = {
        d["id"]: d
        for d in await store.query(
            GEOFENCE_EVENTS, "SELECT * FROM c WHERE c.vehicleId = @v", {"@v": car}, partition_key=car
        )
    }
    assert {k: {f: v for f, v in d.items() if not f.startswith("_")} for k, d in again.items()} == {
        k: {f: v for f, v in d.items() if not f.startswith("_")} for k, d in stored.items()
    }

    # THEN the events not retracted are the crossings of the sorted drive, once each
    def tokens(p: int) -> set[str]:
        return [set(), {f"depot-{car}", "v:home"}, {f"depot-{car}", f"yard-{car}"}, set()][p]

    expected: set[tuple[str, str, int]] = set()
    for i in range(1, len(route)):
        before, after = tokens(route[i - 1]), tokens(route[i])
        expected |= {(t, "exit", i * 10) for t in before - after} | {(t, "enter", i * 10) for t in after - before}
    live = [d for d in stored.values() if not d["retracted"]]
    got = {(("v:" if d["scope"] == "vehicle" else "") + d["geofenceId"], d["event"], int(d["ts"][14:16]) * 60
            + int(d["ts"][17:19])) for d in live}  # fmt: skip
    assert got == expected
    assert len(live) == len(expected)

    # AND the API lists them newest first, in pages, on the server's query engine
    seen: list[dict[str, Any]] = []
    token = None
    while True:
        page = await call(service, "GET", f"/api/vehicles/{car}/geofence-events",
                          query={"limit": "7", **({"continuationToken": token} if token else {})})  # fmt: skip
        seen += page["items"]
        token = page["continuationToken"]
        if not token:
            break
    assert [e["ts"] for e in seen] == sorted((e["ts"] for e in seen), reverse=True)
    assert {e["id"] for e in seen} == set(stored)
    # AND restricted-zone and depot alerts are in the car's alerts
    kinds = {
        a["kind"] for a in (await call(service, "GET", f"/api/vehicles/{car}/alerts", query={"limit": "100"}))["items"]
    }
    assert {"restricted_zone", "geofence_exit"} <= kinds
