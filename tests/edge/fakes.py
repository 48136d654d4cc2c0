"""A stand-in for IoT Hub behind edge.module.Transport (the local hub, with module identities, is the real one), a
source that yields nothing, and a stand-in for a Kuksa databroker's client.

It is not IoT Hub: it accepts every message while `up`, raises ConnectionError while not (as the SDK's
send_message does when the link is down and its retry gives up), refuses one over 256 KB with ValueError as the
SDK's send_message does before sending (counting our properties at `SDK_PROPERTY_BYTES`), keeps what it accepted
in order, and holds a desired-properties document. Deduplication by (epoch, seq) is the cloud's rule, applied by
`telemetry()`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from edge import contract
from edge.sources import Reading

DesiredHandler = Callable[[dict[str, Any]], None]
MessageHandler = Callable[[bytes, dict[str, str]], None]
MethodHandler = Callable[[str, Any], Awaitable[tuple[int, Any]]]
SDK_PROPERTY_BYTES = 210  # azure-iot-device's Message.get_size() beyond the body, with our properties


@dataclass
class FakeHub:
    up: bool = True
    accepted: list[tuple[str, bytes]] = field(default_factory=list)
    reported: dict[str, Any] = field(default_factory=dict)
    twin: dict[str, Any] = field(default_factory=dict)
    desired_handler: DesiredHandler | None = None
    message_handler: MessageHandler | None = None
    method_handler: MethodHandler | None = None

    async def connect(self) -> None:
        if not self.up:
            raise ConnectionError("hub unreachable")

    async def send(self, kind: str, body: bytes) -> None:
        if not self.up:
            raise ConnectionError("hub unreachable")
        if len(body) + SDK_PROPERTY_BYTES > contract.MAX_MESSAGE_BYTES:
            raise ValueError("Size of telemetry message can not exceed 256 KB.")  # the SDK's words
        self.accepted.append((kind, body))

    async def report(self, patch: dict[str, Any]) -> None:
        if not self.up:
            raise ConnectionError("hub unreachable")
        self.reported.update(patch)

    async def desired(self) -> dict[str, Any]:
        if not self.up:
            raise ConnectionError("hub unreachable")
        return dict(self.twin)

    def on_desired(self, handler: DesiredHandler) -> None:
        self.desired_handler = handler

    def on_message(self, handler: MessageHandler) -> None:
        self.message_handler = handler

    def on_method(self, handler: MethodHandler) -> None:
        self.method_handler = handler

    async def close(self) -> None:
        return None

    def push_desired(self, patch: dict[str, Any]) -> None:
        self.twin.update(patch)
        if self.desired_handler is not None and self.up:
            self.desired_handler(patch)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [contract.loads(body) for k, body in self.accepted if k == kind]

    def telemetry(self) -> list[dict[str, Any]]:
        """Telemetry messages after the cloud's duplicate detection (first copy of each (epoch, seq))."""
        seen: set[tuple[str, int]] = set()
        out = []
        for message in self.of_kind("telemetry"):
            key = (message["epoch"], message["seq"])
            if key not in seen:
                seen.add(key)
                out.append(message)
        return out


class NoSource:
    """A source that yields nothing: the tests give the module readings themselves."""

    cursor_key: str | None = None
    endless = False  # it ends at once: a module running it stops collecting, as with a file read once

    def __init__(self) -> None:
        self.rejected: Counter[str] = Counter()

    def resume(self, position: Any) -> None:
        return None

    async def readings(self) -> AsyncIterator[Reading]:
        return
        yield

    async def ack(self, reading: Reading) -> None:
        return None


@dataclass
class Point:
    value: Any
    timestamp: dt.datetime | None


class StandInVSSClient:
    """The shape of kuksa_client.grpc.aio.VSSClient.subscribe_current_values: batches of {path: Datapoint}, then
    the stream ends cleanly (as a databroker closing it does). Not a databroker: none runs here."""

    def __init__(self, batches: list[dict[str, Point | None]]) -> None:
        self.batches = batches
        self.asked: list[str] = []
        self.subscriptions = 0

    async def subscribe_current_values(self, paths: list[str]) -> AsyncIterator[dict[str, Point | None]]:
        self.asked = paths
        self.subscriptions += 1
        for batch in self.batches:
            yield batch
