"""The fleet API through the HTTP application on in-memory stores, fed by the real ingestion: reads, paging,
validation, acks, problem answers."""

from __future__ import annotations

import pytest

from shared.auth.access import Visibility
from shared.containers import ALERTS
from shared.containers import VEHICLES as VEHICLE_DOCS
from shared.stores.memory import MemoryDocumentStore
from tests.factories import iso
from tests.fleet_support import Fleet

LAT, LON = "Vehicle.CurrentLocation.Latitude", "Vehicle.CurrentLocation.Longitude"
REGISTER = "/api/brands/contoso/fleets/berlin/vehicles"
VEHICLES = "/api/vehicles"


@pytest.fixture
async def fleet() -> Fleet:
    fleet = Fleet()
    await fleet.add_fleet()
    return fleet


async def test_registration_creates_the_identity_and_the_document_and_shows_the_key_once(fleet: Fleet) -> None:
    # WHEN a car is registered
    answer = await fleet.call("POST", REGISTER, body={"vehicleId": "car-001", "label": "B-XY 42"})
    # THEN it gets what it needs to connect, and IoT Hub knows its key
    assert answer.status == 201
    assert answer.headers["Cache-Control"] == "no-store"
    connection = answer.json
    assert connection["deviceId"] == "car-001"
    assert connection["primaryKey"] == fleet.gateway.devices["car-001"]
    assert connection["connectionString"] == (
        f"HostName={fleet.gateway.hostname};DeviceId=car-001;SharedAccessKey={connection['primaryKey']}"
    )
    vehicle = (await fleet.call("GET", "/api/vehicles/car-001")).json
    assert vehicle["label"] == "B-XY 42"
    assert vehicle["registeredAt"]
    # AND a second registration is refused: the key is never shown again
    again = await fleet.call("POST", REGISTER, body={"vehicleId": "car-001"})
    assert again.status == 409
    assert again.content_type == "application/problem+json"


async def test_registration_keeps_what_ingestion_already_wrote(fleet: Fleet) -> None:
    await fleet.drive("car-002", range(3), speed=40.0)
    assert (await fleet.call("POST", REGISTER, body={"vehicleId": "car-002"})).status == 201
    vehicle = (await fleet.call("GET", "/api/vehicles/car-002")).json
    assert vehicle["speedKmh"] == 40.0


async def test_the_vehicle_shows_live_state_driver_and_consent_but_never_ingest_bookkeeping(fleet: Fleet) -> None:
    # GIVEN a car that drove and has a driver
    await fleet.drive("car-001", range(5), speed=52.0, soc=80.5, lat=52.42, lon=10.78, lv="ON", moving=True)
    await fleet.link_driver("car-001")
    # WHEN it is read
    answer = await fleet.call("GET", "/api/vehicles/car-001")
    # THEN live state, driver and consent are there, and nothing of `ingest`
    assert answer.status == 200
    vehicle = answer.json
    assert vehicle["speedKmh"] == 52.0
    assert vehicle["stateOfChargePercent"] == 80.5
    assert vehicle["moving"] is True
    assert vehicle["position"] == {"lat": 52.42, "lon": 10.78}
    assert vehicle["lastSeen"]
    assert vehicle["tripOpen"] is True
    assert vehicle["driver"]["upn"] == "driver@contoso.com"
    assert vehicle["consent"] == {"calendar": True, "location": True}
    assert "ingest" not in answer.body.decode()
    assert "pending" not in vehicle
    assert "outbox" not in answer.body.decode()


async def test_the_fleet_list_pages_with_continuation_tokens(fleet: Fleet) -> None:
    # GIVEN seven cars
    for n in range(7):
        await fleet.drive(f"car-{n:03d}", range(1), speed=float(n))
    # WHEN the list is read two at a time
    seen: list[str] = []
    token: str | None = None
    for _ in range(10):
        query = {"limit": "2", **({"continuationToken": token} if token else {})}
        page = (await fleet.call("GET", VEHICLES, query)).json
        seen += [v["vehicleId"] for v in page["items"]]
        token = page["continuationToken"]
        if token is None:
            break
    # THEN every car comes exactly once, in order
    assert seen == [f"car-{n:03d}" for n in range(7)]


async def test_a_cars_own_grant_lists_it_only_in_the_brand_it_was_given_in(fleet: Fleet) -> None:
    """A Driver grant names a brand and a car: the same car id registered in another brand (after an erasure, its
    old driver's membership left) is not listed to them."""
    await fleet.add_fleet("other", "fleet-o")
    for brand, fleet_id, car in (("contoso", "berlin", "car-001"), ("other", "fleet-o", "car-002")):
        await fleet.store.upsert(
            VEHICLE_DOCS,
            {"id": car, "vehicleId": car, "type": "vehicle", "brandId": brand, "fleetId": fleet_id,
             "driver": {"userId": "driver-1"}},
        )  # fmt: skip
    cars = frozenset({("contoso", "car-001"), ("contoso", "car-002")})
    visible = Visibility(False, vehicles=cars, principal_id="driver-1")
    listed = await fleet.service.list_vehicles(visible, 10, None)
    assert [v["vehicleId"] for v in listed["items"]] == ["car-001"]


