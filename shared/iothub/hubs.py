"""Several IoT Hubs behind one IoTHubGateway: each call for a car goes to the hub the car lives on.

A carmaker runs several hubs ("stamps", IOTHUB_STAMPS): one hub holds at most 1,000,000 devices, and data
residency keeps EU cars on EU hubs. The Device Provisioning Service puts each car on a hub (our custom
allocation function chooses it) and the allocation function records that hub on the vehicle document:
`{"provisioning": {"hub": "<hostname>", ...}}` in the `vehicles` container. `MultiHubGateway` reads that
field (cached per device for a short time) and hands the call to that hub's gateway; a car without it (one
registered directly with `POST /api/vehicles`, before DPS) lives on the default hub, IOTHUB_HOSTNAME.

A car may move: re-provisioning (a new certificate, another market) lands it on another hub and the
allocation function rewrites `provisioning.hub`. A call that meets DeviceNotFound on the hub the cache
named therefore forgets the cached hub, reads the document again and, when the car now lives elsewhere,
retries once there. Nothing is lost: IoT Hub refused the call on the old hub, so nothing was sent twice.

    gateway = MultiHubGateway({"eu.azure-devices.net": eu, "us.azure-devices.net": us},
                              default_hub="eu.azure-devices.net", store=store)
    await gateway.send_c2d("car-001", b"{}", {})   # to the hub car-001's document names

Deleting or disabling a device (erasure, revocation) acts on every hub, the car's own first: an identity left on
a hub the car moved away from could still connect there (its certificate is still valid) and still holds its twin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar

import orjson

from shared.containers import VEHICLES
from shared.device_messages import safe_id
from shared.errors import ConfigurationError, DeviceNotFoundError
from shared.iothub.gateway import (
    DEFAULT_C2D_TTL_SECONDS,
    DEFAULT_METHOD_RESPONSE_TIMEOUT,
    DeviceIdentity,
    IoTHubGateway,
    MethodResult,
    ModuleTwin,
)
from shared.stores.base import DocumentStore

log = logging.getLogger(__name__)

T = TypeVar("T")

STAMPS_SETTING: Final = "IOTHUB_STAMPS"
# How long the hub read from a vehicle document is trusted. Short: a car that moved is found at the latest
# this long after its document changed, and sooner by the DeviceNotFound retry; long enough that a burst of
# replies to one car (a batch of requests) costs one document read.
DEFAULT_CACHE_SECONDS: Final = 30.0
# Cars whose hub one process remembers at most (oldest forgotten first): bounds memory on a busy instance.
DEFAULT_CACHE_ENTRIES: Final = 10_000


def local_service_urls(raw: str, default_hub: str | None) -> dict[str, str] | None:
    """LOCAL_IOTHUB_SERVICE_URL as {hub host name: service URL} when it is a JSON object (several local hubs),
    None when it is a single URL (one local hub, today's behaviour)."""
    text = raw.strip()
    if not text.startswith("{"):
        return None
    try:
        data: Any = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"LOCAL_IOTHUB_SERVICE_URL is neither a URL nor JSON: {exc}") from None
    if not data or not all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in data.items()):
        raise ConfigurationError('LOCAL_IOTHUB_SERVICE_URL must map hub host names to URLs: {"<host>": "<url>"}')
    urls = {host.lower(): url for host, url in data.items()}
    if default_hub and default_hub.lower() not in urls:
        raise ConfigurationError(f"IOTHUB_HOSTNAME {default_hub} is not one of LOCAL_IOTHUB_SERVICE_URL's hubs")
    return urls


