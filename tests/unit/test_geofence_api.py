"""The geofence routes through the HTTP application on in-memory stores, fed by the real ingestion with the
store-backed geofence source: fleet and private geofences, the speed alert, events newest first in pages,
validation as problems."""

from __future__ import annotations

from typing import Any

import pytest

from shared.geofences.store import CachedGeofenceSource
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import drive, message
from tests.fleet_support import Fleet

FENCES = "/api/brands/contoso/fleets/berlin/geofences"
LAT, LON = 52.52, 13.405


def circle(name: str = "Depot", radius: float = 300, **extra: Any) -> dict[str, Any]:
    return {"name": name, "shape": {"type": "Circle", "center": [LON, LAT], "radiusM": radius}, **extra}


@pytest.fixture
async def fleet() -> Fleet:
    fleet = Fleet()
    await fleet.add_fleet()
    assert (
        await fleet.call("POST", "/api/brands/contoso/fleets/berlin/vehicles", body={"vehicleId": "car-1"})
    ).status == 201
    return fleet


async def ingest(fleet: Fleet, seconds: range, lat: float, lon: float, speed: float = 30.0) -> None:
    batch = [message("car-1", drive(t + 1, t, lat=lat, lon=lon, speed=speed), enqueued_s=t + 1) for t in seconds]
    await TelemetryIngestor(fleet.store, fleet.dead_letters, geofences=CachedGeofenceSource(fleet.store)).ingest(batch)


async def test_fleet_geofence_round_trip(fleet: Fleet) -> None:
    created = await fleet.call("PUT", f"{FENCES}/depot", body=circle(alerts={"exit": True}))
    assert created.status == 201, created.json
    assert created.json["scope"] == "fleet"
    assert created.json["alerts"] == {"enter": False, "exit": True}
    replaced = await fleet.call("PUT", f"{FENCES}/depot", body=circle("Depot north"))
    assert replaced.status == 200
    assert (await fleet.call("GET", f"{FENCES}/depot")).json["name"] == "Depot north"
    assert [g["geofenceId"] for g in (await fleet.call("GET", FENCES)).json["items"]] == ["depot"]
    assert (await fleet.call("DELETE", f"{FENCES}/depot")).status == 204
    assert (await fleet.call("DELETE", f"{FENCES}/depot")).status == 204
    assert (await fleet.call("GET", f"{FENCES}/depot")).status == 404
    assert (await fleet.call("GET", FENCES)).json["items"] == []
    # the audit names the route
    assert {r["route"] for r in fleet.audit.records} >= {"put_fleet_geofence", "delete_fleet_geofence"}


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "shape": {"type": "Polygon", "coordinates": [[[13.4, 52.5], [13.5, 52.5], [13.5, 52.6]]]}},
        {"name": "x", "shape": {"type": "Circle", "center": [13.4, 95], "radiusM": 100}},
        {"name": "x", "shape": {"type": "Circle", "center": [13.4, 52.5], "radiusM": 1}},
        {"name": "x", "shape": {"type": "Circle", "center": [179.999, -16.8], "radiusM": 1000}},  # the antimeridian
        {"name": "x", "shape": {"type": "Circle", "center": [0.0, 89.99], "radiusM": 5000}},  # around the pole
        {"name": "x", "shape": {"type": "Circle", "center": [13.4, 52.5], "radiusM": 100}, "colour": "red"},
        {**circle(), "curfew": {"timeZone": "Nowhere/Town", "allowed": []}},
        {"name": "x", "shape": {"type": "Point", "coordinates": [13.4, 52.5]}},
    ],
)
async def test_bad_definitions_are_422_problems(fleet: Fleet, body: dict[str, Any]) -> None:
    answer = await fleet.call("PUT", f"{FENCES}/bad", body=body)
    assert answer.status == 422, answer.json
    assert answer.content_type == "application/problem+json"


async def test_unknown_fleet_and_bad_id(fleet: Fleet) -> None:
    assert (await fleet.call("PUT", "/api/brands/contoso/fleets/nowhere/geofences/depot", body=circle())).status == 404
    assert (await fleet.call("PUT", f"{FENCES}/Not_A_Slug", body=circle())).status == 400


async def test_private_geofences_and_events_through_ingestion(fleet: Fleet) -> None:
    home = await fleet.call("PUT", "/api/vehicles/car-1/geofences/home", body=circle("Home", 100))
    assert home.status == 201, home.json
    assert (home.json["scope"], home.json["vehicleId"]) == ("vehicle", "car-1")
    assert [g["geofenceId"] for g in (await fleet.call("GET", "/api/vehicles/car-1/geofences")).json["items"]] == [
        "home"
    ]
    assert (await fleet.call("PUT", f"{FENCES}/depot", body=circle())).status == 201
    settings = await fleet.call(
        "PUT", "/api/brands/contoso/fleets/berlin/geofence-settings", body={"speedLimitKmh": 50, "speedLimitSeconds": 0}
    )
    assert settings.status == 200, settings.json
    # WHEN the car drives from home out of both and back
    await ingest(fleet, range(0, 3), LAT, LON)
    await ingest(fleet, range(3, 6), LAT + 0.01, LON, speed=60.0)
    await ingest(fleet, range(6, 8), LAT, LON)
    # THEN its events are listed newest first, in pages
    first = await fleet.call("GET", "/api/vehicles/car-1/geofence-events", query={"limit": "2"})
    assert first.status == 200, first.json
    page = first.json
    assert sorted((e["event"], e["geofenceId"]) for e in page["items"]) == [("enter", "depot"), ("enter", "home")]
    assert page["items"][0]["position"] == {"lat": LAT, "lon": LON}
    rest = await fleet.call(
        "GET", "/api/vehicles/car-1/geofence-events", query={"continuationToken": page["continuationToken"]}
    )
    assert sorted((e["event"], e["geofenceId"], e["scope"]) for e in rest.json["items"]) == [
        ("exit", "depot", "fleet"),
        ("exit", "home", "vehicle"),
    ]
    kinds = {a["kind"] for a in (await fleet.call("GET", "/api/vehicles/car-1/alerts")).json["items"]}
    assert "speeding" in kinds
    assert (await fleet.call("DELETE", "/api/vehicles/car-1/geofences/home")).status == 204
    assert (await fleet.call("GET", "/api/vehicles/car-1/geofences/home")).status == 404


async def test_events_hide_positions_while_the_car_withholds_them(fleet: Fleet) -> None:
    assert (await fleet.call("PUT", f"{FENCES}/depot", body=circle())).status == 201
    await ingest(fleet, range(0, 2), LAT + 0.01, LON)
    await ingest(fleet, range(2, 4), LAT, LON)
    await fleet.link_driver("car-1", location=False)
    events = (await fleet.call("GET", "/api/vehicles/car-1/geofence-events")).json["items"]
    assert events
    assert all(e["position"] is None for e in events)


async def test_a_car_in_no_fleet_has_no_private_geofences(fleet: Fleet) -> None:
    await fleet.drive("car-9", range(1), speed=1.0)
    answer = await fleet.call("PUT", "/api/vehicles/car-9/geofences/home", body=circle())
    assert answer.status == 400
    assert (await fleet.call("GET", "/api/vehicles/nobody/geofence-events")).status == 404