@pytest.mark.parametrize(
    ("method", "path", "query", "status"),
    [
        ("GET", VEHICLES, {"continuationToken": "bm90LWEtdG9rZW4"}, 400),
        ("GET", VEHICLES, {"continuationToken": "%%%"}, 400),
        ("GET", VEHICLES, {"limit": "0"}, 400),
        ("GET", VEHICLES, {"limit": "1000"}, 400),
        ("GET", VEHICLES, {"limit": "two"}, 400),
        ("GET", VEHICLES, {"unknown": "1"}, 400),
        ("GET", VEHICLES, {"brandId": "Not A Brand"}, 400),
        ("GET", "/api/vehicles/car%20001", {}, 400),
        ("GET", "/api/vehicles/" + "x" * 129, {}, 400),
        ("GET", "/api/vehicles/car-404", {}, 404),
        ("GET", "/api/vehicles/car-001/telemetry", {"from": "yesterday"}, 400),
        ("GET", "/api/vehicles/car-001/telemetry", {"from": "2026-11-21T08:00:00"}, 400),  # no zone
        ("GET", "/api/vehicles/car-001/telemetry", {"from": iso(60), "to": iso(0)}, 400),
        ("GET", "/api/vehicles/car-001/telemetry", {"from": "0001-01-01T00:00:00+23:59"}, 400),
        ("POST", "/api/vehicles/car-001/alerts/no-such-alert/ack", {}, 404),
        ("DELETE", "/api/drivers/not-a-guid", {}, 400),
        ("GET", "/api/no-such-route", {}, 404),
        ("PATCH", VEHICLES, {}, 405),
    ],
)
async def test_bad_parameters_get_a_problem_never_a_500(
    fleet: Fleet, method: str, path: str, query: dict[str, str], status: int
) -> None:
    await fleet.drive("car-001", range(1), speed=1.0)
    answer = await fleet.call(method, path, query)
    assert answer.status == status
    assert answer.content_type == "application/problem+json"
    assert answer.headers["Cache-Control"] == "no-store"
    problem = answer.json
    assert problem["status"] == status
    assert set(problem) >= {"type", "title", "status", "detail"}
    assert "Traceback" not in answer.body.decode()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 400),
        (b"\xff\xfe", 400),
        ({"vehicleId": "car-9", "colour": "red"}, 422),  # unknown field
        ({"vehicleId": 9}, 422),  # wrong type
        ({"vehicleId": "car 9"}, 422),  # not a device id
        ({"label": "no id"}, 422),
        ({"vehicleId": "car-9", "label": "x" * 65}, 422),
        (b'{"vehicleId": "' + b"x" * 5000 + b'"}', 413),
    ],
)
async def test_bad_bodies_get_a_problem_never_a_500(fleet: Fleet, body: bytes | dict[str, object], status: int) -> None:
    answer = await fleet.call("POST", REGISTER, body=body)
    assert answer.status == status
    assert answer.content_type == "application/problem+json"
    assert fleet.gateway.devices == {}


async def test_invalid_fields_are_all_named(fleet: Fleet) -> None:
    await fleet.drive("car-001", range(1), speed=1.0)
    answer = await fleet.call("PATCH", "/api/vehicles/car-001/consent", body={"location": "no", "x": 1})
    assert answer.status == 422
    assert {e["field"] for e in answer.json["errors"]} == {"body.location", "body.x"}
    empty = await fleet.call("PATCH", "/api/vehicles/car-001/consent", body={})
    assert empty.status == 422


async def test_telemetry_history_joins_chunks_and_the_buffer_within_the_window(fleet: Fleet) -> None:
    # GIVEN 40 messages: two chunks of 16 in `telemetry`, 8 still in the vehicle document's buffer
    await fleet.drive("car-001", range(40), speed=30.0, lat=52.0, lon=10.0)
    # WHEN the history of seconds 10..35 is read one chunk per page
    seqs: list[int] = []
    token: str | None = None
    pages = 0
    while True:
        query = {"from": iso(10), "to": iso(35), "limit": "1", **({"continuationToken": token} if token else {})}
        answer = await fleet.call("GET", "/api/vehicles/car-001/telemetry", query)
        assert answer.status == 200
        page = answer.json
        seqs += [m["seq"] for m in page["items"]]
        pages += 1
        token = page["continuationToken"]
        if token is None:
            break
    # THEN each message in the window comes once, positions included
    assert sorted(seqs) == list(range(11, 37))
    assert pages >= 2
    last = (await fleet.call("GET", "/api/vehicles/car-001/telemetry", {"from": iso(39), "to": iso(39)})).json
    assert last["items"][0]["samples"][0]["signals"][LAT] == 52.0


