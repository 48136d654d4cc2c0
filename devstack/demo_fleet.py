"""The demo's fleet, set up the way a carmaker's people would through the API, each with their own sign-in.

1. The platform admin creates the brands, fleets and memberships of the identity seed (devstack/tenancy_seed.py).
2. Each car is registered by the operator of its fleet (POST /api/brands/{b}/fleets/{f}/vehicles). With the stack's
   DPS (`make demo`, `make dev`) the car is pre-registered (`provisioning: {attestation, region}`): every other car
   is an X.509 car (its certificate, CN = vehicle id, issued by the brand's CA of the stack's device PKI, as a factory
   would flash it) or a symmetric-key car (the development key the API's answer carries), and the regions alternate
   so both hubs get cars of both kinds; the car's entry of the simulator's provisioning file (`--provision`) is
   made of what the API answered (DPS's endpoint and id scope, the key). Without DPS the connection string the car
   drives with is the one the API handed back, not one the stack made up.
3. Each seeded driver is invited by the operator to a car of the fleet they drive for and accepts with their own
   sign-in, consenting to calendar and location: their calendar (in the Graph sandbox) reaches that car.
4. After the run, one fleet operator signs in and looks (`operator_view`): their cars, and nothing else; a car of
   another fleet of their brand answers 403, one of another brand 404.

Nothing here writes to a store or the hub directly, so the demo fails if the API refuses what a real operator needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import aiohttp

from devstack.api_client import ApiClient, ApiError
from devstack.oidc.seed import Seed, seed_drivers
from devstack.report import OperatorView, Probe, VehicleRow
from devstack.tenancy_seed import member_of, platform_admin, seed_tenancy
from devstack.tls import issue_device_certificate

if TYPE_CHECKING:
    from devstack.stack import LocalStack

OPERATOR_ROLE: Final = "Fleet.Operator"
DEMO_TIME_ZONE: Final = "Europe/Berlin"


@dataclass(frozen=True)
class FleetRef:
    brand_id: str
    fleet_id: str

    def __str__(self) -> str:
        return f"{self.brand_id}/{self.fleet_id}"


@dataclass
class DemoFleet:
    """What the set-up produced: where each car is, the key it drives with, and which cars have a driver."""

    fleet_of: dict[str, FleetRef] = field(default_factory=dict)
    connection_strings: dict[str, str] = field(default_factory=dict)  # direct mode (a stack without DPS)
    drivers: dict[str, str] = field(default_factory=dict)  # vehicle id → the driver's username
    # DPS mode: vehicle id → its entry of the simulator's provisioning file (simulator/provisioning.py)
    provisioning: dict[str, dict[str, Any]] = field(default_factory=dict)
    attestation: dict[str, str] = field(default_factory=dict)  # vehicle id → x509 | symmetricKey (DPS mode)
    region: dict[str, str] = field(default_factory=dict)  # vehicle id → the region it was pre-registered in

    def cars_in(self, fleet: FleetRef) -> list[str]:
        return [car for car, where in self.fleet_of.items() if where == fleet]


def seed_fleets(seed: Seed) -> list[FleetRef]:
    """Every fleet of the seed, brand by brand: the cars are spread over them in this order."""
    return [FleetRef(brand["brandId"], fleet["fleetId"]) for brand in seed["brands"] for fleet in brand["fleets"]]


def operator_of(seed: Seed, fleet: FleetRef) -> str:
    return member_of(seed, OPERATOR_ROLE, fleet.brand_id, fleet.fleet_id)["username"]


async def prepare_fleet(
    http: aiohttp.ClientSession, stack: LocalStack, vehicles: list[str], link_drivers: bool = True
) -> DemoFleet:
    """Tenancy, registrations and (with `link_drivers`: the stack has calendars to sync) driver links, all through
    the API."""
    assert stack.oidc is not None
    seed = stack.oidc.seed
    await seed_tenancy(await ApiClient.as_user(http, stack, platform_admin(seed)["username"]), seed)
    fleets = seed_fleets(seed)
    operators: dict[FleetRef, ApiClient] = {}
    demo = DemoFleet()
    for n, vehicle in enumerate(vehicles):
        where = fleets[n % len(fleets)]
        if where not in operators:
            operators[where] = await ApiClient.as_user(http, stack, operator_of(seed, where))
        path = f"/brands/{where.brand_id}/fleets/{where.fleet_id}/vehicles"
        demo.fleet_of[vehicle] = where
        if stack.dps is None:
            registered = await operators[where].call("POST", path, {"vehicleId": vehicle}, expect=(201,))
            demo.connection_strings[vehicle] = registered["connectionString"]
            continue
        regions = list(stack.regions)
        attestation, region = ("x509", "symmetricKey")[n % 2], regions[(n + n // 2) % len(regions)]
        body = {"vehicleId": vehicle, "provisioning": {"attestation": attestation, "region": region}}
        answer = await operators[where].call("POST", path, body, expect=(201,))
        demo.attestation[vehicle], demo.region[vehicle] = attestation, region
        demo.provisioning[vehicle] = provisioning_entry(stack, answer)
    for driver in seed_drivers(seed) if link_drivers else []:
        target = driver.get("driverOf")
        if target is None:
            continue
        where = FleetRef(target["brandId"], target["fleetId"])
        car = next((c for c in demo.cars_in(where) if c not in demo.drivers), None)
        if car is None or where not in operators:
            continue  # fewer cars than drivers in that fleet
        invitation = await operators[where].call(
            "POST", f"/vehicles/{car}/driver/invitations", {"invitee": driver["oid"]}, expect=(201,)
        )
        me = await ApiClient.as_user(http, stack, driver["username"])
        consent = {"calendar": True, "location": True}
        await me.call("POST", f"/invitations/{invitation['invitationId']}/accept",
                      {"timeZone": DEMO_TIME_ZONE, "consent": consent})  # fmt: skip
        demo.drivers[car] = driver["username"]
    return demo


def provisioning_entry(stack: LocalStack, answer: dict[str, Any]) -> dict[str, Any]:
    """The car's entry of the simulator's provisioning file, from the pre-registration answer: X.509 cars get a
    certificate of the stack's brand CA (the factory's part), symmetric-key cars the development key the API gave."""
    vehicle = answer["registrationId"]
    if answer["provisioning"]["attestation"] == "x509":
        assert stack.pki is not None
        files = issue_device_certificate(stack.pki, vehicle, stack.workdir / "devices")
        attestation = {"type": "x509", "certificate": str(files.cert_file), "key": str(files.key_file)}
    else:
        if not answer.get("deviceKey"):
            raise ApiError("POST", "vehicles", 201, f"{vehicle}: no development key in the answer")
        attestation = {"type": "symmetricKey", "deviceKey": answer["deviceKey"]}
    return {
        "provisioningHost": answer["dps"]["globalEndpoint"],
        "idScope": answer["dps"]["idScope"],
        "registrationId": vehicle,
        "attestation": attestation,
    }


async def operator_view(http: aiohttp.ClientSession, stack: LocalStack, demo: DemoFleet) -> OperatorView:
    """The first fleet's operator signs in and lists their cars, then asks for one car of every other fleet."""
    assert stack.oidc is not None
    seed = stack.oidc.seed
    fleet = seed_fleets(seed)[0]
    username = operator_of(seed, fleet)
    view = OperatorView(username, fleet.brand_id, fleet.fleet_id, demo.cars_in(fleet))
    try:
        operator = await ApiClient.as_user(http, stack, username)
        me = await operator.call("GET", "/me")
        view.roles = list(me["roles"])
        view.where = [_where(grant) for grant in me["grants"]]
        view.rows = [VehicleRow.from_summary(car) async for car in operator.pages("/vehicles")]
        for car, where in _one_car_per_fleet(demo, fleet).items():
            expected = 403 if where.brand_id == fleet.brand_id else 404
            view.probes.append(Probe(car, str(where), expected, await operator.status("GET", f"/vehicles/{car}")))
    except (ApiError, aiohttp.ClientError) as error:
        view.error = str(error)
    return view


def _one_car_per_fleet(demo: DemoFleet, own: FleetRef) -> dict[str, FleetRef]:
    """The first car of each other fleet: one of the operator's brand (403) and one of another brand (404)."""
    first: dict[FleetRef, str] = {}
    for car, where in demo.fleet_of.items():
        if where != own:
            first.setdefault(where, car)
    return {car: where for where, car in first.items()}


def _where(grant: dict[str, str | None]) -> str:
    scope = "/".join(part for part in (grant.get("brandId"), grant.get("fleetId"), grant.get("vehicleId")) if part)
    return f"{grant['role']} in {scope or 'the platform'}"
