"""IoTHubGateway for the local stack: C2D messages, twin patches, direct methods through the local IoT Hub.

The local hub (devstack/iothub) serves a small service API on loopback, shaped after IoT Hub's service REST
API (`PATCH /twins/{id}`, `POST /devices/{id}/messages/deviceBound` with `iothub-app-*` headers and the
absolute expiry in `iothub-expiry`, `POST /twins/{id}/methods` and `/twins/{id}/modules/{mid}/methods` for direct
methods). Going over HTTP rather than calling the hub in process keeps this gateway usable from `func start`,
where the functions run in another process. Selected when `LOCAL_IOTHUB_SERVICE_URL` is set (docs/local-stack.md).

Errors are read as IoT Hub's REST API gives them: the status, and the error code from the `iothub-errorcode`
header or else the `ErrorCode:<code>;...` prefix of the body's `Message`; `shared.faults.iothub_error` decides
what they mean. No answer at all (connection refused, timeout) is a transient IoTHubError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import orjson

from shared.errors import ConfigurationError
from shared.faults import iothub_error
from shared.iothub.gateway import (
    DEFAULT_C2D_TTL_SECONDS,
    DEFAULT_METHOD_RESPONSE_TIMEOUT,
    DeviceExistsError,
    DeviceIdentity,
    IoTHubGateway,
    MethodResult,
    ModuleTwin,
    c2d_expiry,
    error_code_of,
    method_payload,
    method_request_body,
    new_device_key,
)
from shared.settings import setting

if TYPE_CHECKING:
    import aiohttp

SERVICE_URL_SETTING: Final = "LOCAL_IOTHUB_SERVICE_URL"
EXPIRY_HEADER: Final = "iothub-expiry"  # absolute expiry (ISO 8601 UTC), as on IoT Hub's HTTPS message API
METHOD_HTTP_GRACE_SECONDS: Final = 10  # how much longer than the hub's own wait the HTTP call may take


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
        status, _ = await self._request(method, path, body, headers, accept)
        return status

    async def _request(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        accept: tuple[int, ...] = (),
        wait_seconds: float | None = None,
        operation: str | None = None,
    ) -> tuple[int, bytes]:
        import aiohttp

        operation = operation or f"local IoT Hub {method} {path}"
        kwargs: dict[str, Any] = {"data": body, "headers": dict(headers)}
        if wait_seconds is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=wait_seconds)
        try:
            async with self._client().request(method, self._base + path, **kwargs) as resp:
                content = await resp.read()
                if resp.status < 300 or resp.status in accept:
                    return resp.status, content
                code = error_code_of(resp.headers, content)
        except (aiohttp.ClientError, TimeoutError) as exc:  # no answer: transient
            raise iothub_error(None, type(exc).__name__, operation) from exc
        raise iothub_error(resp.status, code, operation)

    async def invoke_method(
        self,
        device_id: str,
        method: str,
        payload: Any,
        connect_timeout: int = 0,
        response_timeout: int = DEFAULT_METHOD_RESPONSE_TIMEOUT,
    ) -> MethodResult:
        path = f"/twins/{quote(device_id, safe='')}/methods"
        return await self._method(path, device_id, method, payload, connect_timeout, response_timeout)

    async def invoke_module_method(
        self,
        device_id: str,
        module_id: str,
        method: str,
        payload: Any,
        connect_timeout: int = 0,
        response_timeout: int = DEFAULT_METHOD_RESPONSE_TIMEOUT,
    ) -> MethodResult:
        """`POST /twins/{id}/modules/{mid}/methods`, as invoke_device_module_method sends it."""
        path = f"{_module_twin_path(device_id, module_id)}/methods"
        target = f"{device_id}/{module_id}"
        return await self._method(path, target, method, payload, connect_timeout, response_timeout)

    async def _method(
        self, path: str, device_id: str, method: str, payload: Any, connect_timeout: int, response_timeout: int
    ) -> MethodResult:
        method_request_body(method, payload, connect_timeout, response_timeout)  # refuse before sending
        body = orjson.dumps(
            {
                "methodName": method,
                "payload": payload,
                "responseTimeoutInSeconds": response_timeout,
                "connectTimeoutInSeconds": connect_timeout,
            }
        )
        _, content = await self._request(
            "POST",
            path,
            body,
            {"Content-Type": "application/json"},
            wait_seconds=connect_timeout + response_timeout + METHOD_HTTP_GRACE_SECONDS,
            operation=f"method {method} on {device_id}",
        )
        answer = method_payload(content)
        status = answer.get("status") if isinstance(answer, dict) else None
        if isinstance(status, bool) or not isinstance(status, int):
            raise iothub_error(None, "the local hub's answer has no device status", f"method {method} on {device_id}")
        return MethodResult(status, answer.get("payload"))

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

    async def set_device_enabled(self, device_id: str, enabled: bool) -> bool:
        """IoT Hub's update: `PUT /devices/{id}` with `If-Match` and the new `status` (the local hub keeps the
        identity's authentication as it is)."""
        body = orjson.dumps({"deviceId": device_id, "status": "enabled" if enabled else "disabled"})
        headers = {"Content-Type": "application/json", "If-Match": "*"}
        return await self._call("PUT", f"/devices/{quote(device_id, safe='')}", body, headers, accept=(404,)) != 404

    async def send_c2d(
        self,
        device_id: str,
        body: bytes,
        properties: Mapping[str, str],
        ttl_seconds: float = DEFAULT_C2D_TTL_SECONDS,
    ) -> None:
        headers = {f"iothub-app-{name}": value for name, value in properties.items()}
        expiry = c2d_expiry(ttl_seconds).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        headers[EXPIRY_HEADER] = expiry
        await self._call("POST", f"/devices/{quote(device_id, safe='')}/messages/deviceBound", body, headers)

    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        body = orjson.dumps({"properties": {"desired": dict(patch)}})
        headers = {"Content-Type": "application/json"}
        await self._call("PATCH", f"/twins/{quote(device_id, safe='')}", body, headers)

    async def patch_module_desired(
        self, device_id: str, module_id: str, patch: Mapping[str, Any], etag: str | None = None
    ) -> None:
        """`PATCH /twins/{id}/modules/{mid}` with `If-Match` the quoted etag, or `"*"`, as the SDK's
        update_module_twin sends it."""
        body = orjson.dumps({"properties": {"desired": dict(patch)}})
        headers = {"Content-Type": "application/json", "If-Match": if_match(etag)}
        await self._call("PATCH", _module_twin_path(device_id, module_id), body, headers)

    async def get_module_twin(self, device_id: str, module_id: str) -> ModuleTwin:
        _, content = await self._request("GET", _module_twin_path(device_id, module_id), b"", {})
        document = method_payload(content)
        if not isinstance(document, dict):
            raise iothub_error(None, "the local hub's module twin is not a JSON object", f"twin of {module_id}")
        return ModuleTwin.from_json(document)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def if_match(etag: str | None) -> str:
    """IoT Hub's `If-Match` value: the etag quoted (as the SDK's `_ensure_quoted` sends it), or `"*"` for any."""
    value = etag or "*"
    return value if len(value) > 1 and value[0] == value[-1] == '"' else f'"{value}"'


def _module_twin_path(device_id: str, module_id: str) -> str:
    return f"/twins/{quote(device_id, safe='')}/modules/{quote(module_id, safe='')}"
