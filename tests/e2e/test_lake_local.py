"""The lake fills while the local stack runs (issue 18): a car on the real device SDK drives through the local IoT Hub,
ingestion writes Cosmos, and the `lake_export` timer of the local function host (every 2 s here instead of every
minute) exports to the lake in Azurite. Nothing calls the exporter but the host's timer. At the end the lake holds
exactly the samples and trips Cosmos holds for the car.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

pytest.importorskip("azure.iot.device", reason="azure-iot-device is not installed")

from devstack.demo_fleet import prepare_fleet
from devstack.iothub.hub import wait_connected
from devstack.stack import LocalStack, StackConfig, free_loopback_address
from shared.lake.store import BlobLakeStore, read_table
from shared.stores.cosmos import CosmosDocumentStore
from shared.telemetry.history import stored_entries
from simulator.car import CarOptions, VirtualCar

CAR = "lake-car-1"
DRIVE_SECONDS = 20.0
WAIT_SECONDS = 30.0


async def cosmos_samples(store: CosmosDocumentStore) -> list[tuple[Any, ...]]:
    entries = [m for c in await store.query("telemetry", "SELECT * FROM c") for m in stored_entries(c["messages"])]
    for vehicle in await store.query("vehicles", "SELECT * FROM c WHERE c.vehicleId = @v", {"@v": CAR}):
        entries += stored_entries((vehicle.get("ingest") or {}).get("pending"))
    speed = "Vehicle.Speed"
    return sorted((m["seq"], i, s["signals"].get(speed)) for m in entries for i, s in enumerate(m["samples"]))


async def lake_samples(lake: BlobLakeStore) -> list[tuple[Any, ...]]:
    rows = (await read_table(lake, "samples")).to_pylist()
    return sorted((r["seq"], r["sample"], r["speed_kmh"]) for r in rows if r["vehicle_id"] == CAR)


async def test_the_host_timer_keeps_the_lake_equal_to_cosmos() -> None:
    config = StackConfig([], use_maps_sandbox=False).with_free_ports(free_loopback_address())
    config = replace(config, overrides={**config.overrides, "LAKE_EXPORT_SCHEDULE": "*/2 * * * * *"})
    async with LocalStack(config) as stack, aiohttp.ClientSession() as http:
        assert stack.tls is not None
        assert stack.host is not None
        demo = await prepare_fleet(http, stack, [CAR], link_drivers=False)
        store = CosmosDocumentStore.from_settings(
            stack.environ["COSMOS_ENDPOINT"], stack.environ["COSMOS_DATABASE"], key=stack.environ["COSMOS_KEY"]
        )
        lake = BlobLakeStore.from_settings()  # the stack's settings: Azurite, container `lake`
        try:
            # GIVEN a car driving a trip of 8 s, two samples per message
            options = CarOptions(sample_seconds=0.5, samples_per_message=2, ask_for_meetings=False, trip_seconds=8.0)
            car = VirtualCar(0, demo.connection_strings[CAR], stack.tls.ca_pem, 5, options)
            await asyncio.wait_for(
                asyncio.gather(car.run(time.time() + DRIVE_SECONDS), wait_connected(stack.hub, [CAR], 30)),
                DRIVE_SECONDS + 40,
            )

            # THEN within seconds of the car stopping, the lake (filled by the host's timer alone) equals Cosmos
            deadline = time.monotonic() + WAIT_SECONDS
            expected: list[tuple[Any, ...]] = []
            got: list[tuple[Any, ...]] = []
            while time.monotonic() < deadline:
                expected, got = await cosmos_samples(store), await lake_samples(lake)
                if expected and got == expected:
                    break
                await asyncio.sleep(1.0)
            assert got == expected
            assert len(expected) >= 20
            trips = [t for t in await store.query("trips", "SELECT * FROM c") if t["vehicleId"] == CAR]
            lake_trips = [t for t in (await read_table(lake, "trips")).to_pylist() if t["vehicle_id"] == CAR]
            assert sorted((t["id"], t["status"]) for t in trips) == sorted(
                (t["trip_id"], t["status"]) for t in lake_trips
            )
            assert stack.host.stats["lake_export:ok"] >= 2
            assert stack.host.stats["lake_export:failed"] == 0
        finally:
            await lake.close()
            await store.close()
