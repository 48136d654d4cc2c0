"""In-memory IoTHubGateway for unit tests: records every message and merges patches like IoT Hub does.

It refuses what IoT Hub refuses, through the same mapping the real gateways use (shared/faults.py): C2D to a
deleted device (404 DeviceNotFound), a 51st pending message for one device (403
DeviceMaximumQueueDepthExceeded; `receive` plays the car completing its messages), a body over 64 KB (413),
and whatever answer a test puts in `answers` for a device (e.g. 503 for an outage).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.faults import iothub_error
from shared.iothub.gateway import (
    C2D_MAX_BYTES,
    C2D_QUEUE_LIMIT,
    DEFAULT_C2D_TTL_SECONDS,
    DeviceExistsError,
    DeviceIdentity,
    IoTHubGateway,
    c2d_expiry,
    new_device_key,
)


@dataclass(frozen=True, slots=True)
class SentMessage:
    device_id: str
    body: bytes
    properties: dict[str, str]
    expiry: dt.datetime | None = None

    def json(self) -> Any:
        return orjson.loads(self.body)


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Twin semantics: objects merge key by key, null deletes a key, anything else (arrays too) replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = orjson.loads(orjson.dumps(value))


@dataclass
class MemoryIoTHubGateway(IoTHubGateway):
    sent: list[SentMessage] = field(default_factory=list)
    desired: dict[str, dict[str, Any]] = field(default_factory=dict)
    patches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    devices: dict[str, str] = field(default_factory=dict)  # device id → primary key
    hostname: str = "memory.azure-devices.net"
    # Ids removed with delete_device: like IoT Hub, C2D and twin patches to them fail (others are accepted
    # without registration, so tests need not register every car).
    deleted: set[str] = field(default_factory=set)
    # device id → (HTTP status, IoT Hub error code) every call for that device is answered with, until removed.
    answers: dict[str, tuple[int | None, str | None]] = field(default_factory=dict)
    queue_limit: int = C2D_QUEUE_LIMIT
    received: Counter[str] = field(default_factory=Counter)  # C2D messages each device has completed

    def pending(self, device_id: str) -> int:
        """Messages queued for the device and not yet completed by it (expiry is not simulated here)."""
        return sum(1 for m in self.sent if m.device_id == device_id) - self.received[device_id]

    def receive(self, device_id: str) -> list[SentMessage]:
        """The car reads and completes everything pending for it, which frees its queue."""
        mine = [m for m in self.sent if m.device_id == device_id]
        fresh = mine[self.received[device_id] :]
        self.received[device_id] = len(mine)
        return fresh

    def _refusal(self, device_id: str, operation: str) -> None:
        if device_id in self.answers:
            status, code = self.answers[device_id]
            raise iothub_error(status, code, operation)
        if device_id in self.deleted:
            raise iothub_error(404, "DeviceNotFound", operation)

    async def send_c2d(
        self,
        device_id: str,
        body: bytes,
        properties: Mapping[str, str],
        ttl_seconds: float = DEFAULT_C2D_TTL_SECONDS,
    ) -> None:
        operation = f"C2D to {device_id}"
        self._refusal(device_id, operation)
        if len(body) > C2D_MAX_BYTES:
            raise iothub_error(413, "MessageTooLarge", operation)
        if self.pending(device_id) >= self.queue_limit:
            raise iothub_error(403, "DeviceMaximumQueueDepthExceeded", operation)
        self.sent.append(SentMessage(device_id, bytes(body), dict(properties), c2d_expiry(ttl_seconds)))

    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        self._refusal(device_id, f"twin patch of {device_id}")
        self.patches.append((device_id, orjson.loads(orjson.dumps(patch))))
        merge_patch(self.desired.setdefault(device_id, {}), patch)

    async def create_device(self, device_id: str) -> DeviceIdentity:
        self.deleted.discard(device_id)
        if device_id in self.devices:
            raise DeviceExistsError(f"device {device_id} exists")
        key = self.devices[device_id] = new_device_key()
        return DeviceIdentity(device_id, self.hostname, key)

    async def delete_device(self, device_id: str) -> bool:
        self.deleted.add(device_id)
        self.desired.pop(device_id, None)
        return self.devices.pop(device_id, None) is not None
