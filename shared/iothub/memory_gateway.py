"""In-memory IoTHubGateway for unit tests: records every message and merges patches like IoT Hub does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.errors import DeviceNotFoundError
from shared.iothub.gateway import (
    DeviceExistsError,
    DeviceIdentity,
    IoTHubGateway,
    new_device_key,
)


@dataclass(frozen=True, slots=True)
class SentMessage:
    device_id: str
    body: bytes
    properties: dict[str, str]

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

    async def send_c2d(self, device_id: str, body: bytes, properties: Mapping[str, str]) -> None:
        if device_id in self.deleted:
            raise DeviceNotFoundError(f"C2D to {device_id}: no such device")
        self.sent.append(SentMessage(device_id, bytes(body), dict(properties)))

    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        if device_id in self.deleted:
            raise DeviceNotFoundError(f"twin patch of {device_id}: no such device")
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
