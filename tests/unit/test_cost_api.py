"""The cost meter in the API: a car's block on GET /api/vehicles/{id}, a brand's days on GET /api/brands/{id}/cost,
fed by the real ingestion with the meter on (charges as the local server's hook estimates them)."""

from __future__ import annotations

import datetime as dt

from shared.containers import TRAVEL
from shared.cost.meter import CostMeter
from shared.telemetry.ingest import TelemetryIngestor
from shared.travel.stores import DocumentTravelStateStore
from tests.cost_support import ChargingStore
from tests.factories import drive, iso, message
from tests.fleet_support import BRAND, Fleet

REGISTER = f"/api/brands/{BRAND}/fleets/berlin/vehicles"


async def metered_fleet(cars: int, batches: int) -> Fleet:
    fleet = Fleet(store=ChargingStore())
    await fleet.add_fleet()
    start = fleet.now - dt.timedelta(minutes=batches)
    clock = {"now": start}
    ingestor = TelemetryIngestor(fleet.store, fleet.dead_letters, cost=CostMeter(lambda: clock["now"]))
    for n in range(cars):
        assert (await fleet.call("POST", REGISTER, body={"vehicleId": f"car-{n:03d}"})).status == 201
    for t in range(batches):
        clock["now"] = start + dt.timedelta(minutes=t)
        await ingestor.ingest(
            [message(f"car-{n:03d}", drive(t + 1, t, speed=50.0), enqueued_s=t, sequence_number=t) for n in range(cars)]
        )
    return fleet


async def test_a_car_shows_its_cost_meter_and_estimated_month() -> None:
    fleet = await metered_fleet(cars=2, batches=4)
    answer = await fleet.call("GET", "/api/vehicles/car-000")
    assert answer.status == 200
    cost = answer.json["cost"]
    assert cost["estimated"] is True
    assert cost["today"]["messages"] == 4
    assert cost["today"]["hubUnits"] == 4
    assert cost["today"]["requestUnits"] > 0
    assert cost["monthToDate"]["messages"] == 4
    assert cost["monthlyUsd"] > 0
    assert cost["monthlyUsdByService"]["Cosmos DB"] > 0
    assert cost["graphCalls"] is None
    assert cost["prices"] == "shared/cost/prices.json"


async def test_the_cars_maps_calls_come_from_its_travel_planning() -> None:
    fleet = await metered_fleet(cars=1, batches=1)
    assert (await fleet.call("GET", "/api/vehicles/car-000")).json["cost"]["mapsCallsLastHour"] is None
    calls = [iso(-60), iso(-30)]
    await DocumentTravelStateStore(fleet.store, TRAVEL).save("car-000", {"calls": calls, "events": {}})
    assert (await fleet.call("GET", "/api/vehicles/car-000")).json["cost"]["mapsCallsLastHour"] == 2


async def test_a_car_never_metered_shows_an_empty_meter() -> None:
    fleet = Fleet()
    await fleet.add_fleet()
    await fleet.call("POST", REGISTER, body={"vehicleId": "car-quiet"})
    cost = (await fleet.call("GET", "/api/vehicles/car-quiet")).json["cost"]
    assert cost["today"] is None
    assert cost["monthlyUsd"] is None
    assert cost["estimated"] is False


async def test_a_brand_shows_its_cars_per_day_and_on_average() -> None:
    fleet = await metered_fleet(cars=3, batches=3)
    answer = await fleet.call("GET", f"/api/brands/{BRAND}/cost")
    assert answer.status == 200
    brand = answer.json
    assert brand["brandId"] == BRAND
    assert brand["estimated"] is True
    assert brand["cars"] == 3
    today = brand["days"][0]
    assert today["period"] == fleet.now.strftime("%Y-%m-%d")
    assert today["messages"] == 9
    assert today["messagesPerCar"] == 3
    assert brand["months"][0]["cars"] == 3
    assert brand["monthlyUsdPerCar"] > 0
    per_car = [(await fleet.call("GET", f"/api/vehicles/car-{n:03d}")).json["cost"]["monthlyUsd"] for n in range(3)]
    assert abs(brand["monthlyUsdTotal"] - sum(per_car)) < 1e-3
    assert abs(brand["monthlyUsdPerCar"] - sum(per_car) / 3) < 1e-3


async def test_an_unknown_brand_has_no_cars_with_a_cost() -> None:
    fleet = await metered_fleet(cars=1, batches=1)
    brand = (await fleet.call("GET", "/api/brands/nobody/cost")).json
    assert brand["cars"] == 0
    assert brand["days"] == []
