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

Sizes and depth follow IoT Hub's "Device twin size" and "Tags and properties format": tags at most 8 KB, desired
and reported properties at most 32 KB each (read-only `$version` / `$metadata` not counted), and no object or array
nested deeper than 10 levels below the section (the section's own object is level 0; arrays count as a level, as
in IoT Edge hub's validator). Both are checked on what the patch would leave, the section merged: a patch that
would take it over is refused whole (`TwinLimitError`, answered as `TwinKeyError` is) and changes nothing.
The size is the section's compact UTF-8 JSON (what IoT Edge hub, whose limits are "taken from IoTHub", counts) and
never less than the docs' own count (keys plus values, numbers 8 bytes, booleans 4, strings without control
characters: larger than the JSON for objects dense in small numbers), so the local hub is never the kinder of the
two readings. What status text IoT Hub gives an oversized twin is not documented ("rejects with an error"): the
local hub answers 400 ArgumentInvalid (errorCode 400004), as for a bad name.
Ref: https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-device-twins
"""

from __future__ import annotations

import base64
import copy
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from shared.iothub.twin_values import (
    HUB_OWNED,
    TWIN_STRING_MAX_BYTES,
    keys_problem,
    long_string,
    null_in_array,
)

TAGS_MAX_BYTES: Final = 8 * 1024  # "an 8-KB size limit on the value of tags"
DESIRED_MAX_BYTES: Final = 32 * 1024  # "a 32-KB size limit each on the value of properties/desired and
REPORTED_MAX_BYTES: Final = 32 * 1024  # properties/reported"
MAX_DEPTH: Final = 10  # "The maximum depth of JSON objects in tags, desired properties, and reported properties"
_NUMBER_BYTES: Final = 8  # the docs' count of a numeric value
_BOOLEAN_BYTES: Final = 4  # and of a boolean


class TwinError(ValueError):
    """A twin patch IoT Hub refuses whole (400, errorCode 400004 ArgumentInvalid); the message says why."""


class TwinKeyError(TwinError):
    """A property name IoT Hub refuses; the message says which."""


class TwinLimitError(TwinError):
    """A patch that would leave tags, desired or reported properties over IoT Hub's size or depth limit."""


def check_keys(value: Any, top: bool = True) -> None:
    """Raise TwinKeyError for the first key of `value` (a patch, at any depth, arrays included) IoT Hub refuses
    (shared/iothub/twin_values.py: the rule the in-memory gateway applies too). `top`: `value` is a whole desired
    or reported patch, where the hub's own `$version` / `$metadata` pass (and are ignored by `merge_patch`)."""
    problem = keys_problem(value, top)
    if problem is not None:
        raise TwinKeyError(problem)


def _text_bytes(text: str) -> int:
    """The docs' count of a string: its UTF-8 bytes, control characters (C0, C1) left out."""
    return len("".join(c for c in text if unicodedata.category(c) != "Cc").encode("utf-8", "surrogatepass"))


def _counted(value: Any) -> int:
    """The docs' count of a value ("Device twin size"): keys and values added up, numbers 8 bytes, booleans 4."""
    if isinstance(value, Mapping):
        return sum(_text_bytes(str(key)) + _counted(item) for key, item in value.items())
    if isinstance(value, list):  # the docs are silent on arrays: their items' values, added up
        return sum(_counted(item) for item in value)
    if isinstance(value, bool):
        return _BOOLEAN_BYTES
    if isinstance(value, (int, float)):
        return _NUMBER_BYTES
    if isinstance(value, str):
        return _text_bytes(value)
    return 0  # null


def section_size(section: Mapping[str, Any]) -> int:
    """What a twin section (tags, desired or reported, without `$version` / `$metadata`) takes against its
    limit: its compact UTF-8 JSON, or the docs' count where that is larger."""
    mine = {k: v for k, v in section.items() if k not in HUB_OWNED}
    return max(len(orjson.dumps(mine)), _counted(mine))


def too_deep(value: Any, depth: int = 0) -> bool:
    """Whether an object or array of `value` (a section: level 0) sits deeper than MAX_DEPTH."""
    if isinstance(value, Mapping):
        items: Any = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return False
    return depth > MAX_DEPTH or any(too_deep(item, depth + 1) for item in items)


def check_section(name: str, section: Mapping[str, Any], max_bytes: int) -> None:
    """TwinLimitError when `section` (what a patch would leave of it) is over IoT Hub's size or depth limit."""
    if too_deep(section):
        raise TwinLimitError(f"Twin {name} would be nested deeper than the maximum depth of {MAX_DEPTH}.")
    size = section_size(section)
    if size > max_bytes:
        raise TwinLimitError(f"Twin {name} would take {size} bytes, over the maximum size of {max_bytes} bytes.")


def check_tags(patch: Mapping[str, Any]) -> None:
    """A tags patch: its names (`check_keys`), and what it leaves (`check_section`) against 8 KB. The local hub
    keeps no tags, so that is the patch alone merged into none: the one case where it is kinder than IoT Hub,
    which counts the tags the twin already has too."""
    check_keys(patch)
    merged: dict[str, Any] = {}
    merge_patch(merged, patch)
    check_section("tags", merged, TAGS_MAX_BYTES)


def patched(section: Mapping[str, Any], patch: Mapping[str, Any], name: str, max_bytes: int) -> dict[str, Any]:
    """`section` with `patch` merged in, as a new dict; TwinError (names, a null inside an array, size, depth)
    leaves `section` as it is."""
    check_keys(patch)
    if null_in_array(patch):  # IoT Hub replaces arrays whole and takes no null in one (shared/iothub/twin_values.py)
        raise TwinError(f"Twin {name}: an array holds a null or an object with a null property.")
    if long_string(patch):
        raise TwinError(f"Twin {name}: a string value is over {TWIN_STRING_MAX_BYTES} bytes.")
    result = copy.deepcopy(dict(section))
    merge_patch(result, patch)
    check_section(name, result, max_bytes)
    return result


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
        TwinError, nothing changed, when a key is one IoT Hub refuses (TwinKeyError) or the desired properties
        would be over 32 KB or 10 levels deep (TwinLimitError)."""
        self.desired = patched(self.desired, patch, "desired properties", DESIRED_MAX_BYTES)
        self.desired_version += 1
        self.version += 1
        pushed = {k: copy.deepcopy(v) for k, v in patch.items() if k not in HUB_OWNED}
        return {**pushed, "$version": self.desired_version}

    def patch_reported(self, patch: Mapping[str, Any]) -> int:
        """A device's reported patch; its new `$version`. TwinError, nothing changed, as for `patch_desired`."""
        self.reported = patched(self.reported, patch, "reported properties", REPORTED_MAX_BYTES)
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
