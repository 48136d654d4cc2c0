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
class C2DCompleted:
    """The device acknowledged (MQTT PUBACK) cloud-to-device message `message_id`: IoT Hub completes it."""

    device_id: str
    message_id: str


@dataclass(frozen=True, slots=True)
class C2DReleased:
    """A connection ended with these cloud-to-device messages delivered but not acknowledged: IoT Hub makes them
    visible again (and delivers them anew) instead of taking them as completed."""

    device_id: str
    message_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The device has no connection any more (it left, dropped, or was disconnected)."""

    device_id: str


DeviceEvent = DeviceToCloud | TwinRequested | MethodAnswered | Subscribed | C2DCompleted | C2DReleased | Disconnected


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

    async def deliver_c2d(self, device_id: str, message_id: str, topic: str, body: bytes) -> bool:
        """deliver at QoS 1, the device's PUBACK coming back as C2DCompleted (or C2DReleased if it never does)."""
        ...

    def disconnect(self, device_id: str) -> bool: ...
