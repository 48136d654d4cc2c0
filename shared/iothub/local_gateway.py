"""IoTHubGateway for the local stack: cloud-to-device messages and twin patches through the local IoT Hub.

The local hub (devstack/iothub) serves a small service API on loopback, shaped after IoT Hub's service REST
API (`PATCH /twins/{id}`, `POST /devices/{id}/messages/deviceBound` with `iothub-app-*` headers). Going over
HTTP rather than calling the hub in process keeps this gateway usable from `func start`, where the functions
run in another process. Selected when `LOCAL_IOTHUB_SERVICE_URL` is set (docs/local-stack.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import orjson

from shared.errors import ConfigurationError, DeviceNotFoundError, StoreError
from shared.iothub.gateway import (
    DeviceExistsError,
    DeviceIdentity,
    IoTHubGateway,
    new_device_key,
)
from shared.settings import setting

if TYPE_CHECKING:
    import aiohttp

SERVICE_URL_SETTING: Final = "LOCAL_IOTHUB_SERVICE_URL"


class LocalIoTHubGateway(IoTHubGateway):
    def __init__(self, service_url: str, hostname: str = "localhost") -> None:
        self._base = service_url.rstrip("/")
        self._hostname = hostname
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LocalIoTHubGateway:
        url = setting(SERVICE_URL_SETTING, environ)
        if not url:
            raise ConfigurationError(f"{SERVICE_URL_SETTING} is not set (the local stack sets it)")
        return cls(url, setting("IOTHUB_HOSTNAME", environ) or "localhost")

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    async def _call(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str], accept: tuple[int, ...] = ()
    ) -> int:
        import aiohttp

        try:
            async with self._client().request(method, self._base + path, data=body, headers=dict(headers)) as resp:
                if resp.status >= 300 and resp.status not in accept:
                    raise StoreError(f"local IoT Hub {method} {path}: {resp.status} {await resp.text()}")
                return resp.status
        except aiohttp.ClientError as exc:
            raise StoreError(f"local IoT Hub {method} {path}: {type(exc).__name__}") from exc

    async def create_device(self, device_id: str) -> DeviceIdentity:
        key = new_device_key()
        keys = {"primaryKey": key, "secondaryKey": new_device_key()}
        body = orjson.dumps(
            {"deviceId": device_id, "status": "enabled", "authentication": {"type": "sas", "symmetricKey": keys}}
        )
        headers = {"Content-Type": "application/json"}
        status = await self._call("PUT", f"/devices/{quote(device_id, safe='')}", body, headers, accept=(409,))
        if status == 409:
            raise DeviceExistsError(f"device {device_id} exists")
        return DeviceIdentity(device_id, self._hostname, key)

    async def delete_device(self, device_id: str) -> bool:
        path = f"/devices/{quote(device_id, safe='')}"
        return await self._call("DELETE", path, b"", {"If-Match": "*"}, accept=(404,)) != 404

    async def send_c2d(self, device_id: str, body: bytes, properties: Mapping[str, str]) -> None:
        headers = {f"iothub-app-{name}": value for name, value in properties.items()}
        path = f"/devices/{quote(device_id, safe='')}/messages/deviceBound"
        if await self._call("POST", path, body, headers, accept=(404,)) == 404:
            raise DeviceNotFoundError(f"C2D to {device_id}: no such device")

    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        body = orjson.dumps({"properties": {"desired": dict(patch)}})
        headers = {"Content-Type": "application/json"}
        if await self._call("PATCH", f"/twins/{quote(device_id, safe='')}", body, headers, accept=(404,)) == 404:
            raise DeviceNotFoundError(f"twin patch of {device_id}: no such device")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
