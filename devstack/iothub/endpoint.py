"""The device endpoint: MQTT 3.1.1 over TLS, one connection per device, as IoT Hub serves it.

What makes this IoT Hub rather than a broker: the connection is the device (client id = device id, SAS token
checked), a device may publish only to its own `devices/{id}/messages/events/` and to `$iothub/twin/...`,
may subscribe only to its own topics (topics.allowed_filters), and whatever the hub sends on a connection
is for that device alone. Twin requests carry no device id, so only a per-connection server can answer
them; a shared broker would fan every twin response and desired patch out to every car.

Traffic flows one way: the endpoint owns the connections (`Sessions`) and tells the hub about device events
(a message, a twin request, a new subscription, by device id); the hub never touches a connection, it asks
`sessions.deliver(device_id, topic, body)` and learns whether the device took it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from devstack.iothub import mqtt_codec as mqtt
from devstack.iothub.registry import DeviceRegistry
from devstack.iothub.topics import (
    Properties,
    TwinRequest,
    allowed_filters,
    filter_matches,
    parse_event_topic,
    parse_twin_topic,
    twin_response_topic,
)

log = logging.getLogger(__name__)

D2CHandler = Callable[[str, Properties, bytes], Awaitable[None]]
TwinHandler = Callable[[str, TwinRequest, bytes], Awaitable[tuple[int, bytes, int | None]]]
SubscribedHandler = Callable[[str], Awaitable[None]]


class DeviceRejectedError(Exception):
    """The device broke IoT Hub's rules on its connection (e.g. published for another device)."""


@dataclass
class Session:
    """One connected device."""

    device_id: str
    writer: asyncio.StreamWriter
    subscriptions: set[str] = field(default_factory=set)
    _ids: itertools.cycle[int] = field(default_factory=lambda: itertools.cycle(range(1, 65536)))
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def subscribed(self, topic: str) -> bool:
        return any(filter_matches(f, topic) for f in self.subscriptions)

    async def send(self, topic: str, payload: bytes, qos: int = 0) -> None:
        async with self._lock:
            packet_id = next(self._ids) if qos else None
            self.writer.write(mqtt.publish(topic, payload, qos, packet_id))
            await self.writer.drain()


class Sessions:
    """The connected devices, one session each; owned by the endpoint. Others may ask whether a device is
    connected (`in`, `len`), deliver to it, or disconnect it, never reach into a connection."""

    def __init__(self) -> None:
        self._by_device: dict[str, Session] = {}

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._by_device

    def __len__(self) -> int:
        return len(self._by_device)

    def attach(self, session: Session) -> None:
        """A device connected; IoT Hub drops the older connection of a device that connects again."""
        old = self._by_device.get(session.device_id)
        if old is not None:
            old.writer.close()
        self._by_device[session.device_id] = session

    def detach(self, session: Session) -> None:
        """This connection ended (a newer one of the same device stays)."""
        if self._by_device.get(session.device_id) is session:
            del self._by_device[session.device_id]

    def disconnect(self, device_id: str) -> bool:
        """Close the device's connection (its identity was deleted); False if it was not connected."""
        session = self._by_device.pop(device_id, None)
        if session is not None:
            session.writer.close()
        return session is not None

    def disconnect_all(self) -> None:
        for session in list(self._by_device.values()):
            session.writer.close()
        self._by_device.clear()

    async def deliver(self, device_id: str, topic: str, body: bytes, qos: int = 1) -> bool:
        """Publish to the device if it is connected and subscribed to `topic`; False (nothing sent) if not."""
        session = self._by_device.get(device_id)
        if session is None or not session.subscribed(topic):
            return False
        try:
            await session.send(topic, body, qos)
        except (ConnectionError, ssl.SSLError):
            return False
        return True


