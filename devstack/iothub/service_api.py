"""The local hub's service API over HTTP on loopback, for LocalIoTHubGateway (shared/iothub/local_gateway.py).

Shaped after IoT Hub's own service REST API so the gateway reads like the Azure one:
- `PATCH /twins/{deviceId}` with `{"properties": {"desired": {...}}}` merges desired properties;
- `GET /twins/{deviceId}` returns the twin;
- `POST /devices/{deviceId}/messages/deviceBound` sends a cloud-to-device message; application properties
  come as `iothub-app-<name>` headers and the absolute expiry time as `iothub-expiry` (ISO 8601 UTC), as in
  IoT Hub's HTTPS message API. 403 `DeviceMaximumQueueDepthExceeded` when 50 messages are pending, 413
  `MessageTooLarge` over 64 KB;
- `POST /twins/{deviceId}/methods` with `{"methodName", "payload", "responseTimeoutInSeconds",
  "connectTimeoutInSeconds"}` invokes a direct method: 200 `{"status": <device's status>, "payload": <its JSON>}`
  (payload null when the device answered nothing or not JSON); 404 `DeviceNotOnline` when the device is not
  connected and subscribed to methods within the connect timeout, 504 `GatewayTimeout` when it does not answer
  within the response timeout, 404 `DeviceNotFound` for an unknown device, 400 `ArgumentInvalid` for a bad name
  or timeout, 413 `MessageTooLarge` for a payload over 128 KB;
- `PUT /devices/{deviceId}` with `{"deviceId", "authentication": {"type": "sas", "symmetricKey": {"primaryKey"}}}`
  registers a device (409 if it exists), `DELETE /devices/{deviceId}` removes it (404 if there is none) and
  drops its connection, twin and queued messages (registry.py);
- `PUT /devices/{deviceId}` with `If-Match` and `{"deviceId", "status": "enabled" | "disabled"}` updates its status
  (404 if there is none): a disabled device's connection is closed and it is refused at CONNECT, as on IoT Hub.
Errors come as IoT Hub's REST API gives them: the status, an `iothub-errorcode` header and the body
`{"Message": "ErrorCode:<code>;<description>", "ExceptionMessage": "Tracking ID:...-TimeStamp:..."}`.
No authentication: it listens on 127.0.0.1 only, for processes of the developer's own machine (including
`func start`, which runs the functions outside this process).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Final

import orjson
from aiohttp import web

from devstack.iothub.hub import LocalIoTHub
from shared.errors import (
    DeviceNotOnlineError,
    DeviceQueueFullError,
    DeviceTimeoutError,
    InvalidMethodCallError,
    MessageTooLargeError,
)
from shared.iothub.gateway import (
    DEFAULT_METHOD_RESPONSE_TIMEOUT,
    ERROR_CODE_HEADER,
    METHOD_PAYLOAD_MAX_BYTES,
    method_payload,
    method_request_body,
)

APP_PROPERTY_PREFIX: Final = "iothub-app-"
EXPIRY_HEADER: Final = "iothub-expiry"


def error_response(status: int, code: str, description: str) -> web.Response:
    """An error in the shape of IoT Hub's service REST API."""
    now = dt.datetime.now(dt.UTC)
    body = {
        "Message": f"ErrorCode:{code};{description}",
        "ExceptionMessage": f"Tracking ID:{uuid.uuid4().hex}-G:0-TimeStamp:{now:%m/%d/%Y %H:%M:%S}",
    }
    return web.json_response(body, status=status, headers={ERROR_CODE_HEADER: code})


