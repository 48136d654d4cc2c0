"""Cloud-controlled collection end to end on the real local IoT Hub (issue 16): the backend's PUT of a collection
policy reaches a car's Edge module, a real `azure-iot-device` IoTHubModuleClient, as a desired-property patch
through LocalIoTHubGateway; the car's module code (edge/policy.py `parse`) accepts what it receives, and the whole
module twin after the hub merged the patches (what a restarted module reads) is the new policy, not a mix. The
local hub refuses property names IoT Hub refuses ('.' among them), so the signal paths travel as values.
A car with no module identity is skipped and counted. The storage, layering and the cars' query also run on the
local Cosmos server.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any, cast

import pytest

from edge import policy as edge
from shared.collection.rollout import Continuation
from shared.collection.service import CollectionService
from shared.containers import TENANCY, VEHICLES, partition_keys
from shared.device_messages import safe_id
from shared.fleet.service import FleetService
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.stores.cosmos import CosmosDocumentStore
from shared.stores.memory import MemoryDocumentStore
from shared.stores.queues import MemoryQueue
from shared.tenancy.documents import BRAND_DOC_ID, fleet_doc_id
from tests.fleet_support import add_fleet, api_app, request
from tests.integration.test_local_iothub_methods import Hub, local_hub  # noqa: F401 - the fixture
from tests.integration.test_local_iothub_modules import MODULE, module_client
from tests.integration.test_local_iothub_revocation import wait_until

pytestmark = pytest.mark.integration


async def world() -> MemoryDocumentStore:
    store = MemoryDocumentStore(partition_keys())
    await store.upsert(TENANCY, {"id": BRAND_DOC_ID, "kind": "brand", "brandId": "contoso", "name": "Contoso"})
    await store.upsert(TENANCY, {"id": fleet_doc_id("berlin"), "kind": "fleet", "brandId": "contoso",
                                 "fleetId": "berlin", "name": "Berlin"})  # fmt: skip
    return store


async def register(store: MemoryDocumentStore, vehicle_id: str) -> None:
    """The vehicle document registration writes (only the fields the push reads)."""
    document = {"id": safe_id(vehicle_id), "type": "vehicle", "vehicleId": vehicle_id, "brandId": "contoso",
                "fleetId": "berlin"}  # fmt: skip
    await store.upsert(VEHICLES, document)


async def test_a_put_policy_reaches_the_module_and_replaces_the_old_one(local_hub: Hub) -> None:  # noqa: F811
    h, patches = local_hub, list[dict[str, Any]]()
    store = await world()
    await register(store, "car-edge")
    await register(store, "car-plain")
    h.registry.provision("car-plain")  # a car without the Edge module
    module = module_client(h, "car-edge")
    await module.connect()
    service = CollectionService(store, h.gateway, module_id=MODULE)
    try:
        await asyncio.to_thread(setattr, module, "on_twin_desired_properties_patch_received", patches.append)
        first = await service.put("contoso", None, {
            "signals": {"Vehicle.Speed": {"rateHz": 10}, "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current":
                        {"rateHz": 0.1}},
            "captures": [{"name": "hard_braking", "trigger": {"signal": "Vehicle.Speed", "dropPerSecond": 12}}],
        })  # fmt: skip
        assert counts(first["push"]) == {"cars": 2, "patched": 1, "withoutModule": 1, "failed": 0, "overridden": 0}
        assert await wait_until(lambda: len(patches) == 1)
        assert [e["path"] for e in patches[0]["collection"]["signals"]] == [  # an array: IoT Hub refuses '.' in names
            "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", "Vehicle.Speed"]  # fmt: skip
        received = edge.parse(patches[0]["collection"])
        assert received.version == "brand-1"
        assert received.rule("Vehicle.Speed").rate_hz == 10
        assert [c.name for c in received.captures] == ["hard_braking"]

        second = await service.put("contoso", "berlin", {"intervalSeconds": 2, "default": {"rateHz": 0.5}})
        assert second["push"]["patched"] == 1
        assert await wait_until(lambda: len(patches) == 2)
        received = edge.parse(patches[1]["collection"])
        assert received.version == "fleet-1"
        assert received.interval == 2
        assert received.rule("Vehicle.Speed").rate_hz == 0.5  # the brand's signal rule is gone, not merged

        # the module reports what it applied; the backend reads it back from the module twin
        await module.patch_twin_reported_properties({"collection": {"version": received.version, "status": "applied"}})
        twin = await module.get_twin()
    finally:
        await module.shutdown()
    collection = cast(dict[str, Any], twin)["desired"]["collection"]
    restarted = edge.parse(collection)  # what the module applies after a restart
    assert restarted.version == "fleet-1"
    assert collection["signals"] == []  # the brand's signals gone from the twin, not reset to the default
    assert restarted.captures == ()
    for path in ("Vehicle.Speed", "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", "Vehicle.Other"):
        assert restarted.rule(path).rate_hz == 0.5
    read = await h.gateway.get_module_twin("car-edge", MODULE)
    assert read.reported["collection"] == {"version": "fleet-1", "status": "applied"}


def counts(push: dict[str, Any]) -> dict[str, Any]:
    return {k: push[k] for k in ("cars", "patched", "withoutModule", "failed", "overridden")}


async def test_a_rollout_pages_through_a_brands_cars_on_the_local_cosmos_server(
    cosmos_store: CosmosDocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keyset pages of the scope's cars (TOP, c.id > @after, ORDER BY brandId, id) and the progress document on
    a real query engine: every car once, a page per message, duplicates recognised."""
    monkeypatch.setenv("COLLECTION_PUSH_PAGE", "3")  # the setting, read when the service is made
    brand = f"r-{uuid.uuid4().hex[:8]}"
    gateway, queue = MemoryIoTHubGateway(), MemoryQueue()
    await add_fleet(cosmos_store, brand, "berlin")
    cars = [f"{brand}-{n:02}" for n in range(11)]
    for car in cars:
        await cosmos_store.create(
            VEHICLES, {"id": safe_id(car), "vehicleId": car, "brandId": brand, "fleetId": "berlin"}
        )
    collection = CollectionService(cosmos_store, gateway, module_id=MODULE, queue=lambda: queue)
    assert (await collection.put(brand, None, {"default": {"rateHz": 0.5}}))["push"]["state"] == "running"
    outcomes = []
    while queue.messages:
        for body in queue.drain():
            step = Continuation.decode(body)
            assert step is not None
            outcomes += [await collection.continue_rollout(step), await collection.continue_rollout(step)]
    assert outcomes.count("done") == 1
    assert outcomes.count("stale") == len(outcomes) // 2
    assert {gateway.module_desired[(car, MODULE)]["collection"]["version"] for car in cars} == {"brand-1"}
    push = (await collection.get(brand, None))["push"]
    assert (push["state"], push["cars"], push["patched"]) == ("done", len(cars), len(cars))