class MultiHubGateway(IoTHubGateway):
    """Routes every call for a device to the gateway of the hub the car lives on (see the module docstring)."""

    def __init__(
        self,
        gateways: Mapping[str, IoTHubGateway],
        default_hub: str,
        store: DocumentStore | Callable[[], DocumentStore],
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gateways = {host.lower(): gateway for host, gateway in gateways.items()}
        self._default = default_hub.lower()
        if self._default not in self._gateways:
            raise ConfigurationError(f"the default hub {default_hub} has no gateway (hubs: {sorted(self._gateways)})")
        self._store = store
        self._cache_seconds = cache_seconds
        self._cache_entries = cache_entries
        self._clock = clock
        self._hubs: dict[str, tuple[str, float]] = {}  # device id → (hub host name, when to read it again)

    @property
    def hubs(self) -> tuple[str, ...]:
        """The host names of every hub, the default first."""
        return (self._default, *(h for h in self._gateways if h != self._default))

    def gateway_of(self, hub: str) -> IoTHubGateway:
        return self._gateways[hub.lower()]

    def forget(self, device_id: str) -> None:
        """Drop the cached hub of a device (the next call reads its document)."""
        self._hubs.pop(device_id, None)

    def _documents(self) -> DocumentStore:
        return self._store if isinstance(self._store, DocumentStore) else self._store()

    async def _assigned_hub(self, device_id: str) -> str | None:
        """`provisioning.hub` of the car's vehicle document, lower-cased; None when it names none."""
        stored = await self._documents().read(VEHICLES, device_id, safe_id(device_id))
        provisioning = stored.document.get("provisioning") if stored else None
        hub = provisioning.get("hub") if isinstance(provisioning, dict) else None
        return hub.lower() if isinstance(hub, str) and hub else None

    async def hub_of(self, device_id: str) -> str:
        """The host name of the hub the car lives on: cached, else read from its vehicle document."""
        now = self._clock()
        cached = self._hubs.get(device_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        hub = await self._assigned_hub(device_id) or self._default
        if hub not in self._gateways:
            # The document names a hub this process was not configured with (IOTHUB_STAMPS out of date): the
            # default hub answers DeviceNotFound, which callers already treat as permanent for this car.
            log.error(
                "device %s lives on %s, which is not in %s: using %s", device_id, hub, STAMPS_SETTING, self._default
            )
            hub = self._default
        self._hubs.pop(device_id, None)
        if len(self._hubs) >= self._cache_entries:
            self._hubs.pop(next(iter(self._hubs)))
        self._hubs[device_id] = (hub, now + self._cache_seconds)
        return hub

    async def _on_devices_hub(self, device_id: str, call: Callable[[IoTHubGateway], Awaitable[T]]) -> T:
        """`call` on the car's hub; after DeviceNotFound there, once more on the hub its document names now."""
        hub = await self.hub_of(device_id)
        try:
            return await call(self._gateways[hub])
        except DeviceNotFoundError:
            self.forget(device_id)
            moved_to = await self.hub_of(device_id)
            if moved_to == hub:
                raise
            log.info("device %s moved from %s to %s: retrying there", device_id, hub, moved_to)
            return await call(self._gateways[moved_to])

    async def send_c2d(
        self,
        device_id: str,
        body: bytes,
        properties: Mapping[str, str],
        ttl_seconds: float = DEFAULT_C2D_TTL_SECONDS,
    ) -> None:
        await self._on_devices_hub(device_id, lambda g: g.send_c2d(device_id, body, properties, ttl_seconds))

    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        await self._on_devices_hub(device_id, lambda g: g.patch_desired(device_id, patch))

    async def invoke_method(
        self,
        device_id: str,
        method: str,
        payload: Any,
        connect_timeout: int = 0,
        response_timeout: int = DEFAULT_METHOD_RESPONSE_TIMEOUT,
    ) -> MethodResult:
        return await self._on_devices_hub(
            device_id, lambda g: g.invoke_method(device_id, method, payload, connect_timeout, response_timeout)
        )

    async def invoke_module_method(
        self,
        device_id: str,
        module_id: str,
        method: str,
        payload: Any,
        connect_timeout: int = 0,
        response_timeout: int = DEFAULT_METHOD_RESPONSE_TIMEOUT,
    ) -> MethodResult:
        return await self._on_devices_hub(
            device_id,
            lambda g: g.invoke_module_method(device_id, module_id, method, payload, connect_timeout, response_timeout),
        )

    async def patch_module_desired(
        self, device_id: str, module_id: str, patch: Mapping[str, Any], etag: str | None = None
    ) -> None:
        await self._on_devices_hub(device_id, lambda g: g.patch_module_desired(device_id, module_id, patch, etag))

    async def get_module_twin(self, device_id: str, module_id: str) -> ModuleTwin:
        return await self._on_devices_hub(device_id, lambda g: g.get_module_twin(device_id, module_id))

    async def create_device(self, device_id: str) -> DeviceIdentity:
        """On the car's hub when its document names one, else (a car registered directly) on the default hub."""
        self.forget(device_id)
        return await self._gateways[await self.hub_of(device_id)].create_device(device_id)

    async def delete_device(self, device_id: str) -> bool:
        """From every hub, the car's own first (see the module docstring); True if any hub had it."""
        self.forget(device_id)
        first = await self.hub_of(device_id)
        self.forget(device_id)
        deleted = False
        for hub in (first, *(h for h in self.hubs if h != first)):
            deleted = await self._gateways[hub].delete_device(device_id) or deleted
        return deleted

    async def set_device_enabled(self, device_id: str, enabled: bool) -> bool:
        """Disabling (revocation) applies on every hub, the car's own first: an identity left enabled on a hub the
        car moved away from could still connect there. Enabling (revocation undone) applies on the car's hub only:
        identities on hubs it left stay off. True if a hub had the identity."""
        self.forget(device_id)
        first = await self.hub_of(device_id)
        self.forget(device_id)
        hubs = (first,) if enabled else (first, *(h for h in self.hubs if h != first))
        found = False
        for hub in hubs:
            found = await self._gateways[hub].set_device_enabled(device_id, enabled) or found
        return found

    async def close(self) -> None:
        for gateway in self._gateways.values():
            await gateway.close()
