"""Scripted cars on the real device SDK (`azure-iot-device`, MQTT over TLS) for the fault suite.

The simulator (simulator/) drives cars from the wall clock; the suite needs each car to send exactly its
script (devstack/fault_input.py), so these cars send given bodies, paced, and note which sends the SDK
confirmed. They run on an event loop in a thread of their own: the SDK does blocking work while it connects,
which must not stall the stack's loop (the local hub's MQTT server runs there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from azure.iot.device.aio import IoTHubDeviceClient

from devstack.fault_input import CarScript
from devstack.http_proxy import LoopThread
from simulator.messages import bad_telemetry

log = logging.getLogger(__name__)


@dataclass
class CarRun:
    """What one car did: seqs the SDK confirmed sent, hostile messages sent, and failed sends."""

    device_id: str
    script: CarScript
    sent: list[int] = field(default_factory=list)
    hostile_sent: int = 0
    send_errors: int = 0


async def drive_car(device_id: str, connection_string: str, ca_pem: str, script: CarScript, pace: float) -> CarRun:
    run = CarRun(device_id, script)
    client = IoTHubDeviceClient.create_from_connection_string(
        connection_string, server_verification_cert=ca_pem, keep_alive=30
    )
    await client.connect()
    try:
        for body, seq in zip(script.bodies, script.seqs, strict=True):
            try:
                await client.send_message(bad_telemetry(body))  # a telemetry message with exactly these bytes
            except Exception as exc:  # the SDK retried already; a lost send is the car's, not the backend's
                run.send_errors += 1
                log.warning("%s: send failed: %s", device_id, exc)
                continue
            if seq is None:
                run.hostile_sent += 1
            else:
                run.sent.append(seq)
            await asyncio.sleep(pace)
    finally:
        with contextlib.suppress(Exception):
            await client.shutdown()
    return run


class CarThread:
    """The cars' own event loop (one per suite run)."""

    def __init__(self) -> None:
        self._thread = LoopThread("fault-suite-cars")
        logging.getLogger("azure.iot.device").setLevel(logging.ERROR)  # its own retries log loudly

    async def drive(
        self, cars: Sequence[tuple[str, str, CarScript]], ca_pem: str, pace: float, limit: float = 120
    ) -> list[CarRun]:
        """Drive (device id, connection string, script) cars concurrently until each sent its script."""

        async def all_cars() -> list[CarRun]:
            return list(await asyncio.gather(*(drive_car(d, cs, ca_pem, s, pace) for d, cs, s in cars)))

        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(all_cars(), limit), self._thread.loop)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._thread.close()