async def test_the_sweep_finds_a_stalled_rollout_on_the_local_cosmos_server(
    cosmos_store: CosmosDocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep's cross-partition query of running rollouts on a real query engine: one whose message was lost is
    found 20 minutes later and its step sent again; the progress records the sweep (etag-conditional replace)."""
    monkeypatch.setenv("COLLECTION_PUSH_PAGE", "3")
    brand = f"s-{uuid.uuid4().hex[:8]}"
    gateway, queue = MemoryIoTHubGateway(), MemoryQueue()
    await add_fleet(cosmos_store, brand, "berlin")
    for n in range(7):
        car = f"{brand}-{n:02}"
        await cosmos_store.create(
            VEHICLES, {"id": safe_id(car), "vehicleId": car, "brandId": brand, "fleetId": "berlin"}
        )
    now = [dt.datetime.now(dt.UTC)]
    collection = CollectionService(cosmos_store, gateway, lambda: now[0], module_id=MODULE, queue=lambda: queue)
    await collection.put(brand, None, {"default": {"rateHz": 0.5}})
    (lost,) = queue.drain()
    now[0] += dt.timedelta(minutes=21)
    await collection.sweep()  # other tests' rollouts in this database may be swept too: only ours is checked
    mine = [body for body in queue.drain() if Continuation.decode(body) == Continuation.decode(lost)]
    assert len(mine) == 1
    stored = await cosmos_store.read(TENANCY, brand, "collection-rollout")
    assert stored is not None
    assert (stored.document["state"], stored.document["sweeps"]) == ("running", 1)


async def test_policies_on_the_local_cosmos_server(cosmos_store: CosmosDocumentStore) -> None:
    """Storage, layering and the cars' query on a real query engine; concurrent PUTs get distinct versions (the
    etag-conditional write)."""
    brand, fleet = f"b-{uuid.uuid4().hex[:8]}", "berlin"
    gateway = MemoryIoTHubGateway()
    service = FleetService(cosmos_store, gateway, None, None)  # type: ignore[arg-type]
    await add_fleet(cosmos_store, brand, fleet)
    await add_fleet(cosmos_store, brand, "paris")
    for car, where in ((f"{brand}-1", fleet), (f"{brand}-2", fleet), (f"{brand}-3", "paris")):
        path = f"/api/brands/{brand}/fleets/{where}/vehicles"
        assert (await request(api_app(service), "POST", path, body={"vehicleId": car})).status == 201
    collection = CollectionService(cosmos_store, gateway, module_id=MODULE)
    brand_put = await collection.put(brand, None, {"default": {"rateHz": 0.5}})
    assert counts(brand_put["push"]) == {"cars": 3, "patched": 3, "withoutModule": 0, "failed": 0, "overridden": 0}
    answers = await asyncio.gather(*(collection.put(brand, fleet, {"intervalSeconds": n}) for n in (2, 3, 4)))
    assert sorted(a["version"] for a in answers) == ["fleet-1", "fleet-2", "fleet-3"]
    assert (await collection.get(brand, fleet))["version"] == "fleet-3"
    again = await collection.put(brand, None, {"default": {"rateHz": 0.2}})
    assert counts(again["push"]) == {"cars": 1, "patched": 1, "withoutModule": 0, "failed": 0, "overridden": 2}
    assert gateway.module_desired[(f"{brand}-3", MODULE)]["collection"]["version"] == "brand-2"
    assert gateway.module_desired[(f"{brand}-1", MODULE)]["collection"]["version"] in {"fleet-1", "fleet-2", "fleet-3"}
