"""The one narrow interface between the device endpoint (which owns the connections) and the hub (which owns
what IoT Hub keeps: routes, twins, the C2D queues, pending direct methods).

Traffic flows one way each: the endpoint hands every device event in through `DeviceEvents.device_event` and
sends back on the same connection whatever `Reply` the hub returns (a twin response); the hub reaches devices
only through `DeviceLinks` (deliver, ask whether a device is connected or subscribed, disconnect it), never
through a connection. Neither side imports the other: both import this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from devstack.iothub.topics import MethodResponse, Properties, TwinRequest


@dataclass(frozen=True, slots=True)
class DeviceToCloud:
    """A telemetry or request message the device published to its own events topic."""

    device_id: str
    properties: Properties
    body: bytes


@dataclass(frozen=True, slots=True)
class TwinRequested:
    """A twin GET or reported-properties PATCH; the hub answers it with a Reply."""

    device_id: str
    request: TwinRequest
    body: bytes


@dataclass(frozen=True, slots=True)
class MethodAnswered:
    """The device answered direct method request `response.request_id` (the body may be anything)."""

    device_id: str
    response: MethodResponse
    body: bytes


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The device was granted these subscriptions (C2D, twin patches, methods)."""

    device_id: str
    filters: frozenset[str]


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The device has no connection any more (it left, dropped, or was disconnected)."""

    device_id: str


DeviceEvent = DeviceToCloud | TwinRequested | MethodAnswered | Subscribed | Disconnected


@dataclass(frozen=True, slots=True)
class Reply:
    """What to publish back to the device on the connection the event came from."""

    topic: str
    body: bytes


class DeviceEvents(Protocol):
    """What the endpoint hands device events to (the hub)."""

    async def device_event(self, event: DeviceEvent) -> Reply | None: ...


class DeviceLinks(Protocol):
    """What the owner of the connections (the endpoint) offers the hub."""

    def connected(self, device_id: str) -> bool: ...

    def subscribed(self, device_id: str, topic: str) -> bool: ...

    async def deliver(self, device_id: str, topic: str, body: bytes, qos: int = 1) -> bool: ...

    def disconnect(self, device_id: str) -> bool: ...
