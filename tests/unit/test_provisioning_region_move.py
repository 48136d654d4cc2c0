"""Moving a car to another region (PUT /api/vehicles/{id}/provisioning/region) and where it lands next time."""

from __future__ import annotations

import orjson
import pytest

from shared.provisioning.allocation import Allocation, AllocationRequest, Allocator, Refusal, parse_request
from shared.provisioning.model import Stamp, choose_hub
from tests.unit.test_provisioning_api import EU1, REGISTER, US1, config, document, fleet_with

MOVE = "/api/vehicles/{}/provisioning/region"
EU2 = "hub-eu-2.azure-devices.net"


def request_of(vehicle_id: str, current: str | None = None, hubs: tuple[str, ...] = (EU1, US1)) -> AllocationRequest:
    context: dict[str, object] = {"registrationId": vehicle_id, "symmetricKey": {}}
    if current is not None:
        context["currentIotHubHostName"] = current
    request = parse_request(orjson.dumps({"deviceRuntimeContext": context, "linkedHubs": list(hubs)}))
    assert not isinstance(request, Refusal)
    return request


async def test_a_moved_car_is_assigned_a_hub_of_its_new_region_at_its_next_provisioning() -> None:
    fleet = await fleet_with()
    body = {"vehicleId": "car-040", "provisioning": {"attestation": "symmetricKey", "region": "us"}}
    assert (await fleet.call("POST", REGISTER, body=body)).status == 201
    allocator = Allocator(fleet.store, config().stamps, clock=lambda: fleet.now)
    first = await allocator.allocate(request_of("car-040"))
    assert isinstance(first, Allocation)
    assert first.hub == US1

    answer = await fleet.call("PUT", MOVE.format("car-040"), body={"region": "eu"})
    assert answer.status == 200, answer.json
    assert answer.json == {
        "vehicleId": "car-040",
        "region": "eu",
        "previousRegion": "us",
        "status": "assigned",
        "hub": US1,
        "movesAtNextProvisioning": True,
    }
    provisioning = (await document(fleet, "car-040"))["provisioning"]
    assert (provisioning["region"], provisioning["hub"], provisioning["status"]) == ("eu", US1, "assigned")
    audited = [r for r in fleet.audit.records if r["route"] == "move_vehicle_region"]
    assert [(r["outcome"], r["status"]) for r in audited] == [("succeeded", 200)]

    # the car re-provisions (DPS: reprovision and migrate data): its current hub is still linked but no longer in its
    # region, so it is not kept; the new region's hub is chosen and recorded
    moved = await allocator.allocate(request_of("car-040", current=US1))
    assert isinstance(moved, Allocation)
    assert moved.hub == EU1
    provisioning = (await document(fleet, "car-040"))["provisioning"]
    assert (provisioning["hub"], provisioning["status"]) == (EU1, "assigned")
    assert provisioning["assignedAt"] == fleet.now.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    again = await allocator.allocate(request_of("car-040", current=EU1))  # and then it stays there
    assert isinstance(again, Allocation)
    assert again.hub == EU1

    same = await fleet.call("PUT", MOVE.format("car-040"), body={"region": "eu"})  # idempotent
    assert same.status == 200
    assert (same.json["previousRegion"], same.json["hub"], same.json["movesAtNextProvisioning"]) == ("eu", EU1, False)


async def test_a_car_moved_before_its_first_boot_lands_in_the_new_region() -> None:
    fleet = await fleet_with()
    body = {"vehicleId": "car-041", "provisioning": {"attestation": "x509", "region": "eu"}}
    assert (await fleet.call("POST", REGISTER, body=body)).status == 201
    answer = await fleet.call("PUT", MOVE.format("car-041"), body={"region": "us"})
    assert answer.status == 200, answer.json
    assert (answer.json["status"], answer.json["hub"], answer.json["movesAtNextProvisioning"]) == (
        "preregistered",
        None,
        False,
    )
    allocator = Allocator(fleet.store, config().stamps)
    request = parse_request(
        orjson.dumps(
            {
                "deviceRuntimeContext": {"registrationId": "car-041", "x509": {"subjectName": "CN=car-041"}},
                "linkedHubs": [EU1, US1],
            }
        )
    )
    assert not isinstance(request, Refusal)
    allocation = await allocator.allocate(request)
    assert isinstance(allocation, Allocation)
    assert allocation.hub == US1


async def test_what_cannot_be_moved() -> None:
    fleet = await fleet_with()
    body = {"vehicleId": "car-042", "provisioning": {"attestation": "symmetricKey", "region": "eu"}}
    assert (await fleet.call("POST", REGISTER, body=body)).status == 201
    nowhere = await fleet.call("PUT", MOVE.format("car-042"), body={"region": "ap"})  # no stamp serves it
    assert nowhere.status == 400, nowhere.json
    assert "no IoT hub serves region ap" in nowhere.json["detail"]
    assert (await document(fleet, "car-042"))["provisioning"]["region"] == "eu"  # nothing written

    assert (await fleet.call("POST", REGISTER, body={"vehicleId": "car-043"})).status == 201  # direct mode
    direct = await fleet.call("PUT", MOVE.format("car-043"), body={"region": "us"})
    assert direct.status == 409, direct.json
    assert "provisioning" not in await document(fleet, "car-043")

    assert (await fleet.call("POST", "/api/vehicles/car-042/revoke")).status == 200
    revoked = await fleet.call("PUT", MOVE.format("car-042"), body={"region": "us"})
    assert revoked.status == 409, revoked.json
    assert (await document(fleet, "car-042"))["provisioning"]["region"] == "eu"

    assert (await fleet.call("PUT", MOVE.format("car-404"), body={"region": "us"})).status == 404


@pytest.mark.parametrize(
    "body", [{}, {"region": ""}, {"region": "EU"}, {"region": 1}, {"region": "us", "hub": US1}, {"region": "x" * 33}]
)
async def test_malformed_bodies_are_refused(body: dict[str, object]) -> None:
    fleet = await fleet_with()
    registration = {"vehicleId": "car-044", "provisioning": {"attestation": "symmetricKey", "region": "eu"}}
    assert (await fleet.call("POST", REGISTER, body=registration)).status == 201
    answer = await fleet.call("PUT", MOVE.format("car-044"), body=body)
    assert answer.status == 422, answer.json
    assert (await document(fleet, "car-044"))["provisioning"]["region"] == "eu"


def test_the_sticky_rule_keeps_the_current_hub_only_inside_the_region() -> None:
    stamps = (Stamp(EU1, "eu"), Stamp(EU2, "eu"), Stamp(US1, "us"))
    linked = (EU1, EU2, US1)
    assert choose_hub("car-050", linked, stamps, "eu", EU2) == EU2  # still in region: kept
    assert choose_hub("car-050", linked, stamps, "eu", US1) in {EU1, EU2}  # linked, but outside: not kept
    assert choose_hub("car-050", linked, stamps, "us", EU1) == US1
    assert choose_hub("car-050", (EU1, EU2), stamps, "us", EU1) is None  # never placed outside its region
