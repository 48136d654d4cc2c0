"""MQTT 3.1.1 packets: the subset IoT Hub's device endpoint speaks (no retained messages, no QoS 2, no will).

Spec: https://docs.oasis-open.org/mqtt/mqtt/v3.1.1/os/mqtt-v3.1.1-os.html. IoT Hub's subset:
https://learn.microsoft.com/azure/iot/iot-mqtt-connect-to-iot-hub.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Final

CONNECT: Final = 1
CONNACK: Final = 2
PUBLISH: Final = 3
PUBACK: Final = 4
SUBSCRIBE: Final = 8
SUBACK: Final = 9
UNSUBSCRIBE: Final = 10
UNSUBACK: Final = 11
PINGREQ: Final = 12
PINGRESP: Final = 13
DISCONNECT: Final = 14

# CONNACK return codes
ACCEPTED: Final = 0
BAD_CREDENTIALS: Final = 4
NOT_AUTHORIZED: Final = 5
SUBSCRIBE_FAILURE: Final = 0x80
MAX_PACKET_BYTES: Final = 512 * 1024  # IoT Hub's own limit is 256 KB per message


class ProtocolError(Exception):
    """The peer sent something that is not MQTT 3.1.1 as IoT Hub accepts it: the connection is closed."""


@dataclass(frozen=True)
class Packet:
    kind: int
    flags: int
    body: bytes


@dataclass(frozen=True)
class Connect:
    client_id: str
    username: str | None
    password: str | None
    clean_session: bool
    keep_alive: int


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int | None


async def read_packet(reader: asyncio.StreamReader) -> Packet:
    """Read one packet; raises asyncio.IncompleteReadError at EOF."""
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    else:
        raise ProtocolError("remaining length longer than 4 bytes")
    if length > MAX_PACKET_BYTES:
        raise ProtocolError(f"packet of {length} bytes")
    return Packet(first >> 4, first & 0x0F, await reader.readexactly(length))


def encode(kind: int, flags: int, body: bytes) -> bytes:
    out = bytearray([(kind << 4) | flags])
    length = len(body)
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes(out) + body


def _string(data: bytes, offset: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("!H", data, offset)
    end = offset + 2 + size
    if end > len(data):
        raise ProtocolError("string runs past the packet")
    return data[offset + 2 : end].decode("utf-8"), end


def _encode_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("!H", len(raw)) + raw


def parse_connect(packet: Packet) -> Connect:
    data = packet.body
    name, offset = _string(data, 0)
    level, flags = data[offset], data[offset + 1]
    if name != "MQTT" or level != 4:
        raise ProtocolError(f"protocol {name!r} level {level}: IoT Hub speaks MQTT 3.1.1 only")
    (keep_alive,) = struct.unpack_from("!H", data, offset + 2)
    client_id, offset = _string(data, offset + 4)
    if flags & 0x04:  # will: IoT Hub accepts it; we read and ignore it
        _, offset = _string(data, offset)
        (size,) = struct.unpack_from("!H", data, offset)
        offset += 2 + size
    username = password = None
    if flags & 0x80:
        username, offset = _string(data, offset)
    if flags & 0x40:
        password, offset = _string(data, offset)
    return Connect(client_id, username, password, bool(flags & 0x02), keep_alive)


def connack(code: int) -> bytes:
    return encode(CONNACK, 0, bytes([0, code]))


def parse_publish(packet: Packet) -> Publish:
    qos = (packet.flags >> 1) & 0x03
    if qos > 1:
        raise ProtocolError("QoS 2 is not supported by IoT Hub")
    topic, offset = _string(packet.body, 0)
    packet_id = None
    if qos:
        (packet_id,) = struct.unpack_from("!H", packet.body, offset)
        offset += 2
    return Publish(topic, packet.body[offset:], qos, packet_id)


def publish(topic: str, payload: bytes, qos: int = 0, packet_id: int | None = None) -> bytes:
    body = _encode_string(topic)
    if qos:
        body += struct.pack("!H", packet_id or 0)
    return encode(PUBLISH, qos << 1, body + payload)


def packet_id_of(packet: Packet) -> int:
    (packet_id,) = struct.unpack_from("!H", packet.body, 0)
    return int(packet_id)


def puback(packet_id: int) -> bytes:
    return encode(PUBACK, 0, struct.pack("!H", packet_id))


def parse_subscribe(packet: Packet) -> tuple[int, list[tuple[str, int]]]:
    packet_id = packet_id_of(packet)
    filters: list[tuple[str, int]] = []
    offset = 2
    while offset < len(packet.body):
        topic, offset = _string(packet.body, offset)
        filters.append((topic, packet.body[offset] & 0x03))
        offset += 1
    return packet_id, filters


def parse_unsubscribe(packet: Packet) -> tuple[int, list[str]]:
    packet_id = packet_id_of(packet)
    topics: list[str] = []
    offset = 2
    while offset < len(packet.body):
        topic, offset = _string(packet.body, offset)
        topics.append(topic)
    return packet_id, topics


def suback(packet_id: int, codes: list[int]) -> bytes:
    return encode(SUBACK, 0, struct.pack("!H", packet_id) + bytes(codes))


def unsuback(packet_id: int) -> bytes:
    return encode(UNSUBACK, 0, struct.pack("!H", packet_id))


PINGRESP_PACKET: Final = encode(PINGRESP, 0, b"")
