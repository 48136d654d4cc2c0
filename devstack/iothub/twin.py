"""Device twins in memory: desired and reported properties, each with IoT Hub's `$version` counter.

Patches merge the way IoT Hub merges them: objects recursively, `null` deletes a property. Besides the two
`$version`s the twin has IoT Hub's twin-wide `version` (every change) and its `etag` (base64 of that version as 8
big-endian bytes, the shape IoT Hub's look like: "AAAAAAAAAAI="), which a service-side update may name in `If-Match`
(412 PreconditionFailed when the twin changed since).
Ref: https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-device-twins
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Merge `patch` into `target` in place; `None` removes a key, nested objects merge."""
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # $version and metadata are the hub's, not the caller's
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value


def etag_matches(if_match: str | None, etag: str) -> bool:
    """An `If-Match` header against an etag: absent or `*` (the azure-iot-hub SDK quotes it: `"*"`) matches
    anything, else the etag, quoted or not."""
    wanted = (if_match or "*").strip().strip('"')
    return wanted in ("*", etag)


@dataclass
class Twin:
    desired: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    desired_version: int = 1
    reported_version: int = 1
    version: int = 1  # the whole twin's version: every change counts

    @property
    def etag(self) -> str:
        return base64.b64encode(self.version.to_bytes(8, "big")).decode("ascii")

    def document(self) -> dict[str, Any]:
        """What a twin GET returns to the device."""
        return {
            "desired": {**copy.deepcopy(self.desired), "$version": self.desired_version},
            "reported": {**copy.deepcopy(self.reported), "$version": self.reported_version},
        }

    def patch_desired(self, patch: Mapping[str, Any]) -> dict[str, Any]:
        """Apply a service-side patch; returns what is pushed to the device (the patch plus `$version`)."""
        merge_patch(self.desired, patch)
        self.desired_version += 1
        self.version += 1
        return {**copy.deepcopy(dict(patch)), "$version": self.desired_version}

    def patch_reported(self, patch: Mapping[str, Any]) -> int:
        merge_patch(self.reported, patch)
        self.reported_version += 1
        self.version += 1
        return self.reported_version


class TwinStore:
    """All twins of the hub, created on first touch (every derivable device exists, see registry.py), keyed by
    identity: a device id, or `{device}/{module}` for a module twin (registry.identity_key)."""

    def __init__(self) -> None:
        self._twins: dict[str, Twin] = {}

    def get(self, device_id: str) -> Twin:
        twin = self._twins.get(device_id)
        if twin is None:
            twin = self._twins[device_id] = Twin()
        return twin

    def remove(self, device_id: str) -> None:
        """A deleted identity's twin goes with it."""
        self._twins.pop(device_id, None)
