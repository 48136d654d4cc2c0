"""Pre-registration and revocation through the fleet API (httpx's ASGI transport, in-memory stores)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
from typing import Any

import orjson
import pytest

from shared.api import runtime
from shared.containers import VEHICLES
from shared.provisioning.allocation import Allocation, Allocator, Refusal, parse_request
from shared.provisioning.enrollment import SYMMETRIC_KEY_GROUP_ID, MemoryEnrollmentKeys
from shared.provisioning.model import Stamp
from shared.provisioning.preregistration import ProvisioningConfig
from tests.fleet_support import BRAND, FLEET, Fleet

EU1, US1 = "hub-eu-1.azure-devices.net", "hub-us-1.azure-devices.net"
GROUP_KEY = base64.b64encode(b"k" * 64).decode()
REGISTER = f"/api/brands/{BRAND}/fleets/{FLEET}/vehicles"


def config(development_keys: bool = False) -> ProvisioningConfig:
    return ProvisioningConfig(
        "global.azure-devices-provisioning.net", "0ne00ABCDEF", development_keys, (Stamp(EU1, "eu"), Stamp(US1, "us"))
    )


async def fleet_with(development_keys: bool = False) -> Fleet:
    fleet = Fleet()
    await fleet.add_fleet()
    keys = MemoryEnrollmentKeys({SYMMETRIC_KEY_GROUP_ID: GROUP_KEY})
    service = dataclasses.replace(
        fleet.service, provisioning_config=lambda: config(development_keys), enrollment_keys=lambda: keys
    )
    fleet.overrides[runtime.fleet_service] = lambda: service
    return fleet


async def document(fleet: Fleet, vehicle_id: str) -> dict[str, Any]:
    stored = await fleet.store.read(VEHICLES, vehicle_id, vehicle_id)
    assert stored is not None
    return stored.document


async def test_x509_preregistration_creates_no_identity_and_answers_no_secret() -> None:
    fleet = await fleet_with(development_keys=True)
    body = {"vehicleId": "car-001", "label": "B-XY 1", "provisioning": {"attestation": "x509", "region": "eu"}}
    answer = await fleet.call("POST", REGISTER, body=body)
    assert answer.status == 201, answer.json
    assert answer.json == {
        "vehicleId": "car-001",
        "brandId": BRAND,
        "fleetId": FLEET,
        "registrationId": "car-001",
        "provisioning": {"attestation": "x509", "region": "eu", "status": "preregistered"},
        "dps": {"globalEndpoint": "global.azure-devices-provisioning.net", "idScope": "0ne00ABCDEF"},
        "deviceKey": None,
        "development": None,
    }
    assert fleet.gateway.devices == {}  # DPS creates the identity at first boot
    doc = await document(fleet, "car-001")
    assert doc["provisioning"] == {
        "attestation": "x509",
        "region": "eu",
        "status": "preregistered",
        "hub": None,
        "preregisteredAt": doc["registeredAt"],
    }
    assert (doc["brandId"], doc["fleetId"], doc["label"]) == (BRAND, FLEET, "B-XY 1")
    again = await fleet.call("POST", REGISTER, body=body)
    assert again.status == 409


async def test_symmetric_key_development_key_is_derived_and_marked() -> None:
    fleet = await fleet_with(development_keys=True)
    body = {"vehicleId": "car-002", "provisioning": {"attestation": "symmetricKey", "region": "eu"}}
    answer = await fleet.call("POST", REGISTER, body=body)
    assert answer.status == 201
    expected = base64.b64encode(hmac.new(base64.b64decode(GROUP_KEY), b"car-002", hashlib.sha256).digest()).decode()
    assert answer.json["deviceKey"] == expected
    assert answer.json["development"] is True
    assert expected not in orjson.dumps(await document(fleet, "car-002")).decode()  # never stored


async def test_a_development_key_dps_cannot_give_now_leaves_no_registration_behind() -> None:
    """The key is derived before the registration is written: DPS failing then is an error the operator retries,
    not a registered car whose key was never shown (a retry would be 409)."""
    fleet = await fleet_with(development_keys=True)
    missing = MemoryEnrollmentKeys({})  # no enrollment group yet: the key cannot be derived
    service = dataclasses.replace(fleet.overrides[runtime.fleet_service](), enrollment_keys=lambda: missing)
    fleet.overrides[runtime.fleet_service] = lambda: service
    body = {"vehicleId": "car-004", "provisioning": {"attestation": "symmetricKey", "region": "eu"}}
    failed = await fleet.call("POST", REGISTER, body=body)
    assert failed.status >= 500
    assert await fleet.store.read(VEHICLES, "car-004", "car-004") is None
    missing.keys[SYMMETRIC_KEY_GROUP_ID] = GROUP_KEY
    assert (await fleet.call("POST", REGISTER, body=body)).status == 201


async def test_without_development_keys_a_symmetric_key_car_gets_no_key() -> None:
    fleet = await fleet_with(development_keys=False)
    body = {"vehicleId": "car-003", "provisioning": {"attestation": "symmetricKey", "region": "eu"}}
    answer = await fleet.call("POST", REGISTER, body=body)
    assert answer.status == 201
    assert answer.json["deviceKey"] is None
    assert answer.json["development"] is None


@pytest.mark.parametrize(
    ("provisioning", "status"),
    [
        ({"attestation": "tpm", "region": "eu"}, 422),
        ({"attestation": "x509"}, 422),
        ({"attestation": "x509", "region": "EU!"}, 422),
        ({"attestation": "x509", "region": "eu", "hub": "x"}, 422),
        ({"attestation": "x509", "region": "apac"}, 400),  # no hub serves it
    ],
)
async def test_bad_provisioning_choices_are_refused(provisioning: dict[str, Any], status: int) -> None:
    fleet = await fleet_with()
    answer = await fleet.call("POST", REGISTER, body={"vehicleId": "car-009", "provisioning": provisioning})
    assert answer.status == status
    assert await fleet.store.read(VEHICLES, "car-009", "car-009") is None


@pytest.mark.parametrize("vehicle_id", ["car(1)", "-car", "car-", "car@x"])
async def test_a_vehicle_id_dps_cannot_take_is_refused(vehicle_id: str) -> None:
    fleet = await fleet_with()
    body = {"vehicleId": vehicle_id, "provisioning": {"attestation": "x509", "region": "eu"}}
    answer = await fleet.call("POST", REGISTER, body=body)
    assert answer.status == 400
    assert "registration id" in answer.json["detail"]


async def test_two_cars_differing_only_in_case_cannot_both_be_pre_registered() -> None:
    """DPS documents the registration id as "a case-insensitive string" (REST "Runtime Registration - Register
    Device"); IoT Hub device ids and our vehicle ids are case-sensitive. `car-050` and `CAR-050` pre-registered both
    would be two vehicle records for one DPS registration: one device identity for two cars, or a second identity
    beside the first. Which case DPS gives the device id (and the allocation webhook) for a mixed-case registration
    is not documented, so the safe rule: a car pre-registered for DPS has a lowercase vehicle id, its own
    case-insensitive form; then the registration id, the device id DPS creates and the vehicle id are one string
    whichever way DPS folds case, and no two pre-registered cars can differ only in case."""
    fleet = await fleet_with()

    def body(vehicle_id: str) -> dict[str, Any]:
        return {"vehicleId": vehicle_id, "provisioning": {"attestation": "x509", "region": "eu"}}

    assert (await fleet.call("POST", REGISTER, body=body("car-050"))).status == 201
    for variant in ("CAR-050", "Car-050", "Car-051"):
        answer = await fleet.call("POST", REGISTER, body=body(variant))
        assert answer.status == 400, (variant, answer.json)
        assert "registration id" in answer.json["detail"]
        assert variant.lower() in answer.json["detail"]  # the id it could be registered under
        assert await fleet.store.read(VEHICLES, variant, variant) is None
    assert fleet.gateway.devices == {}
    # direct mode keeps IoT Hub's case-sensitive ids: no DPS registration is involved
    assert (await fleet.call("POST", REGISTER, body={"vehicleId": "CAR-050"})).status == 201


async def test_direct_mode_is_unchanged() -> None:
    fleet = await fleet_with()
    answer = await fleet.call("POST", REGISTER, body={"vehicleId": "car-010"})
    assert answer.status == 201
    assert set(answer.json) == {"vehicleId", "deviceId", "hostName", "primaryKey", "connectionString"}
    assert "car-010" in fleet.gateway.devices
    assert "provisioning" not in await document(fleet, "car-010")


async def test_a_car_pre_registered_elsewhere_is_not_taken_over_by_a_direct_registration() -> None:
    """A car pre-registered for DPS has no device identity until it boots: a direct registration of its id (any
    fleet, any brand) is refused before an identity is made, and the car stays where it was."""
    fleet = await fleet_with()
    await fleet.add_fleet("other-brand", "other-fleet")
    body = {"vehicleId": "car-020", "provisioning": {"attestation": "x509", "region": "eu"}}
    assert (await fleet.call("POST", REGISTER, body=body)).status == 201
    elsewhere = "/api/brands/other-brand/fleets/other-fleet/vehicles"
    taken = await fleet.call("POST", elsewhere, body={"vehicleId": "car-020"})
    assert taken.status == 409
    assert "car-020" not in fleet.gateway.devices  # no identity, no key handed out
    doc = await document(fleet, "car-020")
    assert (doc["brandId"], doc["fleetId"]) == (BRAND, FLEET)


async def test_revocation_refuses_provisioning_and_disables_the_device() -> None:
    fleet = await fleet_with()
    body = {"vehicleId": "car-020", "provisioning": {"attestation": "symmetricKey", "region": "eu"}}
    assert (await fleet.call("POST", REGISTER, body=body)).status == 201
    allocator = Allocator(fleet.store, config().stamps)
    request = parse_request(
        orjson.dumps({"deviceRuntimeContext": {"registrationId": "car-020", "symmetricKey": {}}, "linkedHubs": [EU1]})
    )
    assert not isinstance(request, Refusal)
    assert isinstance(await allocator.allocate(request), Allocation)
    await fleet.gateway.create_device("car-020")  # what DPS did on the hub

    answer = await fleet.call("POST", "/api/vehicles/car-020/revoke")
    assert answer.status == 200, answer.json
    assert answer.json == {
        "vehicleId": "car-020",
        "status": "revoked",
        "revokedAt": fleet.now.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "hub": EU1,
        "deviceDisabled": True,
    }
    assert "car-020" in fleet.gateway.disabled
    refusal = await allocator.allocate(request)
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "revoked"
    audited = [r for r in fleet.audit.records if r["route"] == "revoke_vehicle"]
    assert [(r["outcome"], r["status"]) for r in audited] == [("succeeded", 200)]

    again = await fleet.call("POST", "/api/vehicles/car-020/revoke")  # idempotent: the first time stays
    assert again.status == 200
    assert again.json == answer.json
    assert (await document(fleet, "car-020"))["provisioning"]["status"] == "revoked"


async def test_revoking_a_car_between_its_allocation_and_its_identity_answers_retry_until_it_is_disabled() -> None:
    """DPS creates the device right after the allocation answered: a revocation in between finds no identity to
    disable, and one made after it would be enabled. The revocation is recorded and answered 503; the retry
    disables the identity DPS made meanwhile."""
    fleet = await fleet_with()
    body = {"vehicleId": "car-025", "provisioning": {"attestation": "symmetricKey", "region": "eu"}}
    assert (await fleet.call("POST", REGISTER, body=body)).status == 201
    allocator = Allocator(fleet.store, config().stamps, clock=lambda: fleet.now)
    request = parse_request(
        orjson.dumps({"deviceRuntimeContext": {"registrationId": "car-025", "symmetricKey": {}}, "linkedHubs": [EU1]})
    )
    assert not isinstance(request, Refusal)
    assert isinstance(await allocator.allocate(request), Allocation)
    early = await fleet.call("POST", "/api/vehicles/car-025/revoke")
    assert early.status == 503
    assert "retry-after" in early.headers
    assert (await document(fleet, "car-025"))["provisioning"]["status"] == "revoked"
    await fleet.gateway.create_device("car-025")  # what DPS did on the hub meanwhile
    again = await fleet.call("POST", "/api/vehicles/car-025/revoke")
    assert (again.status, again.json["deviceDisabled"]) == (200, True)
    assert "car-025" in fleet.gateway.disabled
    # long after an allocation whose identity never came (DPS failed, or it was deleted): nothing to wait for
    await fleet.gateway.delete_device("car-025")
    fleet.now += dt.timedelta(minutes=10)
    late = await fleet.call("POST", "/api/vehicles/car-025/revoke")
    assert (late.status, late.json["deviceDisabled"]) == (200, False)


async def test_revoking_a_car_that_never_provisioned_or_a_direct_one() -> None:
    fleet = await fleet_with()
    body = {"vehicleId": "car-021", "provisioning": {"attestation": "x509", "region": "eu"}}
    assert (await fleet.call("POST", REGISTER, body=body)).status == 201
    answer = await fleet.call("POST", "/api/vehicles/car-021/revoke")
    assert answer.status == 200
    assert (answer.json["hub"], answer.json["deviceDisabled"]) == (None, False)
    assert (await fleet.call("POST", REGISTER, body={"vehicleId": "car-022"})).status == 201
    assert (await fleet.call("POST", "/api/vehicles/car-022/revoke")).status == 409
    assert (await fleet.call("POST", "/api/vehicles/car-404/revoke")).status == 404


async def test_a_recovered_car_is_reinstated() -> None:
    fleet = await fleet_with()
    body = {"vehicleId": "car-030", "provisioning": {"attestation": "symmetricKey", "region": "eu"}}
    assert (await fleet.call("POST", REGISTER, body=body)).status == 201
    allocator = Allocator(fleet.store, config().stamps)
    request = parse_request(
        orjson.dumps({"deviceRuntimeContext": {"registrationId": "car-030", "symmetricKey": {}}, "linkedHubs": [EU1]})
    )
    assert not isinstance(request, Refusal)
    assert isinstance(await allocator.allocate(request), Allocation)
    await fleet.gateway.create_device("car-030")
    assert (await fleet.call("POST", "/api/vehicles/car-030/revoke")).status == 200

    answer = await fleet.call("POST", "/api/vehicles/car-030/reinstate")
    assert answer.status == 200, answer.json
    assert answer.json == {"vehicleId": "car-030", "status": "assigned", "hub": EU1, "deviceEnabled": True}
    assert "car-030" not in fleet.gateway.disabled
    provisioning = (await document(fleet, "car-030"))["provisioning"]
    assert provisioning["status"] == "assigned"
    assert "revokedAt" not in provisioning
    assert isinstance(await allocator.allocate(request), Allocation)  # admitted again
    assert (await fleet.call("POST", "/api/vehicles/car-030/reinstate")).json == answer.json  # idempotent

    never = {"vehicleId": "car-031", "provisioning": {"attestation": "x509", "region": "eu"}}
    assert (await fleet.call("POST", REGISTER, body=never)).status == 201
    assert (await fleet.call("POST", "/api/vehicles/car-031/revoke")).status == 200
    back = await fleet.call("POST", "/api/vehicles/car-031/reinstate")
    assert back.json == {"vehicleId": "car-031", "status": "preregistered", "hub": None, "deviceEnabled": False}
    assert (await fleet.call("POST", REGISTER, body={"vehicleId": "car-032"})).status == 201
    assert (await fleet.call("POST", "/api/vehicles/car-032/reinstate")).status == 409
