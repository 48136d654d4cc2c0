"""Issue 15 end to end in the local stack: cars provision themselves through the local DPS onto the hub the app's
allocation function chose, and everything the backend does for them goes through that hub.

The stack runs with `provisioning` (two hubs, "eu" = hub A and "us" = hub B, the local DPS with an X.509 group and
the symmetric-key group `development-fleet`, both calling POST /api/provisioning/allocate on the local function
host). A fleet operator signs in with the local OpenID Connect provider and pre-registers cars through the API
(POST /api/brands/{b}/fleets/{f}/vehicles with `provisioning`); each car boots with the real `azure-iot-device`
ProvisioningDeviceClient (simulator/provisioning.py) and then drives as a VirtualCar on its hub: its telemetry is
ingested, a command reaches it through its hub, its twin comes from its hub. An unregistered and a revoked car are
refused at provisioning and cannot connect. A re-provisioned car (a renewed certificate, the way a car re-provisions
in the field) stays on its hub and loses and duplicates no telemetry; a car moved to another region through the API
(PUT /api/vehicles/{id}/provisioning/region) re-provisions mid-drive onto the new region's hub and loses and
duplicates nothing either.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytest.importorskip("azure.iot.device", reason="azure-iot-device is not installed")

from azure.iot.device.exceptions import ClientError

from devstack.api_client import ApiClient
from devstack.demo_fleet import operator_of, seed_fleets
from devstack.fault_check import delivery, read_stored
from devstack.iothub.hub import wait_connected
from devstack.stack import HUB_A_REGION, HUB_B_REGION, LocalStack, StackConfig, drain, free_loopback_address
from devstack.tenancy_seed import platform_admin, seed_tenancy
from devstack.tls import issue_device_certificate
from shared.containers import VEHICLES
from shared.device_messages import safe_id
from shared.stores.cosmos import CosmosDocumentStore
from simulator.car import CarOptions, VirtualCar
from simulator.provisioning import ProvisionedDevice, ProvisioningConfig, derive_device_key, provision

pytestmark = pytest.mark.integration

X509_CAR = "prov-x509-eu-1"
SAS_CAR = "prov-sas-us-1"
REVOKED_CAR = "prov-revoked-1"
UNREGISTERED = "prov-unknown-1"
OVERRIDES = {
    "COMMAND_RESPONSE_TIMEOUT_SECONDS": "5",
    "COMMAND_CONNECT_TIMEOUT_SECONDS": "1",
    "COMMAND_SWEEP_SCHEDULE": "*/2 * * * * *",
}
OPTIONS = CarOptions(sample_seconds=0.25, samples_per_message=2, ask_for_meetings=False, trip_seconds=8.0)


@dataclass
class World:
    stack: LocalStack
    operator: ApiClient
    certs: Path
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # vehicle id → the pre-registration answer
    cars: dict[str, VirtualCar] = field(default_factory=dict)
    devices: dict[str, ProvisionedDevice] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    twins: dict[str, dict[str, Any]] = field(default_factory=dict)  # what each car read from its hub at first boot

    @property
    def ca_pem(self) -> str:
        assert self.stack.tls is not None
        return self.stack.tls.ca_pem

    async def preregister(self, vehicle_id: str, attestation: str, region: str) -> dict[str, Any]:
        fleet = seed_fleets(self.stack.oidc.seed)[0] if self.stack.oidc else None
        assert fleet is not None
        body = {"vehicleId": vehicle_id, "provisioning": {"attestation": attestation, "region": region}}
        answer: dict[str, Any] = await self.operator.call(
            "POST", f"/brands/{fleet.brand_id}/fleets/{fleet.fleet_id}/vehicles", body, expect=(201,)
        )
        self.answers[vehicle_id] = answer
        return answer

    def x509_config(self, vehicle_id: str) -> ProvisioningConfig:
        """What the factory flashed: a certificate from the brand's CA (CN = registration id) and, from the
        pre-registration answer, DPS's endpoint and id scope."""
        assert self.stack.pki is not None
        files = issue_device_certificate(self.stack.pki, vehicle_id, self.certs / uuid.uuid4().hex)
        dps = self.answers[vehicle_id]["dps"] if vehicle_id in self.answers else self.dps_json()
        return ProvisioningConfig(
            dps["globalEndpoint"], dps["idScope"], vehicle_id, certificate=files.cert_file, key=files.key_file,
            server_verification_cert=self.ca_pem,
        )  # fmt: skip

    def sas_config(self, vehicle_id: str, device_key: str) -> ProvisioningConfig:
        dps = self.answers[vehicle_id]["dps"] if vehicle_id in self.answers else self.dps_json()
        return ProvisioningConfig(
            dps["globalEndpoint"],
            dps["idScope"],
            vehicle_id,
            device_key=device_key,
            server_verification_cert=self.ca_pem,
        )

    def dps_json(self) -> dict[str, str]:
        return {"globalEndpoint": self.stack.dps_host, "idScope": self.stack.dps_id_scope}

    async def boot(self, vehicle_id: str, config: ProvisioningConfig, index: int) -> ProvisionedDevice:
        """First boot: provision, read the twin from the assigned hub, then drive as a VirtualCar."""
        device = await asyncio.wait_for(provision(config), 60)
        # Device clients are created off the loop: creating one waits for the SDK's shared pipeline thread, which may
        # be in another car's blocking TLS handshake with a server on this very loop (simulator/provisioning.py).
        client = await asyncio.to_thread(device.client)
        await client.connect()
        try:
            self.twins[vehicle_id] = await client.get_twin()
        finally:
            await client.shutdown()
        car = await asyncio.to_thread(VirtualCar, index, device, None, 11, OPTIONS)
        self.cars[vehicle_id], self.devices[vehicle_id] = car, device
        self.tasks[vehicle_id] = asyncio.create_task(car.run(time.time() + 600))
        return device

    async def document(self, vehicle_id: str) -> dict[str, Any]:
        """The vehicle document in Cosmos (where the allocation function records the car's hub)."""
        env = self.stack.environ
        store = CosmosDocumentStore.from_settings(env["COSMOS_ENDPOINT"], env["COSMOS_DATABASE"], key=env["COSMOS_KEY"])
        try:
            stored = await store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        finally:
            await store.close()
        assert stored is not None
        return dict(stored.document)

    async def vehicle(self, vehicle_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.operator.call("GET", f"/vehicles/{vehicle_id}")
        return result

    async def command(self, vehicle_id: str, name: str) -> dict[str, Any]:
        sent: dict[str, Any] = await self.operator.call(
            "POST", f"/vehicles/{vehicle_id}/commands", {"name": name, "params": {}}, expect=(200, 201),
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )  # fmt: skip
        deadline = time.monotonic() + 40
        command = sent
        while command["status"] not in {"succeeded", "confirmed", "failed", "rejected", "expired"}:
            assert time.monotonic() < deadline, command
            await asyncio.sleep(0.5)
            command = await self.operator.call("GET", f"/vehicles/{vehicle_id}/commands/{sent['commandId']}")
        return command


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    config = StackConfig([], overrides=OVERRIDES, use_graph_sandbox=False, provisioning=True)
    async with LocalStack(config.with_free_ports(free_loopback_address())) as stack, aiohttp.ClientSession() as http:
        assert stack.oidc is not None
        seed = stack.oidc.seed
        await seed_tenancy(await ApiClient.as_user(http, stack, platform_admin(seed)["username"]), seed)
        operator = await ApiClient.as_user(http, stack, operator_of(seed, seed_fleets(seed)[0]))
        w = World(stack, operator, tmp_path_factory.mktemp("certs"))
        try:
            yield w
        finally:
            for task in w.tasks.values():
                task.cancel()
            await asyncio.gather(*w.tasks.values(), return_exceptions=True)


async def refused(registration: Any) -> str:
    """The SDK's error when DPS did not assign the car (a failed registration: the allocation refused it)."""
    with pytest.raises(ClientError) as caught:
        await asyncio.wait_for(registration, 60)
    return str(caught.value.__cause__ or caught.value)


async def cannot_connect(device: ProvisionedDevice) -> None:
    client = await asyncio.to_thread(device.client)
    try:
        with pytest.raises(Exception):  # noqa: B017 - the SDK reports a refused CONNECT in several ways
            await asyncio.wait_for(client.connect(), 20)
    finally:
        await client.shutdown()


def nowhere(stack: LocalStack, device_id: str) -> bool:
    return not any(hub.registry.exists(device_id) for hub in stack.hubs.values())


async def test_the_stack_runs_two_hubs_and_dps_and_tells_the_app(world: World) -> None:
    stack = world.stack
    assert set(stack.regions) == {HUB_A_REGION, HUB_B_REGION}
    assert stack.regions[HUB_A_REGION] == stack.config.iothub_host
    assert len(stack.hubs) == 2
    assert stack.dps is not None
    assert {g.group_id for g in stack.dps.groups} >= {"development-fleet"}
    assert all(g.webhook_url == f"{stack.http_url}/api/provisioning/allocate" for g in stack.dps.groups)
    assert stack.environ["DPS_GLOBAL_ENDPOINT"] == stack.dps_host
    assert stack.environ["IOTHUB_HOSTNAME"] == stack.config.iothub_host


async def test_an_x509_car_and_a_symmetric_key_car_provision_onto_their_regions_hubs_and_work_there(
    world: World,
) -> None:
    stack = world.stack
    x509_answer = await world.preregister(X509_CAR, "x509", HUB_A_REGION)
    sas_answer = await world.preregister(SAS_CAR, "symmetricKey", HUB_B_REGION)
    assert x509_answer.get("deviceKey") is None  # X.509: no secret in the answer
    assert x509_answer["dps"] == {"globalEndpoint": stack.dps_host, "idScope": stack.dps_id_scope}
    assert sas_answer["development"] is True
    assert sas_answer["deviceKey"] == derive_device_key(stack.group_key, SAS_CAR)
    assert nowhere(stack, X509_CAR)
    assert nowhere(stack, SAS_CAR)  # pre-registered: no identity anywhere yet

    x509_car, sas_car = await asyncio.gather(
        world.boot(X509_CAR, world.x509_config(X509_CAR), 0),
        world.boot(SAS_CAR, world.sas_config(SAS_CAR, sas_answer["deviceKey"]), 1),
    )
    assert (x509_car.assigned_hub, x509_car.device_id) == (stack.regions[HUB_A_REGION], X509_CAR)
    assert (sas_car.assigned_hub, sas_car.device_id) == (stack.regions[HUB_B_REGION], SAS_CAR)
    assert stack.host_of(X509_CAR) == stack.regions[HUB_A_REGION]
    assert stack.host_of(SAS_CAR) == stack.regions[HUB_B_REGION]
    for car, device in ((X509_CAR, x509_car), (SAS_CAR, sas_car)):  # the allocation function recorded its choice
        provisioning = (await world.document(car))["provisioning"]
        assert (provisioning["status"], provisioning["hub"]) == ("assigned", device.assigned_hub)
    assert stack.hubs[stack.regions[HUB_A_REGION]].registry.authenticates_by_certificate(X509_CAR)
    assert not stack.hubs[stack.regions[HUB_A_REGION]].registry.exists(SAS_CAR)
    assert not stack.hubs[stack.regions[HUB_B_REGION]].registry.exists(X509_CAR)
    # the initial twin the allocation function chose, read by the car from its own hub
    assert stack.oidc is not None
    for car in (X509_CAR, SAS_CAR):
        desired = world.twins[car]["desired"]
        assert desired["brand"]["brandId"] == seed_fleets(stack.oidc.seed)[0].brand_id
        assert "consent" in desired
    for car in (X509_CAR, SAS_CAR):
        assert await wait_connected(stack.hub_of(car), [car], 30)

    # telemetry through each hub is ingested
    deadline = time.monotonic() + 40
    while True:
        details = {car: await world.vehicle(car) for car in (X509_CAR, SAS_CAR)}
        if all(d["signals"] for d in details.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert all(d["signals"] for d in details.values()), details

    # a command reaches each car through its hub (a direct method there)
    for car in (X509_CAR, SAS_CAR):
        command = await world.command(car, "lock")
        assert command["status"] in {"succeeded", "confirmed"}, command
        assert command["delivery"]["via"] == "method"
        assert any(c["name"] == "lock" and c["via"] == "method" for c in world.cars[car].log.commands)
    hub_b = stack.hubs[stack.regions[HUB_B_REGION]]
    assert sum(n for k, n in hub_b.counters.items() if k.startswith("d2c:")) > 0


async def test_an_unregistered_car_is_refused_at_provisioning_and_cannot_connect(world: World) -> None:
    stack = world.stack
    # a development-fleet car that knows the group key, and a car with a valid certificate of the brand's CA
    sas = world.sas_config(UNREGISTERED, derive_device_key(stack.group_key, UNREGISTERED))
    assert "failed registration status" in await refused(provision(sas))
    assert "failed registration status" in await refused(provision(world.x509_config(UNREGISTERED + "-x")))
    assert nowhere(stack, UNREGISTERED)
    assert nowhere(stack, UNREGISTERED + "-x")
    for host in stack.hubs:  # wherever it tries, no hub knows it
        await cannot_connect(ProvisionedDevice(sas, host, UNREGISTERED))


async def test_a_revoked_car_is_cut_off_refused_at_provisioning_and_cannot_connect(world: World) -> None:
    stack = world.stack
    answer = await world.preregister(REVOKED_CAR, "symmetricKey", HUB_B_REGION)
    config = world.sas_config(REVOKED_CAR, answer["deviceKey"])
    device = await world.boot(REVOKED_CAR, config, 2)
    assert await wait_connected(stack.hub_of(REVOKED_CAR), [REVOKED_CAR], 30)

    revoked = await world.operator.call("POST", f"/vehicles/{REVOKED_CAR}/revoke", None, expect=(200,))
    assert revoked["status"] == "revoked"
    assert revoked["hub"] == device.assigned_hub
    hub = stack.hubs[device.assigned_hub]
    assert not hub.connected(REVOKED_CAR)  # the hub closed its connection when the device was disabled
    assert not hub.registry.enabled(REVOKED_CAR)
    world.tasks.pop(REVOKED_CAR).cancel()
    assert "failed registration status" in await refused(provision(config))
    await cannot_connect(device)


async def test_a_re_provisioned_car_loses_and_duplicates_no_telemetry(world: World) -> None:
    """The X.509 car's certificate is renewed: it falls asleep, provisions again with the new certificate (same
    registration id), and wakes on the hub DPS gives it (the same one: its region has one hub)."""
    stack = world.stack
    if X509_CAR not in world.cars:  # run on its own: boot the X.509 car first
        await world.preregister(X509_CAR, "x509", HUB_A_REGION)
        await world.boot(X509_CAR, world.x509_config(X509_CAR), 0)
    car = world.cars[X509_CAR]
    await car.wait_awake()
    await asyncio.sleep(2)  # some telemetry before
    before = len(car.log.sent)
    await car.sleep()
    renewed = await asyncio.wait_for(provision(world.x509_config(X509_CAR)), 60)
    assert renewed.assigned_hub == world.devices[X509_CAR].assigned_hub
    assert stack.dps is not None
    old_client = car.client
    car.client = await asyncio.to_thread(renewed.client, 30)
    await old_client.shutdown()
    await car.wake()
    await asyncio.sleep(3)  # telemetry after
    assert len(car.log.sent) > before
    task = world.tasks.pop(X509_CAR)
    await car.sleep()  # the car stops sending; what it sampled went out
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    sent = [s["seq"] for s in car.log.sent]
    assert await drain(stack, 30)
    store = CosmosDocumentStore.from_settings(
        stack.environ["COSMOS_ENDPOINT"], stack.environ["COSMOS_DATABASE"], key=stack.environ["COSMOS_KEY"]
    )
    try:
        stored = await read_stored(store, X509_CAR)
    finally:
        await store.close()
    result = delivery({X509_CAR: sent}, stored)
    assert (result.lost, result.duplicated) == ({}, {})  # nothing lost, nothing twice
    assert sorted(entry["seq"] for entry in stored.history(X509_CAR)) == sorted(sent)  # and nothing else
    assert len(sent) == len(set(sent))
    vehicle = await world.vehicle(X509_CAR)
    assert vehicle["signals"]


async def test_a_car_moved_to_another_region_re_provisions_onto_its_hub_and_loses_and_duplicates_nothing(
    world: World,
) -> None:
    """The symmetric-key car (region us, hub B) is sold to Europe: the operator moves it to region eu through the API
    while it drives; it re-provisions mid-drive (DPS: re-provision and migrate data), the allocation function does not
    keep it on hub B (outside its new region) and puts it on hub A; it keeps driving there. Every seq it sent is
    stored exactly once, and commands and its twin then go through hub A."""
    stack = world.stack
    hub_a, hub_b = stack.regions[HUB_A_REGION], stack.regions[HUB_B_REGION]
    if SAS_CAR not in world.cars:  # run on its own: boot the symmetric-key car first
        answer = await world.preregister(SAS_CAR, "symmetricKey", HUB_B_REGION)
        await world.boot(SAS_CAR, world.sas_config(SAS_CAR, answer["deviceKey"]), 1)
    assert world.devices[SAS_CAR].assigned_hub == hub_b
    car = world.cars[SAS_CAR]
    await car.wait_awake()
    await asyncio.sleep(2)  # some telemetry through hub B

    moved = await world.operator.call(
        "PUT", f"/vehicles/{SAS_CAR}/provisioning/region", {"region": HUB_A_REGION}, expect=(200,)
    )
    assert moved == {
        "vehicleId": SAS_CAR,
        "region": HUB_A_REGION,
        "previousRegion": HUB_B_REGION,
        "status": "assigned",
        "hub": hub_b,
        "movesAtNextProvisioning": True,
    }
    assert stack.host_of(SAS_CAR) == hub_b  # nothing moves before the car provisions again
    await asyncio.sleep(1)  # it keeps driving on hub B meanwhile
    before = len(car.log.sent)

    await car.sleep()  # what it sampled goes out through hub B first
    again = await asyncio.wait_for(provision(world.sas_config(SAS_CAR, world.answers[SAS_CAR]["deviceKey"])), 60)
    assert (again.assigned_hub, again.device_id) == (hub_a, SAS_CAR)
    assert stack.hubs[hub_a].registry.exists(SAS_CAR)
    assert not stack.hubs[hub_b].registry.exists(SAS_CAR)  # DPS moved the identity
    provisioning = (await world.document(SAS_CAR))["provisioning"]
    assert (provisioning["region"], provisioning["status"], provisioning["hub"]) == (HUB_A_REGION, "assigned", hub_a)
    old_client = car.client
    car.client = await asyncio.to_thread(again.client, 30)
    await old_client.shutdown()
    world.devices[SAS_CAR] = again
    await car.wake()
    assert await wait_connected(stack.hubs[hub_a], [SAS_CAR], 30)
    await asyncio.sleep(3)  # telemetry through hub A
    locks_before = sum(1 for c in car.log.commands if c["name"] == "lock" and c["via"] == "method")
    assert len(car.log.sent) > before

    # commands and the twin go through hub A now
    command = await world.command(SAS_CAR, "lock")
    assert command["status"] in {"succeeded", "confirmed"}, repr(command)
    assert command["delivery"]["via"] == "method"
    locks = sum(1 for c in car.log.commands if c["name"] == "lock" and c["via"] == "method")
    assert locks == locks_before + 1  # it reached the car, now on hub A
    desired = stack.hubs[hub_a].twins.get(SAS_CAR).desired  # migrated from hub B, with the allocation's twin
    assert stack.oidc is not None
    assert desired["brand"]["brandId"] == seed_fleets(stack.oidc.seed)[0].brand_id
    assert "consent" in desired

    task = world.tasks.pop(SAS_CAR)
    await car.sleep()  # the car stops sending; what it sampled went out
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    sent = [s["seq"] for s in car.log.sent]
    assert await drain(stack, 30)
    store = CosmosDocumentStore.from_settings(
        stack.environ["COSMOS_ENDPOINT"], stack.environ["COSMOS_DATABASE"], key=stack.environ["COSMOS_KEY"]
    )
    try:
        stored = await read_stored(store, SAS_CAR)
    finally:
        await store.close()
    result = delivery({SAS_CAR: sent}, stored)
    assert (result.lost, result.duplicated) == ({}, {})  # nothing lost, nothing twice, across both hubs
    assert sorted(entry["seq"] for entry in stored.history(SAS_CAR)) == sorted(sent)  # and nothing else
    assert len(sent) == len(set(sent))
