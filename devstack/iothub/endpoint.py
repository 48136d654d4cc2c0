"""The device endpoint: MQTT 3.1.1 over TLS, one connection per device, as IoT Hub serves it.

What makes this IoT Hub rather than a broker: the connection is the device (client id = device id, SAS token
checked), a device may publish only to its own `devices/{id}/messages/events/`, to `$iothub/twin/...` and to
`$iothub/methods/res/...`, may subscribe only to its own topics (topics.allowed_filters), and whatever the hub
sends on a connection is for that device alone. Twin requests and method answers carry no device id, so only a
per-connection server can answer them; a shared broker would fan every twin response, desired patch and
method request out to every car.

A module identity connects the same way with client id `{device}/{module}` and its own SAS token (registry.py); its
session, twin and methods are keyed by that client id, and it may publish only to its own
`devices/{device}/modules/{module}/messages/events/` (topics.py).

The endpoint is the one owner of the connections (`Sessions`). Traffic flows one way each (events.py): device
events go in through the hub's `device_event` (a message, a twin request, a method answer, a new subscription,
a device gone), and the hub reaches devices only through this endpoint's `DeviceLinks` methods (`deliver`,
`deliver_c2d`, `connected`, `subscribed`, `disconnect`).

Cloud-to-device messages go out at QoS 1 and each connection remembers which it has not had a PUBACK for: a PUBACK
is handed in as `C2DCompleted`, and when the connection ends those never acknowledged are handed in as
`C2DReleased`, so the hub keeps them (against the device's 50) and delivers them again, as IoT Hub does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from dataclasses import dataclass, field

from devstack.iothub import mqtt_codec as mqtt
from devstack.iothub.events import (
    C2DCompleted,
    C2DReleased,
    DeviceEvent,
    DeviceEvents,
    DeviceToCloud,
    Disconnected,
    MethodAnswered,
    Subscribed,
    TwinRequested,
)
from devstack.iothub.registry import DeviceRegistry
from devstack.iothub.topics import (
    METHOD_RESPONSE_PREFIX,
    allowed_filters,
    filter_matches,
    parse_event_topic,
    parse_method_response_topic,
    parse_twin_topic,
)

log = logging.getLogger(__name__)


class DeviceRejectedError(Exception):
    """The device broke IoT Hub's rules on its connection (e.g. published for another device)."""


@dataclass
class Session:
    """One connected device."""

    device_id: str
    writer: asyncio.StreamWriter
    subscriptions: set[str] = field(default_factory=set)
    unacknowledged: dict[int, str] = field(default_factory=dict)  # packet id → C2D message id, until its PUBACK
    _ids: itertools.cycle[int] = field(default_factory=lambda: itertools.cycle(range(1, 65536)))
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def subscribed(self, topic: str) -> bool:
        return any(filter_matches(f, topic) for f in self.subscriptions)

    async def send(self, topic: str, payload: bytes, qos: int = 0, message_id: str | None = None) -> None:
        """Publish; with a `message_id` (a C2D message, QoS 1) it is remembered until the device's PUBACK."""
        async with self._lock:
            packet_id = self._next_packet_id() if qos else None
            if message_id is not None and packet_id is not None:
                self.unacknowledged[packet_id] = message_id  # before writing: the PUBACK may come at once
            try:
                self.writer.write(mqtt.publish(topic, payload, qos, packet_id))
                await self.writer.drain()
            except BaseException:
                if packet_id is not None:
                    self.unacknowledged.pop(packet_id, None)  # never sent: nothing to acknowledge
                raise

    def _next_packet_id(self) -> int:
        """The next of 1..65535 not held by a message still waiting for its PUBACK (MQTT 3.1.1, 2.3.1: an id is
        reusable only once acknowledged); at most 50 wait (IoT Hub's C2D queue), so a free one is always near."""
        packet_id = next(self._ids)
        while packet_id in self.unacknowledged:
            packet_id = next(self._ids)
        return packet_id

    def acknowledged(self, packet_id: int) -> str | None:
        """The C2D message a PUBACK completes; None for a packet id this connection is not waiting for."""
        return self.unacknowledged.pop(packet_id, None)

    def release(self) -> tuple[str, ...]:
        """The C2D messages this connection delivered and never had a PUBACK for (it ended)."""
        released = tuple(self.unacknowledged.values())
        self.unacknowledged.clear()
        return released


class Sessions:
    """The connected devices, one session each; owned by the endpoint, used by nothing else. `in` and `len`
    answer whether a device is connected and how many are (the demo's status line reads `len`)."""

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

    def subscribed(self, device_id: str, topic: str) -> bool:
        session = self._by_device.get(device_id)
        return session is not None and session.subscribed(topic)

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

    async def deliver(
        self, device_id: str, topic: str, body: bytes, qos: int = 1, message_id: str | None = None
    ) -> bool:
        """Publish to the device if it is connected and subscribed to `topic`; False (nothing sent) if not."""
        session = self._by_device.get(device_id)
        if session is None or not session.subscribed(topic):
            return False
        try:
            await session.send(topic, body, qos, message_id)
        except (ConnectionError, ssl.SSLError):
            return False
        return True