async def test_an_acknowledgement_survives_ingestion_rewriting_the_alert(fleet: Fleet) -> None:
    # GIVEN a car with an active DTC alert
    await fleet.drive("car-001", range(2), dtc=["P0300"], soc=50.0)
    alerts = (await fleet.call("GET", "/api/vehicles/car-001/alerts")).json["items"]
    [alert] = alerts
    assert alert["acknowledged"] is False
    # WHEN it is acknowledged (twice: idempotent)
    ack = f"/api/vehicles/car-001/alerts/{alert['id']}/ack"
    first = await fleet.call("POST", ack, body={"note": "workshop booked"})
    fleet.now = fleet.now.replace(hour=23)
    second = await fleet.call("POST", ack)
    assert first.status == second.status == 200
    assert first.json["acknowledgedAt"] == second.json["acknowledgedAt"]
    # AND ingestion writes the alert document again (outbox replay)
    store = fleet.store
    assert isinstance(store, MemoryDocumentStore)
    [stored] = [d for d in store.documents(ALERTS) if d["id"] == alert["id"]]
    await store.upsert(ALERTS, stored)
    # THEN the acknowledgement is still there, in the list and in the vehicle's active alerts
    [listed] = (await fleet.call("GET", "/api/vehicles/car-001/alerts")).json["items"]
    assert listed["acknowledged"] is True
    assert listed["note"] == "workshop booked"
    vehicle = (await fleet.call("GET", "/api/vehicles/car-001")).json
    assert [a["acknowledged"] for a in vehicle["alerts"]] == [True]


async def test_trips_come_newest_first_with_the_open_trip_live(fleet: Fleet) -> None:
    await fleet.drive("car-001", range(0, 3), lv="ON", speed=20.0)
    await fleet.drive("car-001", range(3, 4), lv="OFF")
    await fleet.drive("car-001", range(100, 104), lv="ON", speed=60.0)  # > 60 s later: a new trip
    trips = (await fleet.call("GET", "/api/vehicles/car-001/trips")).json["items"]
    assert [t["status"] for t in trips] == ["open", "closed"]
    assert trips[0]["maxSpeedKmh"] == 60.0  # the running figures of the vehicle document


async def test_agenda_and_meetings_are_empty_without_calendar_consent(fleet: Fleet) -> None:
    await fleet.drive("car-001", range(1), speed=1.0)
    await fleet.link_driver("car-001", calendar=False)
    agenda = (await fleet.call("GET", "/api/vehicles/car-001/agenda")).json
    assert agenda["calendarConsent"] is False
    assert agenda["events"] == []
    meetings = (await fleet.call("GET", "/api/vehicles/car-001/meetings")).json
    assert meetings == {"items": [], "continuationToken": None}


async def test_the_openapi_document_is_public_and_names_every_operation_with_its_security(fleet: Fleet) -> None:
    answer = await fleet.call("GET", "/api/openapi.json", token=None)
    assert answer.status == 200
    document = answer.json
    assert document["openapi"].startswith("3.1")
    operations = {op["operationId"]: op for path in document["paths"].values() for op in path.values()}
    assert {
        "registerVehicle",
        "listVehicles",
        "changeConsent",
        "deleteDriver",
        "acknowledgeAlert",
        "linkDriver",
    } <= set(operations)
    body = document["paths"][REGISTER.replace("contoso", "{brandId}").replace("berlin", "{fleetId}")]["post"]
    schema = body["requestBody"]["content"]["application/json"]["schema"]
    registration = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    assert registration["additionalProperties"] is False  # generated from the model that validates
    assert operations["getVehicle"]["security"] == [{"entra": ["Fleet.Access"]}, {"bearer": []}]
    assert operations["getVehicle"]["x-requirement"] == {
        "target": "vehicle",
        "permission": "vehicles.read",
        "audited": False,
    }
    assert "`vehicles.erase` on the car" in operations["deleteVehicle"]["description"]
    assert operations["getOpenapi"]["security"] == []
    flow = document["components"]["securitySchemes"]["entra"]["flows"]["authorizationCode"]
    assert flow["authorizationUrl"].endswith("/oauth2/v2.0/authorize")
    assert "application/problem+json" in operations["getVehicle"]["responses"]["404"]["content"]
    assert "422" not in operations["getVehicle"]["responses"]
    assert (await fleet.call("GET", "/docs", token=None)).status == 404


async def test_the_dashboard_is_public_static_and_carries_no_key(fleet: Fleet) -> None:
    for path in ("/api/dashboard", "/api/dashboard/"):
        page = await fleet.call("GET", path, token=None)
        assert page.status == 200
        assert page.content_type == "text/html; charset=utf-8"
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert page.headers["Cache-Control"] == "no-cache"
        assert b"http://" not in page.body
        assert b"https://" not in page.body
    script = await fleet.call("GET", "/api/dashboard/app.js", token=None)
    assert script.status == 200
    assert (await fleet.call("GET", "/api/dashboard/..%2Ffunction_app.py", token=None)).status == 404
    assert (await fleet.call("GET", "/api/dashboard/index.html", token=None)).status == 404
