"""What the backend leaves for a car's Edge module that is not connected: entries in its module twin.

IoT Hub has no cloud-to-device queue for modules (C2D messages are a device's only), and a direct method needs the
module online. What it does keep for a module is its twin: desired properties are pushed to the module while it
is connected and read whole by it when it (re)connects. So a reply or a queued command the module cannot take now
is written as one entry of a desired property, keyed by its id (a request or command id: a UUID, a valid twin
property name), with its body as JSON text (byte for byte what the method would have carried; a string also keeps
nulls and arrays of the body, which a twin patch would delete or limit) and an absolute expiry:

    {"replies": {"<requestId>": {"body": "{\"v\":1,...}", "queuedAt": "...Z", "expiresAt": "...Z"}}}

Bounded: IoT Hub keeps at most 32 KB of desired properties per twin and 4 KB per string value. The module twin
also carries the collection policy (at most 16 KB) and the agenda (8 KB), so each property here gets a byte budget
and a count; every write first drops the expired entries and then the oldest until the new one fits. Entries are
never relied on being removed: the module ignores expired ones and handles an id once.

A write reads the twin and patches it conditionally on the etag it read (If-Match), so two concurrent writes
cannot both pass the budget check on the same read: the loser gets 412, reads again and decides on what the
winner left, at most PUT_ATTEMPTS times.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.device_messages import canonical_time
from shared.errors import DeviceQueueFullError, IoTHubPreconditionFailedError, MessageTooLargeError
from shared.iothub.gateway import IoTHubGateway, ModuleTwin
from shared.iothub.twin_values import TWIN_STRING_MAX_BYTES

# Reads and conditional patches one put tries before giving up on a twin that keeps changing under it.
PUT_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class ModuleInbox:
    """One desired property of the module twin used as a bounded, expiring inbox."""

    gateway: IoTHubGateway
    property: str  # e.g. "replies"
    kept: int  # at most this many entries
    max_bytes: int  # and at most this many bytes of entries (their JSON)
    # When full of live entries: drop the oldest (replies: the car retries with the same requestId) or refuse the
    # new one with DeviceQueueFullError (commands: dropping one would leave a command the car never gets).
    evict: bool = True

    async def put(
        self,
        device_id: str,
        module_id: str,
        key: str,
        body: bytes,
        expires_at: dt.datetime,
        now: dt.datetime,
    ) -> None:
        """Add the entry (replacing one of the same key), dropping expired and oldest ones so it fits.

        Raises MessageTooLargeError for a body over 4 KB or an entry over the budget alone (permanent for it),
        DeviceQueueFullError when full of live entries and not `evict`, DeviceNotFoundError when the device or
        module does not exist, IoTHubPreconditionFailedError when the twin changed between each of PUT_ATTEMPTS
        reads and its patch (transient), IoTHubError (transient)."""
        if len(body) > TWIN_STRING_MAX_BYTES:
            raise MessageTooLargeError(f"{len(body)} bytes do not fit one module twin value (4 KB)")
        entry = {"body": body.decode("utf-8"), "queuedAt": canonical_time(now), "expiresAt": canonical_time(expires_at)}
        size = _size(key, entry)
        if size > self.max_bytes:
            raise MessageTooLargeError(f"an entry of {size} bytes does not fit {self.property} ({self.max_bytes})")
        for _ in range(PUT_ATTEMPTS):
            twin = await self.gateway.get_module_twin(device_id, module_id)
            patch = self._patch(twin, key, entry, size, now)
            try:
                await self.gateway.patch_module_desired(device_id, module_id, {self.property: patch}, twin.etag)
            except IoTHubPreconditionFailedError:
                continue  # another write changed the twin since the read: decide again on what it left
            return
        raise IoTHubPreconditionFailedError(
            f"the twin of {device_id}/{module_id} changed under each of {PUT_ATTEMPTS} writes of {self.property} {key}"
        )

    def _patch(self, twin: ModuleTwin, key: str, entry: dict[str, str], size: int, now: dt.datetime) -> dict[str, Any]:
        """The patch that adds `entry` to what `twin` holds, deleting what must go for it to fit; DeviceQueueFullError
        when that would evict a live entry and this inbox does not evict."""
        if twin.etag is None:  # the patch would be unconditional and this check racy (every gateway gives one)
            raise ValueError(f"the twin of {twin.device_id}/{twin.module_id} was read without an etag")
        current = twin.desired.get(self.property)
        patch: dict[str, Any] = {key: entry}
        entries = current if isinstance(current, Mapping) else {}
        expired, evicted = drop(entries, key, now, self.kept - 1, self.max_bytes - size)
        if evicted and not self.evict:
            raise DeviceQueueFullError(
                f"the module's {self.property} hold {self.kept} live entries or {self.max_bytes} B"
            )
        for old in (*expired, *evicted):
            patch[old] = None
        return patch

    async def remove(self, device_id: str, module_id: str, key: str) -> None:
        """Delete the entry (null in a twin patch deletes the property). DeviceNotFoundError, IoTHubError."""
        await self.gateway.patch_module_desired(device_id, module_id, {self.property: {key: None}})


def _size(key: str, entry: Any) -> int:
    return len(key) + len(orjson.dumps(entry))


def drop(
    entries: Mapping[str, Any], key: str, now: dt.datetime, kept: int, max_bytes: int
) -> tuple[list[str], list[str]]:
    """The keys to delete so that, besides `key`, at most `kept` entries of at most `max_bytes` stay: the expired
    (and malformed) ones, and the live ones evicted, oldest by `queuedAt` first."""
    stamp = canonical_time(now)
    gone: list[str] = []
    evicted: list[str] = []
    alive: list[tuple[str, str, int]] = []
    for name, entry in entries.items():
        if name == key:
            continue
        expires = entry.get("expiresAt") if isinstance(entry, Mapping) else None
        if not isinstance(expires, str) or expires <= stamp:
            gone.append(name)
            continue
        alive.append((str(entry.get("queuedAt") or ""), name, _size(name, entry)))
    alive.sort(reverse=True)  # newest first
    total, full = 0, False
    for count, (_, name, size) in enumerate(alive):
        full = full or count >= kept or total + size > max_bytes  # once one does not fit, no older one stays
        if full:
            evicted.append(name)
        else:
            total += size
    return gone, evicted