class DeviceEndpoint:
    """Serves devices; hands device-to-cloud messages, twin requests and subscriptions to the hub (hub.py)."""

    def __init__(
        self,
        registry: DeviceRegistry,
        on_d2c: D2CHandler,
        on_twin: TwinHandler,
        on_subscribed: SubscribedHandler | None = None,
    ) -> None:
        self.registry = registry
        self._on_d2c = on_d2c
        self._on_twin = on_twin
        self._on_subscribed = on_subscribed
        self.sessions = Sessions()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int, tls: ssl.SSLContext) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, ssl=tls, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.sessions.disconnect_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        session: Session | None = None
        try:
            session = await self._connect(reader, writer)
            if session is not None:
                await self._loop(session, reader)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        except (mqtt.ProtocolError, DeviceRejectedError) as exc:
            log.warning("closing %s: %s", session.device_id if session else "connection", exc)
        finally:
            if session is not None:
                self.sessions.detach(session)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Session | None:
        packet = await asyncio.wait_for(mqtt.read_packet(reader), 30)
        if packet.kind != mqtt.CONNECT:
            raise mqtt.ProtocolError("first packet is not CONNECT")
        connect = mqtt.parse_connect(packet)
        device_id = connect.client_id
        expected_user = f"{self.registry.hostname}/{device_id}/"
        if not (connect.username or "").startswith(expected_user):
            log.warning("refused %s: username %r does not start with %r", device_id, connect.username, expected_user)
            writer.write(mqtt.connack(mqtt.BAD_CREDENTIALS))
            return None
        if not self.registry.verify(device_id, connect.password):
            log.warning("refused %s: invalid or expired SAS token", device_id)
            writer.write(mqtt.connack(mqtt.NOT_AUTHORIZED))
            return None
        session = Session(device_id, writer)
        self.sessions.attach(session)
        writer.write(mqtt.connack(mqtt.ACCEPTED))
        await writer.drain()
        return session

    async def _loop(self, session: Session, reader: asyncio.StreamReader) -> None:
        writer = session.writer
        while True:
            packet = await mqtt.read_packet(reader)
            if packet.kind == mqtt.PUBLISH:
                message = mqtt.parse_publish(packet)
                await self._publish(session, message)
                if message.qos and message.packet_id is not None:
                    writer.write(mqtt.puback(message.packet_id))
            elif packet.kind == mqtt.SUBSCRIBE:
                packet_id, filters = mqtt.parse_subscribe(packet)
                allowed = allowed_filters(session.device_id)
                codes = [min(qos, 1) if f in allowed else mqtt.SUBSCRIBE_FAILURE for f, qos in filters]
                session.subscriptions.update(f for f, _ in filters if f in allowed)
                writer.write(mqtt.suback(packet_id, codes))
                await writer.drain()
                if self._on_subscribed is not None:
                    await self._on_subscribed(session.device_id)
            elif packet.kind == mqtt.UNSUBSCRIBE:
                packet_id, topics = mqtt.parse_unsubscribe(packet)
                session.subscriptions.difference_update(topics)
                writer.write(mqtt.unsuback(packet_id))
            elif packet.kind == mqtt.PINGREQ:
                writer.write(mqtt.PINGRESP_PACKET)
            elif packet.kind == mqtt.DISCONNECT:
                return
            elif packet.kind != mqtt.PUBACK:  # PUBACKs of what we sent: C2D is at-least-once, nothing to do
                raise mqtt.ProtocolError(f"unexpected packet type {packet.kind}")
            await writer.drain()

    async def _publish(self, session: Session, message: mqtt.Publish) -> None:
        event = parse_event_topic(message.topic)
        if event is not None:
            device_id, properties = event
            if device_id != session.device_id:
                raise DeviceRejectedError(f"published to {message.topic!r}, which is not its own")
            await self._on_d2c(device_id, properties, message.payload)
            return
        request = parse_twin_topic(message.topic)
        if request is None:
            raise DeviceRejectedError(f"published to unsupported topic {message.topic!r}")
        status, body, version = await self._on_twin(session.device_id, request, message.payload)
        await session.send(twin_response_topic(status, request.request_id, version), body)