def parse_expiry(raw: str | None) -> dt.datetime | None:
    """`iothub-expiry` (ISO 8601, UTC when no offset is given); ValueError if malformed."""
    if not raw:
        return None
    parsed = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def service_app(hub: LocalIoTHub) -> web.Application:
    def gone(device: str) -> web.Response | None:
        """A deleted identity: IoT Hub answers 404 DeviceNotFound to C2D sends and twin updates."""
        if hub.registry.exists(device):
            return None
        return error_response(404, "DeviceNotFound", device)

    async def patch_twin(request: web.Request) -> web.Response:
        if (missing := gone(request.match_info["device"])) is not None:
            return missing
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error_response(400, "ArgumentInvalid", "the body is not JSON")
        desired = body.get("properties", {}).get("desired") if isinstance(body, dict) else None
        if not isinstance(desired, dict):
            return error_response(400, "ArgumentInvalid", "expected {properties: {desired: {...}}}")
        await hub.patch_desired(request.match_info["device"], desired)
        return web.json_response(hub.twin_document(request.match_info["device"]))

    async def get_twin(request: web.Request) -> web.Response:
        return web.json_response(hub.twin_document(request.match_info["device"]))

    async def send_c2d(request: web.Request) -> web.Response:
        if (missing := gone(request.match_info["device"])) is not None:
            return missing
        properties = {
            name[len(APP_PROPERTY_PREFIX) :]: value
            for name, value in request.headers.items()
            if name.lower().startswith(APP_PROPERTY_PREFIX)
        }
        try:
            expiry = parse_expiry(request.headers.get(EXPIRY_HEADER))
        except ValueError:
            return error_response(400, "ArgumentInvalid", f"{EXPIRY_HEADER} is not an ISO 8601 time")
        try:
            message_id = await hub.send_c2d(request.match_info["device"], await request.read(), properties, expiry)
        except DeviceQueueFullError as exc:
            return error_response(403, "DeviceMaximumQueueDepthExceeded", str(exc))
        except MessageTooLargeError as exc:
            return error_response(413, "MessageTooLarge", str(exc))
        return web.Response(status=204, headers={"iothub-messageid": message_id})

    async def invoke_method(request: web.Request) -> web.Response:
        device = request.match_info["device"]
        if (missing := gone(device)) is not None:
            return missing
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error_response(400, "ArgumentInvalid", "the body is not JSON")
        if not isinstance(body, dict):
            return error_response(400, "ArgumentInvalid", "expected {methodName, payload, responseTimeoutInSeconds}")
        payload = body.get("payload")
        if len(orjson.dumps(payload)) > METHOD_PAYLOAD_MAX_BYTES:
            return error_response(413, "MessageTooLarge", f"the payload is over {METHOD_PAYLOAD_MAX_BYTES} bytes")
        method = body.get("methodName")
        if not isinstance(method, str):
            return error_response(400, "ArgumentInvalid", "methodName must be a string")
        connect = body.get("connectTimeoutInSeconds", 0)
        response = body.get("responseTimeoutInSeconds", DEFAULT_METHOD_RESPONSE_TIMEOUT)
        try:
            payload_json = method_request_body(method, payload, connect, response)
        except InvalidMethodCallError as exc:
            return error_response(400, "ArgumentInvalid", str(exc))
        try:
            status, answer = await hub.invoke_method(device, method, payload_json, connect, response)
        except DeviceNotOnlineError as exc:
            return error_response(404, "DeviceNotOnline", str(exc))
        except DeviceTimeoutError as exc:
            return error_response(504, "GatewayTimeout", str(exc))
        return web.json_response({"status": status, "payload": method_payload(answer)})

    async def put_device(request: web.Request) -> web.Response:
        device = request.match_info["device"]
        if "If-Match" in request.headers:  # an update of an existing identity: here, its status
            return await update_device(request, device)
        try:
            body = orjson.loads(await request.read())
            key = body["authentication"]["symmetricKey"]["primaryKey"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return error_response(400, "ArgumentInvalid", "expected a SAS device identity")
        if not isinstance(key, str) or not key:
            return error_response(400, "ArgumentInvalid", "primaryKey must be a base64 string")
        if not hub.registry.register(device, key):
            return error_response(409, "DeviceAlreadyExists", device)
        return web.json_response({"deviceId": device, "status": "enabled", "authentication": {"type": "sas"}})

    async def update_device(request: web.Request, device: str) -> web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return error_response(400, "ArgumentInvalid", "the body is not JSON")
        status = body.get("status") if isinstance(body, dict) else None
        if status not in ("enabled", "disabled"):
            return error_response(400, "ArgumentInvalid", "status must be enabled or disabled")
        if not hub.registry.set_enabled(device, status == "enabled"):
            return error_response(404, "DeviceNotFound", device)
        if status == "disabled":  # IoT Hub closes a disabled device's connection; it cannot connect again
            hub.endpoint.disconnect(device)
        return web.json_response({"deviceId": device, "status": status})

    async def delete_device(request: web.Request) -> web.Response:
        device = request.match_info["device"]
        if not hub.registry.remove(device):
            return error_response(404, "DeviceNotFound", device)
        hub.registry.clear_status(device)
        hub.remove_device(device)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_put("/devices/{device}", put_device)
    app.router.add_delete("/devices/{device}", delete_device)
    app.router.add_patch("/twins/{device}", patch_twin)
    app.router.add_get("/twins/{device}", get_twin)
    app.router.add_post("/devices/{device}/messages/deviceBound", send_c2d)
    app.router.add_post("/twins/{device}/methods", invoke_method)
    return app


class ServiceApi:
    def __init__(self, hub: LocalIoTHub) -> None:
        self._runner = web.AppRunner(service_app(hub), access_log=None)
        self.url = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}"
        return self.url

    async def stop(self) -> None:
        await self._runner.cleanup()
