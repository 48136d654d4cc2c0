"""Device twins in memory: desired and reported properties, each with IoT Hub's `$version` counter.

Patches merge the way IoT Hub merges them: objects recursively, `null` deletes a property. Besides the two
`$version`s the twin has IoT Hub's twin-wide `version` (every change) and its `etag` (base64 of that version as 8
big-endian bytes, the shape IoT Hub's look like: "AAAAAAAAAAI="), which a service-side update may name in `If-Match`
(412 PreconditionFailed when the twin changed since).

Property names follow IoT Hub's rule for tags and properties ("Tags and properties format"): every key, at any
depth (inside arrays too), is at most 1 KB of UTF-8 and has no control character (C0, DEL, C1), '.', '$' or space;
nor '#', which the service also refuses (its answer: "Must not contain Control Characters, '.', '$', '#', or ' '").
A patch with one such key is refused whole (`TwinKeyError`: the service API answers 400 ArgumentInvalid, a device's
reported patch gets twin response status 400) and changes nothing. The one exception are the hub's own top-level
`$version` and `$metadata`, which a client sending back a twin it read (the C# SDK's UpdateTwinAsync of a fetched
twin does) includes: they are ignored, never stored, as IoT Hub ignores them.
Ref: https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-device-twins
"""

from __future__ import annotations

import base64
import copy
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

KEY_MAX_BYTES: Final = 1024  # "up to 1 KB in length", UTF-8
KEY_FORBIDDEN: Final = frozenset(".$# ")
HUB_OWNED: Final = frozenset({"$version", "$metadata"})  # top-level only: what the hub writes into a twin it returns


class TwinKeyError(ValueError):
    """A property name IoT Hub refuses (errorCode 400004, ArgumentInvalid); the message says which."""


def key_problem(key: str) -> str | None:
    """Why IoT Hub refuses `key` as a tag or property name, or None when it is valid."""
    shown = repr(key[:64]) + ("..." if len(key) > 64 else "")
    if len(key.encode("utf-8", "surrogatepass")) > KEY_MAX_BYTES:
        return f"Property or Tag name {shown} is longer than {KEY_MAX_BYTES} bytes."
    if any(c in KEY_FORBIDDEN or unicodedata.category(c) == "Cc" for c in key):
        return (
            f"Property or Tag name has invalid characters. Error in Property/Tag {shown}. "
            "Must not contain Control Characters, '.', '$', '#', or ' '."
        )
    return None


def check_keys(value: Any, top: bool = True) -> None:
    """Raise TwinKeyError for the first key of `value` (a patch, at any depth, arrays included) IoT Hub refuses.
    `top`: `value` is a whole desired or reported patch, where the hub's own `$version` / `$metadata` pass (and
    are ignored by `merge_patch`)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if top and key in HUB_OWNED:
                continue
            problem = key_problem(str(key))
            if problem is not None:
                raise TwinKeyError(problem)
            check_keys(item, top=False)
    elif isinstance(value, list):
        for item in value:
            check_keys(item, top=False)


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Merge `patch` (its keys checked by `check_keys`) into `target` in place; `None` removes a key, nested
    objects merge, anything else (arrays too) replaces."""
    for key, value in patch.items():
        if key in HUB_OWNED:
            continue  # $version and $metadata are the hub's, not the caller's
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
        """Apply a service-side patch; returns what is pushed to the device (the patch plus `$version`).
        TwinKeyError, nothing changed, when a key is one IoT Hub refuses."""
        check_keys(patch)
        merge_patch(self.desired, patch)
        self.desired_version += 1
        self.version += 1
        pushed = {k: copy.deepcopy(v) for k, v in patch.items() if k not in HUB_OWNED}
        return {**pushed, "$version": self.desired_version}

    def patch_reported(self, patch: Mapping[str, Any]) -> int:
        """A device's reported patch; its new `$version`. TwinKeyError, nothing changed, as for `patch_desired`."""
        check_keys(patch)
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
