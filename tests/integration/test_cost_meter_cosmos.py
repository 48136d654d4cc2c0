"""The cost meter against the local Cosmos server through the real SDK: the server answers a charge of 1 for
everything, so the charge is estimated from the published table by size, and labelled as an estimate."""

from __future__ import annotations

import datetime as dt

import pytest

from shared.cost import meter
from shared.cost.meter import CostMeter
from shared.cost.request_units import point_read_request_units, write_request_units
from shared.stores.cosmos import CosmosDocumentStore
from shared.stores.memory import MemoryDeadLetterSink
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import drive, message
from tests.fleet_support import Fleet


async def test_a_write_and_a_read_are_charged_by_size_not_the_servers_flat_unit(
    cosmos_store: CosmosDocumentStore,
) -> None:
    document = {"id": "car-cost-1", "vehicleId": "car-cost-1", "pad": "x" * 12_000}
    with meter.metering() as charges:
        await cosmos_store.upsert("vehicles", document)
    assert charges.estimated is True
    assert charges.requests == 1
    assert charges.ru == pytest.approx(write_request_units(12_050), abs=0.05)  # ~12 KB: 8.2 RU, not 1
    with meter.metering() as charges:
        stored = await cosmos_store.read("vehicles", "car-cost-1", "car-cost-1")
    assert stored is not None
    assert charges.ru in {point_read_request_units(12_100), point_read_request_units(13_400)}  # 12 or 13 KB started


async def test_ingestion_carries_each_cars_estimated_charges_and_the_api_shows_them(
    cosmos_store: CosmosDocumentStore,
) -> None:
    start = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
    clock = start
    ingestor = TelemetryIngestor(cosmos_store, MemoryDeadLetterSink(), cost=CostMeter(lambda: clock))
    cars = [f"car-cost-ingest-{n}" for n in range(3)]
    for seq in (1, 2, 3):
        clock = start + dt.timedelta(minutes=seq - 1)  # counts that span time: the month's estimate has a rate
        await ingestor.ingest(
            [message(car, drive(seq, seq, speed=10.0 * n), enqueued_s=seq) for n, car in enumerate(cars)]
        )
    for car in cars:
        stored = await cosmos_store.read("vehicles", car, car)
        assert stored is not None
        cost = stored.document["cost"]
        assert cost["estimated"] is True
        assert cost["day"]["messages"] == 3
        # the first commit's read (a miss) and create, the second's replace: estimated, each at least the 1 KB
        # write cost or a 1 RU read, never the server's flat 1 per request
        assert cost["day"]["ru"] >= 2 * write_request_units(0) + 1
    # the API over the same store: the car's meter, labelled an estimate (and no travel document: no Maps calls)
    fleet = Fleet(store=cosmos_store, now=start + dt.timedelta(minutes=3))
    answer = await fleet.call("GET", f"/api/vehicles/{cars[0]}")
    assert answer.status == 200
    view = answer.json["cost"]
    assert view["mapsCallsLastHour"] is None
    assert view["estimated"] is True
    assert view["today"]["messages"] == 3
    assert view["monthlyUsd"] > 0
