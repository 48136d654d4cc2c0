"""A stand-in for IoT Hub behind edge.module.Transport (the local hub, with module identities, is the real one), and
a source that yields nothing.

It is not IoT Hub: it accepts every message while `up`, raises ConnectionError while not (as the SDK's
send_message does when the link is down and its retry gives up), keeps what it accepted in order, and holds
a desired-properties document. Deduplication by (epoch, seq) is the cloud's rule, applied by `telemetry()`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from edge import contract
from edge.sources import Reading

DesiredHandler = Callable[[dict[str, Any]], None]
MessageHandler = Callable[[bytes, dict[str, str]], None]
MethodHandler = Callable[[str, Any], Awaitable[tuple[int, Any]]]


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

    def __init__(self) -> None:
        self.rejected: Counter[str] = Counter()

    def resume(self, position: Any) -> None:
        return None

    async def readings(self) -> AsyncIterator[Reading]:
        return
        yield

    async def ack(self, reading: Reading) -> None:
        return None
