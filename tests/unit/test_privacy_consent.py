"""Consent records (shared/privacy/consent.py): append-only decisions per driver, car and data category, the state
derived from them, its projection into the vehicle document and the car's twin, through the API and the car's
requests, on in-memory stores fed by the real ingestion."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from shared.auth.access import Access, Grant, Resource
from shared.auth.policy import Requirement, Role
from shared.auth.principal import Principal
from shared.calendar.documents import DRIVER_ID
from shared.containers import CALENDARS, CONSENTS, TENANCY, VEHICLES
from shared.device_messages import DeviceMessage
from shared.drivers.link import DriverLinks, parse_link
from shared.errors import InvalidRequestError
from shared.privacy.categories import default_categories
from shared.privacy.consent import Actor, current_state, decision, projection, record_id
from shared.requests.contract import decode_request
from shared.requests.processor import RequestProcessor
from shared.stores.memory import MemoryDeadLetterSink
from shared.tenancy.documents import BRAND_DOC_ID
from tests.fleet_support import ADMIN, USER, Fleet

LAT = "Vehicle.CurrentLocation.Latitude"
DEST = "Vehicle.Cabin.Infotainment.Navigation.DestinationSet.Latitude"
OPERATOR_ID = "5a1e0c2b-3333-4c1f-9a43-3f1d2c6e8a09"
DRIVER = Principal(USER, "tenant-d", "client-1", frozenset(), frozenset({"Fleet.Access"}), False)
OPERATOR = Principal(OPERATOR_ID, "tenant-1", "client-1", frozenset({"Fleet.Operator"}), frozenset(), False)
SCHEMAS = Path(__file__).parents[2] / "docs" / "schemas"
REQUEST_SCHEMA = Draft202012Validator(json.loads((SCHEMAS / "request-v1.schema.json").read_text()))
RESPONSE_SCHEMA = Draft202012Validator(json.loads((SCHEMAS / "response-v1.schema.json").read_text()))
BASES = default_categories().bases()


@dataclass
class As:
    """A gatekeeper letting one principal through (access itself is the access matrix's subject)."""

    principal: Principal

    async def authenticate(self, authorization: str | None) -> Principal:
        return self.principal

    async def authorize(self, principal: Principal, requirement: Requirement, params: Mapping[str, str]) -> Access:
        return Access(principal, (Grant(Role.PLATFORM_ADMIN),), Resource(vehicle_id=params.get("vehicleId")))


@pytest.fixture
async def fleet() -> Fleet:
    fleet = Fleet(gatekeeper=As(DRIVER))
    await fleet.add_fleet()
    await fleet.call("POST", "/api/brands/contoso/fleets/berlin/vehicles", body={"vehicleId": "car-001"})
    return fleet


def body(**categories: bool) -> dict[str, Any]:
    return {"categories": categories, "channel": "companion_app", "termsVersion": "2026-11"}


async def records(fleet: Fleet, vehicle: str = "car-001") -> list[dict[str, Any]]:
    return [dict(r) for r in await fleet.store.query(CONSENTS, "SELECT * FROM c", partition_key=vehicle)]


async def vehicle(fleet: Fleet, vehicle_id: str = "car-001") -> dict[str, Any]:
    stored = await fleet.store.read(VEHICLES, vehicle_id, vehicle_id)
    assert stored is not None
    return stored.document


def by_category(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["category"]: c for c in state["categories"]}


# --- the domain ---------------------------------------------------------------------------------------------


def test_a_decision_names_every_field_at_fault() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        decision({"position": "no", "teleport": True}, "fax", "", Actor("operator", OPERATOR_ID))
    assert sorted(e["field"] for e in caught.value.errors) == [
        "basis", "categories.position", "categories.teleport", "channel", "termsVersion",
    ]  # fmt: skip
    with pytest.raises(InvalidRequestError):  # a driver never records "on a basis": that is an operator's
        decision({"position": True}, "api", "1", Actor("driver", USER, basis="form 1"))


def test_without_records_every_category_follows_its_basis_and_the_latest_record_wins() -> None:
    state = current_state([], BASES)
    assert {n: s.collected for n, s in state.items()} == {n: b == "contract" for n, b in BASES.items()}
    made = [
        {"category": "position", "seq": 1, "granted": True},
        {"category": "position", "seq": 3, "granted": False},
        {"category": "position", "seq": 2, "granted": True},
        {"category": "media_usage", "seq": 1, "granted": True},
    ]
    state = current_state(made, BASES)
    assert (state["position"].collected, state["media_usage"].collected) == (False, True)
    assert state["occupant_monitoring"].record is None
    assert not state["occupant_monitoring"].collected


def test_a_flag_is_only_as_permissive_as_its_most_restricted_category() -> None:
    def flags(**granted: bool) -> dict[str, Any]:
        made = [{"category": c, "seq": 1, "granted": g} for c, g in granted.items()]
        out = projection(made, USER, "t")
        return {k: out.get(k) for k in ("location", "calendar")}

    assert flags() == {"location": None, "calendar": None}  # no record: the basis decides
    assert flags(position=True) == {"location": None, "calendar": None}  # the destination has no record yet
    assert flags(position=True, navigation_destination=True) == {"location": True, "calendar": None}
    assert flags(position=True, navigation_destination=False)["location"] is False
    assert flags(position=False)["location"] is False
    assert flags(calendar=True)["calendar"] is True
    assert projection([{"category": "media_usage", "seq": 1, "granted": True}], USER, "t")["categories"] == {
        "media_usage": True
    }


def test_record_ids_are_deterministic() -> None:
    assert record_id(USER, "position", 2) == f"{USER}:position:000002"


# --- the API ------------------------------------------------------------------------------------------------


async def test_a_car_without_driver_follows_the_brands_bases_and_takes_no_record(fleet: Fleet) -> None:
    state = (await fleet.call("GET", "/api/vehicles/car-001/consent")).json
    assert state["userId"] is None
    assert state["history"] == []
    assert {c["category"]: (c["collected"], c["source"]) for c in state["categories"]} == {
        n: (b == "contract", "basis") for n, b in BASES.items()
    }
    answer = await fleet.call("PUT", "/api/vehicles/car-001/consent", body=body(position=False))
    assert answer.status == 404
    assert await records(fleet) == []


async def test_a_brand_that_sets_position_to_consent_collects_none_until_granted(fleet: Fleet) -> None:
    await fleet.store.upsert(
        TENANCY,
        {"id": BRAND_DOC_ID, "kind": "brand", "brandId": "contoso", "name": "contoso",
         "settings": {"dataCategoryBases": {"position": "consent"}}},
    )  # fmt: skip
    state = by_category((await fleet.call("GET", "/api/vehicles/car-001/consent")).json)
    assert state["position"] == {**state["position"], "basis": "consent", "collected": False, "source": "basis"}


async def test_the_driver_withdraws_position_the_record_says_who_when_how_and_ingestion_drops_it(
    fleet: Fleet,
) -> None:
    # GIVEN a driving car whose driver linked it with location and calendar consent
    await fleet.drive("car-001", range(3), lv="ON", speed=30.0, lat=52.0, lon=10.0)
    await fleet.link_driver("car-001")
    fleet.queue.jobs.clear()
    # WHEN the driver withdraws position and the navigation destination in the companion app
    answer = await fleet.call(
        "PUT", "/api/vehicles/car-001/consent", body=body(position=False, navigation_destination=False)
    )
    # THEN two records (and the link's choices, recorded first), the state, the projection, the twin
    assert answer.status == 200, answer.body
    assert (answer.json["recorded"], answer.json["removed"]) == (2, 4)
    mine = [r for r in answer.json["history"] if r.get("via") is None]
    assert {(r["category"], r["granted"], r["channel"], r["termsVersion"], r["seq"]) for r in mine} == {
        ("position", False, "companion_app", "2026-11", 2),
        ("navigation_destination", False, "companion_app", "2026-11", 2),
    }
    assert all(r["by"] == {"kind": "driver", "objectId": USER, "tenantId": "tenant-d"} for r in mine)
    linked = [(r["category"], r["granted"]) for r in answer.json["history"] if r.get("via") == "driverLink"]
    assert sorted(linked) == [("calendar", True), ("navigation_destination", True), ("position", True)]
    state = by_category(answer.json)
    assert (state["position"]["collected"], state["position"]["source"]) == (False, "record")
    assert state["calendar"]["collected"] is True
    doc = await vehicle(fleet)
    assert doc["consent"] == {
        "location": False,
        "calendar": True,
        "categories": {"calendar": True, "navigation_destination": False, "position": False},
        "userId": USER,
        "records": 5,
        "updatedAt": doc["consent"]["updatedAt"],
    }
    assert LAT not in doc["state"]["signals"]
    assert doc["trip"]["startPosition"] is None
    twin = fleet.gateway.desired["car-001"]["consent"]["categories"]
    assert twin["position"] == {"collected": False, "basis": "contract", "granted": False}
    assert twin["media_usage"] == {"collected": False, "basis": "consent", "granted": None}
    # AND the calendar sync's copy of the link follows, without a new sync job (calendar did not change)
    link = await fleet.store.read(CALENDARS, USER, DRIVER_ID)
    assert link is not None
    assert link.document["consent"] == {"calendar": True, "location": False}
    assert fleet.queue.jobs == []
    # AND positions and destinations sent afterwards never reach the state
    await fleet.drive("car-001", range(3, 5), speed=31.0, lat=52.1, lon=10.1)
    assert LAT not in (await vehicle(fleet))["state"]["signals"]


async def test_the_same_decision_again_records_nothing(fleet: Fleet) -> None:
    await fleet.link_driver("car-001")
    first = await fleet.call("PUT", "/api/vehicles/car-001/consent", body=body(media_usage=True))
    count = len(await records(fleet))
    again = await fleet.call("PUT", "/api/vehicles/car-001/consent", body=body(media_usage=True))
    assert (first.json["recorded"], again.json["recorded"]) == (1, 0)
    assert len(await records(fleet)) == count
    assert again.json["categories"] == first.json["categories"]
    # New terms, same answer: a new record (consent is given to terms)
    newer = await fleet.call(
        "PUT", "/api/vehicles/car-001/consent", body={**body(media_usage=True), "termsVersion": "2027-01"}
    )
    assert newer.json["recorded"] == 1


async def test_racing_decisions_all_land_each_with_its_own_sequence_number(fleet: Fleet) -> None:
    await fleet.link_driver("car-001")
    await fleet.call("GET", "/api/vehicles/car-001/consent")  # the link's choices become records
    flips = [body(media_usage=i % 2 == 0) for i in range(6)] + [body(occupant_monitoring=True)]
    answers = await asyncio.gather(*(fleet.call("PUT", "/api/vehicles/car-001/consent", body=b) for b in flips))
    assert all(a.status == 200 for a in answers)
    made = await records(fleet)
    media = sorted(r["seq"] for r in made if r["category"] == "media_usage")
    assert media == list(range(1, len(media) + 1))  # no gap, no duplicate
    doc = await vehicle(fleet)
    assert doc["consent"]["records"] == len(made)  # the projection saw every record
    assert doc["consent"]["categories"]["occupant_monitoring"] is True


async def test_an_operator_records_on_a_documented_basis_only(fleet: Fleet) -> None:
    await fleet.link_driver("car-001", location=False)
    fleet.gatekeeper = As(OPERATOR)
    without = await fleet.call("POST", "/api/vehicles/car-001/consent/records", body=body(position=True))
    assert without.status == 422
    assert "basis" in without.body.decode()
    answer = await fleet.call(
        "POST", "/api/vehicles/car-001/consent/records", body={**body(position=True), "basis": "signed form 2026-114"}
    )
    assert answer.status == 200, answer.body
    record = answer.json["history"][0]
    assert record["by"] == {"kind": "operator", "objectId": OPERATOR_ID, "tenantId": "tenant-1"}
    assert (record["category"], record["granted"], record["basis"]) == ("position", True, "signed form 2026-114")
    # The destination stays withdrawn (from the link): the flag stays off, the category map is exact
    consent = (await vehicle(fleet))["consent"]
    assert (consent["location"], consent["categories"]["position"]) == (False, True)


async def test_bodies_are_strict(fleet: Fleet) -> None:
    await fleet.link_driver("car-001")
    for bad in (
        body(teleport=True),
        {"categories": {}, "channel": "api", "termsVersion": "1"},
        {**body(position=False), "channel": "fax"},
        {**body(position=False), "termsVersion": "no spaces"},
        {"categories": {"position": "false"}, "channel": "api", "termsVersion": "1"},
        {**body(position=False), "basis": "a driver has none"},
    ):
        answer = await fleet.call("PUT", "/api/vehicles/car-001/consent", body=bad)
        assert answer.status == 422, bad
    assert await records(fleet) == []


async def test_a_new_driver_starts_from_the_bases_not_from_the_previous_drivers_records(fleet: Fleet) -> None:
    await fleet.link_driver("car-001")
    await fleet.call("PUT", "/api/vehicles/car-001/consent", body=body(media_usage=True))
    other = str(uuid.uuid4())
    link = {
        "userId": other,
        "upn": "b@contoso.com",
        "timeZone": "UTC",
        "consent": {"calendar": False, "location": True},
    }
    await fleet.links.link("car-001", parse_link(orjson.dumps(link)))
    state = (await fleet.call("GET", "/api/vehicles/car-001/consent")).json
    assert state["userId"] == other
    assert by_category(state)["media_usage"]["collected"] is False
    assert {r["category"] for r in state["history"]} == {"calendar", "position", "navigation_destination"}


async def test_the_old_patch_route_writes_records_too(fleet: Fleet) -> None:
    await fleet.link_driver("car-001")
    answer = await fleet.call("PATCH", "/api/vehicles/car-001/consent", body={"calendar": False})
    assert answer.status == 200
    assert answer.json["consent"] == {"calendar": False, "location": True}
    calendar = [r for r in await records(fleet) if r["category"] == "calendar"]
    assert [(r["granted"], r["channel"], r["termsVersion"]) for r in sorted(calendar, key=lambda r: r["seq"])] == [
        (True, "api", None),
        (False, "api", None),
    ]
    assert [(job.user_id, job.reason) for job, _ in fleet.queue.jobs][-1] == (USER, "link")


async def test_the_admin_principal_is_not_the_driver(fleet: Fleet) -> None:
    await fleet.link_driver("car-001")
    fleet.gatekeeper = As(ADMIN)  # a guard misconfiguration must still not let anyone record as the driver
    answer = await fleet.call("PUT", "/api/vehicles/car-001/consent", body=body(position=False))
    assert answer.status == 404


# --- the car ------------------------------------------------------------------------------------------------


class NoMeetings:
    """Consent requests never reach Microsoft 365."""


SEQUENCE = itertools.count(1)


def car_request(action: str, request_id: str | None = None, **extra: Any) -> DeviceMessage:
    raw = {"v": 1, "requestId": request_id or str(uuid.uuid4()), "action": action, **extra}
    REQUEST_SCHEMA.validate(raw)
    return DeviceMessage(orjson.dumps(raw), "car-001", "2026-11-21T08:00:00.000Z", next(SEQUENCE))


async def ask(fleet: Fleet, message: DeviceMessage) -> dict[str, Any]:
    before = len(fleet.gateway.sent)
    meetings: Any = NoMeetings()
    processor = RequestProcessor(fleet.store, fleet.gateway, MemoryDeadLetterSink(), meetings, fleet.queue)
    await processor.process([message])
    reply: dict[str, Any] = fleet.gateway.sent[before].json()
    RESPONSE_SCHEMA.validate(reply)
    return reply


async def test_the_car_shows_and_changes_its_consent_without_calendar_consent(fleet: Fleet) -> None:
    await fleet.link_driver("car-001", calendar=False)
    shown = await ask(fleet, car_request("consent.get"))
    assert shown["status"] == "ok"
    assert shown["consent"]["categories"]["position"] == {"collected": True, "basis": "contract", "granted": True}
    request_id = str(uuid.uuid4())
    withdraw = car_request("consent.set", request_id, categories={"position": False}, termsVersion="2026-11")
    changed = await ask(fleet, withdraw)
    assert (changed["status"], changed["recorded"]) == ("ok", 1)
    assert changed["consent"]["categories"]["position"]["collected"] is False
    record = next(r for r in await records(fleet) if r["category"] == "position" and r["seq"] == 2)
    assert (record["channel"], record["by"]["kind"], record["requestId"]) == ("car_screen", "driver", request_id)
    # The car asks again (same requestId, a new event): the same answer, nothing recorded
    count = len(await records(fleet))
    assert await ask(fleet, dataclasses.replace(withdraw, sequence_number=next(SEQUENCE))) == changed
    assert len(await records(fleet)) == count
    assert fleet.gateway.desired["car-001"]["consent"]["categories"]["position"]["collected"] is False


async def test_the_car_without_driver_reads_the_bases_and_cannot_record(fleet: Fleet) -> None:
    assert (await ask(fleet, car_request("consent.get")))["status"] == "ok"
    refused = await ask(fleet, car_request("consent.set", categories={"position": False}, termsVersion="1"))
    assert refused["error"]["code"] == "no_driver"
    await fleet.link_driver("car-001")
    unknown = await ask(fleet, car_request("consent.set", categories={"teleport": False}, termsVersion="1"))
    assert unknown["error"]["code"] == "invalid_request"
    assert await records(fleet) == [] or all(r.get("via") == "driverLink" for r in await records(fleet))


def test_consent_set_needs_categories_and_terms() -> None:
    for extra in ({}, {"categories": {"position": "no"}, "termsVersion": "1"}, {"categories": {"position": False}}):
        raw = orjson.dumps({"v": 1, "requestId": str(uuid.uuid4()), "action": "consent.set", **extra})
        decoded = decode_request(raw)
        assert getattr(decoded, "code", None) == "invalid_request", extra


async def test_the_twin_follows_a_new_and_a_departed_driver(fleet: Fleet) -> None:
    # GIVEN driver links that can reach the car's twin (as the function app wires them)
    links = DriverLinks(fleet.store, fleet.queue, gateway=fleet.gateway)
    link = {"userId": USER, "upn": "d@contoso.com", "timeZone": "UTC", "consent": {"calendar": True, "location": False}}
    # WHEN a driver links the car, THEN their choices are records and the twin shows them
    await links.link("car-001", parse_link(orjson.dumps(link)))
    twin = fleet.gateway.desired["car-001"]["consent"]["categories"]
    assert twin["position"] == {"collected": False, "basis": "contract", "granted": False}
    assert twin["calendar"] == {"collected": True, "basis": "consent", "granted": True}
    assert {r["via"] for r in await records(fleet)} == {"driverLink"}
    # WHEN the driver leaves, THEN the car shows the brand's bases again (their records stay theirs)
    await links.unlink("car-001")
    twin = fleet.gateway.desired["car-001"]["consent"]["categories"]
    assert twin["position"] == {"collected": True, "basis": "contract"}  # granted: null removed the key
    assert twin["calendar"] == {"collected": False, "basis": "consent"}
