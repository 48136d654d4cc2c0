"""The local IoT Hub's MQTT packet ids for QoS 1 publishes: an id still waiting for its PUBACK is never given to
another message (MQTT 3.1.1, 2.3.1), also once the 16-bit counter wraps, as a long-lived connection's would."""

from __future__ import annotations

import asyncio
from typing import Any

from devstack.iothub.endpoint import Session


class Writer:
    """A stream writer that keeps what was written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    async def drain(self) -> None:
        await asyncio.sleep(0)


def session() -> Session:
    writer: Any = Writer()
    return Session("car-001", writer)


async def test_an_unacknowledged_id_is_skipped_when_the_counter_wraps() -> None:
    car = session()
    await car.send("devices/car-001/messages/devicebound/", b"held", qos=1, message_id="held")
    assert car.unacknowledged == {1: "held"}  # the car has not acknowledged it (yet)
    for n in range(65_534):  # ids 2..65535, each acknowledged at once
        await car.send("devices/car-001/messages/devicebound/", b"x", qos=1, message_id=f"m{n}")
        assert car.acknowledged(n + 2) == f"m{n}"
    await car.send("devices/car-001/messages/devicebound/", b"after the wrap", qos=1, message_id="after")
    assert car.unacknowledged == {1: "held", 2: "after"}  # 1 still the first message's, never overwritten