def peer_common_names(writer: asyncio.StreamWriter) -> list[str]:
    """The subject CNs of the client certificate the TLS layer verified (none if the device sent none)."""
    cert = writer.get_extra_info("peercert") or {}
    return [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]


class DeviceEndpoint:
    """Serves devices and owns their connections; hands every device event to `events` (the hub) and offers it
    the `DeviceLinks` methods below."""

    def __init__(self, registry: DeviceRegistry, events: DeviceEvents) -> None:
        self.registry = registry
        self._events = events
        self.sessions = Sessions()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- DeviceLinks: what the hub may ask of the connections -------------------------------------------------

    def connected(self, device_id: str) -> bool:
        return device_id in self.sessions

    def subscribed(self, device_id: str, topic: str) -> bool:
        """Connected and subscribed to a filter that matches `topic`."""
        return self.sessions.subscribed(device_id, topic)

    async def deliver(self, device_id: str, topic: str, body: bytes, qos: int = 1) -> bool:
        return await self.sessions.deliver(device_id, topic, body, qos)

    async def deliver_c2d(self, device_id: str, message_id: str, topic: str, body: bytes) -> bool:
        return await self.sessions.deliver(device_id, topic, body, 1, message_id)

    def disconnect(self, device_id: str) -> bool:
        return self.sessions.disconnect(device_id)

    # --- serving devices -------------------------------------------------------------------------------------

    async def start(self, host: str, port: int, tls: ssl.SSLContext) -> None:
        if self.registry.device_ca_pems:  # X.509 devices: ask for a client certificate, chained to these CAs
            tls.verify_mode = ssl.CERT_OPTIONAL
            tls.load_verify_locations(cadata="".join(self.registry.device_ca_pems))
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
        except Exception:  # a fault of ours must cost this one connection, never the endpoint
            log.exception("closing %s after an internal error", session.device_id if session else "connection")
        finally:
            if session is not None:
                self.sessions.detach(session)
            writer.close()
            if task is not None:
                self._tasks.discard(task)
        if session is None:
            return
        with contextlib.suppress(Exception):
            released = session.release()  # whether or not a newer connection of the device exists
            if released:
                await self._tell(C2DReleased(session.device_id, released))
        if not self.connected(session.device_id):
            with contextlib.suppress(Exception):
                await self._tell(Disconnected(session.device_id))

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
        if self.registry.authenticates_by_certificate(device_id):
            if not self.registry.verify_certificate_subject(device_id, peer_common_names(writer)):
                log.warning("refused %s: no client certificate chained to a trusted CA with CN = its id", device_id)
                writer.write(mqtt.connack(mqtt.NOT_AUTHORIZED))
                return None
        elif not self.registry.verify(device_id, connect.password):
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
                granted = frozenset(f for f, _ in filters if f in allowed)
                session.subscriptions.update(granted)
                writer.write(mqtt.suback(packet_id, codes))
                await writer.drain()
                await self._tell(Subscribed(session.device_id, granted))
            elif packet.kind == mqtt.UNSUBSCRIBE:
                packet_id, topics = mqtt.parse_unsubscribe(packet)
                session.subscriptions.difference_update(topics)
                writer.write(mqtt.unsuback(packet_id))
            elif packet.kind == mqtt.PINGREQ:
                writer.write(mqtt.PINGRESP_PACKET)
            elif packet.kind == mqtt.DISCONNECT:
                return
            elif packet.kind == mqtt.PUBACK:  # the device completes a C2D message (other QoS 1 sends: none)
                message_id = session.acknowledged(mqtt.packet_id_of(packet))
                if message_id is not None:
                    await self._tell(C2DCompleted(session.device_id, message_id))
            else:
                raise mqtt.ProtocolError(f"unexpected packet type {packet.kind}")
            await writer.drain()

    async def _tell(self, event: DeviceEvent) -> None:
        """An event that asks for no reply (only a twin request gets one, on the connection that asked)."""
        await self._events.device_event(event)

    async def _publish(self, session: Session, message: mqtt.Publish) -> None:
        device_id, topic = session.device_id, message.topic
        event = parse_event_topic(topic)
        if event is not None:
            if event[0] != device_id:
                raise DeviceRejectedError(f"published to {topic!r}, which is not its own")
            await self._events.device_event(DeviceToCloud(device_id, event[1], message.payload))
            return
        request = parse_twin_topic(topic)
        if request is not None:
            reply = await self._events.device_event(TwinRequested(device_id, request, message.payload))
            if reply is not None:  # on this connection: the one that asked
                await session.send(reply.topic, reply.body)
            return
        if topic.startswith(METHOD_RESPONSE_PREFIX):
            answer = parse_method_response_topic(topic)
            if answer is None:  # IoT Hub's own rule is unknown here; a garbled answer must not cost the connection
                log.warning("%s answered a method on a malformed topic %r: ignored", device_id, topic[:200])
                return
            await self._events.device_event(MethodAnswered(device_id, answer, message.payload))
            return
        raise DeviceRejectedError(f"published to unsupported topic {topic!r}")
