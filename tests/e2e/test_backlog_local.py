"""The ingestion backlog on the whole local stack (issue 20): a car on the real device SDK sends through the local
IoT Hub; while the telemetry consumer is stopped its backlog grows, measured as in Azure from the partitions' last
sequence numbers and the checkpoint blobs the local host writes to Azurite; resumed, it drains to 0. The
`ingest_backlog` timer of the local host (every 2 s here instead of every minute) records the same figures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

import aiohttp
import pytest

pytest.importorskip("azure.iot.device", reason="azure-iot-device is not installed")

from devstack.demo_fleet import prepare_fleet
from devstack.iothub.hub import wait_connected
from devstack.stack import LocalStack, StackConfig, free_loopback_address
from shared.observability import backlog, metrics
from simulator.car import CarOptions, VirtualCar

CAR = "backlog-car-1"
DRIVE_SECONDS = 25.0
WAIT_SECONDS = 30.0


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not await check():
        assert time.monotonic() < deadline, f"still not {what} after {WAIT_SECONDS} s"
        await asyncio.sleep(0.25)


async def telemetry_backlog() -> int:
    """What the timer measures, for the telemetry consumer, over every partition."""
    return sum(b.events for b in await backlog.run() if b.function == "ingest_telemetry")


async def test_a_stopped_consumer_builds_a_backlog_that_drains_when_it_resumes() -> None:
    config = StackConfig([], use_maps_sandbox=False).with_free_ports(free_loopback_address())
    config = replace(config, overrides={**config.overrides, "INGEST_BACKLOG_SCHEDULE": "*/2 * * * * *"})
    async with LocalStack(config) as stack, aiohttp.ClientSession() as http:
        assert stack.tls is not None
        assert stack.host is not None
        [consumer] = [t for t in stack.host.event_hub_triggers if t.spec.name == "ingest_telemetry"]
        demo = await prepare_fleet(http, stack, [CAR], link_drivers=False)
        options = CarOptions(sample_seconds=0.25, samples_per_message=1, ask_for_meetings=False, trip_seconds=8.0)
        car = VirtualCar(0, demo.connection_strings[CAR], stack.tls.ca_pem, 5, options)
        driving = asyncio.create_task(car.run(time.time() + DRIVE_SECONDS))
        try:
            await wait_connected(stack.hub, [CAR], 30)
            telemetry = stack.event_hubs.hub(stack.environ["TELEMETRY_EVENTHUB"])

            # GIVEN the car's first messages ingested
            async def sent_and_caught_up() -> bool:
                return len(telemetry) > 0 and consumer.backlog() == 0 and await telemetry_backlog() == 0

            await eventually(sent_and_caught_up, "ingesting the car's first messages")

            # WHEN the telemetry consumer stops while the car keeps sending
            consumer.pause()
            seen: list[int] = []

            async def grew() -> bool:
                seen.append(await telemetry_backlog())
                return seen[-1] >= 3 and len(set(seen)) >= 3

            # THEN its backlog grows, message by message, as the host's own count says
            await eventually(grew, "growing")
            assert seen == sorted(seen)
            assert seen[-1] <= consumer.backlog()

            # WHEN it resumes, THEN the backlog drains to 0 (the car still sending or done)
            consumer.resume()
            await asyncio.wait_for(driving, DRIVE_SECONDS + 30)

            async def drained() -> bool:
                return consumer.backlog() == 0 and await telemetry_backlog() == 0

            await eventually(drained, "drained")

            # AND the host's timer recorded the backlog it saw while stopped, and 0 once drained
            view = metrics.local_view()
            recorded = [
                s for s in view.collect().get(backlog.BACKLOG, []) if s.attributes["function"] == "ingest_telemetry"
            ]
            assert max(s.maximum or 0 for s in recorded) > 0
            view.reset()

            async def timer_ran() -> bool:
                rows = view.collect().get(backlog.BACKLOG, [])
                return any(s.attributes["function"] == "ingest_telemetry" and s.count for s in rows)

            await eventually(timer_ran, "recorded by the timer")
            after = [s for s in view.collect()[backlog.BACKLOG] if s.attributes["function"] == "ingest_telemetry"]
            assert {s.attributes["partition"] for s in after} == {"0", "1", "2", "3"}
            assert all(s.maximum == 0 for s in after)
        finally:
            driving.cancel()
            await asyncio.gather(driving, return_exceptions=True)
