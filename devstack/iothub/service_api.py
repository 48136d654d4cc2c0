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
Module identities and module twins (what `IoTHubRegistryManager`'s module calls send; docs "IoT Hub REST: Modules"):
- `PUT /devices/{deviceId}/modules/{moduleId}` with `{"moduleId", "deviceId", "managedBy", "authentication": {"type":
  "sas", "symmetricKey": {"primaryKey", "secondaryKey"}}}` creates a module (keys generated when none are given; 404
  DeviceNotFound without its device, 409 ModuleAlreadyExistsOnDevice); with `If-Match` (`*` or its etag, else 412
  PreconditionFailed) it replaces the module's keys. SAS only: other authentication types answer 400 here.
- `GET /devices/{deviceId}/modules/{moduleId}` returns the module with its keys (as IoT Hub shows them to a caller
  with registry read), `GET /devices/{deviceId}/modules` all of the device's, `DELETE .../modules/{moduleId}`
  (`If-Match` `*` or its etag) removes it and closes its connection: 204, 404 ModuleNotFound;
- `GET /twins/{deviceId}/modules/{moduleId}` returns the module twin (`deviceId`, `moduleId`, `etag`, `version`,
  `properties`), `PATCH` with `{"properties": {"desired": {...}}}` and `If-Match` (`*` or the twin's etag, else 412
  PreconditionFailed) merges desired properties, pushes them to the connected module and returns the twin. Tags are
  not kept locally (a patch with tags answers 400);
- a twin patch with a property (or tag) name IoT Hub refuses (twin.py `check_keys`: '.', '$', '#', space, control
  characters, over 1 KB, at any depth), or that would leave the desired properties over 32 KB or its tags over 8 KB
  or either nested over 10 levels (twin.py `check_section`), answers 400 ArgumentInvalid and changes nothing;
- `POST /twins/{deviceId}/modules/{moduleId}/methods` invokes a direct method on the module, as for a device;
- `POST /devices/{deviceId}/modules/{moduleId}/messages/deviceBound`: IoT Hub delivers no cloud-to-device message to a
  module, so this answers 400 ArgumentInvalid (IoT Hub's exact answer to such a send was not observed; the service SDKs
  of Node and Python offer no such call).
Errors come as IoT Hub's REST API gives them: the status, an `iothub-errorcode` header and the body
`{"Message": "ErrorCode:<code>;<description>", "ExceptionMessage": "Tracking ID:...-TimeStamp:..."}`.
No authentication: it listens on 127.0.0.1 only, for processes of the developer's own machine (including
`func start`, which runs the functions outside this process).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid
from typing import Any, Final
from urllib.parse import quote

import orjson
from aiohttp import web

from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import identity_key
from devstack.iothub.twin import TwinError, check_tags, etag_matches
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
    new_device_key,
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
        tags = body.get("tags") or {}
        if not isinstance(tags, dict):
            return error_response(400, "ArgumentInvalid", "tags must be a JSON object")
        try:
            check_tags(tags)  # not kept locally, but a name or a size IoT Hub refuses is refused here too
            await hub.patch_desired(request.match_info["device"], desired)
        except TwinError as exc:
            return error_response(400, "ArgumentInvalid", str(exc))
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
        device, module = request.match_info["device"], request.match_info.get("module")
        if (missing := gone(device) if module is None else module_gone(device, module)) is not None:
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
            status, answer = await hub.invoke_method(
                identity_key(device, module), method, payload_json, connect, response
            )
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
            hub.disconnect_modules(device)  # nor can its modules
        return web.json_response({"deviceId": device, "status": status})

    async def delete_device(request: web.Request) -> web.Response:
        device = request.match_info["device"]
        modules = hub.registry.modules(device)  # deleted with the device
        if not hub.registry.remove(device):
            return error_response(404, "DeviceNotFound", device)
        hub.registry.clear_status(device)
        hub.remove_device(device, modules)
        return web.Response(status=204)

    # --- module identities and module twins ------------------------------------------------------------------

    def module_gone(device: str, module: str) -> web.Response | None:
        if not hub.registry.exists(device):
            return error_response(404, "DeviceNotFound", device)
        if not hub.registry.module_exists(device, module):
            return error_response(404, "ModuleNotFound", f"{device}/{module}")
        return None

    def module_json(device: str, module: str) -> dict[str, Any]:
        key = hub.registry.modules(device)[module]
        return {
            "deviceId": device,
            "moduleId": module,
            "managedBy": managed_by.get(identity_key(device, module)),
            "generationId": generations.get(identity_key(device, module), "provisioned"),
            "etag": module_etag(key),
            "connectionState": "Connected" if hub.connected(identity_key(device, module)) else "Disconnected",
            "cloudToDeviceMessageCount": 0,
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": None}},
        }

    async def put_module(request: web.Request) -> web.Response:
        device, module = request.match_info["device"], request.match_info["module"]
        body = await json_body(request)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body, dict) or body.get("moduleId", module) != module:
            return error_response(400, "ArgumentInvalid", "expected a module identity with this moduleId")
        authentication = body.get("authentication") or {"type": "sas"}
        keys = authentication.get("symmetricKey") if isinstance(authentication, dict) else None
        if not isinstance(authentication, dict) or authentication.get("type", "sas") != "sas":
            return error_response(400, "ArgumentInvalid", "the local hub supports SAS module identities only")
        key = keys.get("primaryKey") if isinstance(keys, dict) else None
        if key is not None and (not isinstance(key, str) or not _is_base64(key)):
            return error_response(400, "ArgumentInvalid", "primaryKey must be a base64 string")
        if not hub.registry.exists(device):
            return error_response(404, "DeviceNotFound", device)
        if "If-Match" in request.headers:  # an update: the module's keys
            if not hub.registry.module_exists(device, module):
                return error_response(404, "ModuleNotFound", f"{device}/{module}")
            if not etag_matches(request.headers["If-Match"], module_etag(hub.registry.modules(device)[module])):
                return error_response(412, "PreconditionFailed", f"{device}/{module} changed since")
            if key is not None:
                hub.registry.set_module_key(device, module, key)
        elif not hub.registry.register_module(device, module, key or new_device_key()):
            return error_response(409, "ModuleAlreadyExistsOnDevice", f"{device}/{module}")
        else:
            generations[identity_key(device, module)] = uuid.uuid4().hex[:18]
        if isinstance(body.get("managedBy"), str):
            managed_by[identity_key(device, module)] = body["managedBy"]
        return web.json_response(module_json(device, module))

    async def get_module(request: web.Request) -> web.Response:
        device, module = request.match_info["device"], request.match_info["module"]
        if (missing := module_gone(device, module)) is not None:
            return missing
        return web.json_response(module_json(device, module))

    async def get_modules(request: web.Request) -> web.Response:
        device = request.match_info["device"]
        if (missing := gone(device)) is not None:
            return missing
        return web.json_response([module_json(device, m) for m in hub.registry.modules(device)])

    async def delete_module(request: web.Request) -> web.Response:
        device, module = request.match_info["device"], request.match_info["module"]
        if (missing := module_gone(device, module)) is not None:
            return missing
        if not etag_matches(request.headers.get("If-Match"), module_etag(hub.registry.modules(device)[module])):
            return error_response(412, "PreconditionFailed", f"{device}/{module} changed since")
        hub.registry.remove_module(device, module)
        hub.remove_module(device, module)
        return web.Response(status=204)

    async def get_module_twin(request: web.Request) -> web.Response:
        device, module = request.match_info["device"], request.match_info["module"]
        if (missing := module_gone(device, module)) is not None:
            return missing
        return web.json_response(hub.twin_json(device, module))

    async def patch_module_twin(request: web.Request) -> web.Response:
        device, module = request.match_info["device"], request.match_info["module"]
        if (missing := module_gone(device, module)) is not None:
            return missing
        body = await json_body(request)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body, dict):
            return error_response(400, "ArgumentInvalid", "expected {properties: {desired: {...}}}")
        if body.get("tags"):
            return error_response(400, "ArgumentInvalid", "the local hub keeps no twin tags")
        properties = body.get("properties") or {}
        desired = properties.get("desired") or {} if isinstance(properties, dict) else None
        if not isinstance(desired, dict):
            return error_response(400, "ArgumentInvalid", "expected {properties: {desired: {...}}}")
        identity = identity_key(device, module)
        if not etag_matches(request.headers.get("If-Match"), hub.twins.get(identity).etag):
            return error_response(412, "PreconditionFailed", f"the twin of {identity} changed since")
        if desired:
            try:
                await hub.patch_desired(identity, desired)
            except TwinError as exc:
                return error_response(400, "ArgumentInvalid", str(exc))
        return web.json_response(hub.twin_json(device, module))

    async def c2d_to_module(request: web.Request) -> web.Response:
        return error_response(400, "ArgumentInvalid", "IoT Hub delivers no cloud-to-device messages to modules")

    managed_by: dict[str, str] = {}  # identity → the module's managedBy (e.g. "iotEdge")
    generations: dict[str, str] = {}  # identity → generation id (new each time the module is created)

    app = web.Application()
    app.router.add_put("/devices/{device}", put_device)
    app.router.add_delete("/devices/{device}", delete_device)
    app.router.add_patch("/twins/{device}", patch_twin)
    app.router.add_get("/twins/{device}", get_twin)
    app.router.add_post("/devices/{device}/messages/deviceBound", send_c2d)
    app.router.add_post("/twins/{device}/methods", invoke_method)
    app.router.add_get("/devices/{device}/modules", get_modules)
    app.router.add_put("/devices/{device}/modules/{module}", put_module)
    app.router.add_get("/devices/{device}/modules/{module}", get_module)
    app.router.add_delete("/devices/{device}/modules/{module}", delete_module)
    app.router.add_post("/devices/{device}/modules/{module}/messages/deviceBound", c2d_to_module)
    app.router.add_get("/twins/{device}/modules/{module}", get_module_twin)
    app.router.add_patch("/twins/{device}/modules/{module}", patch_module_twin)
    app.router.add_post("/twins/{device}/modules/{module}/methods", invoke_method)
    return app


async def json_body(request: web.Request) -> Any:
    """The request's JSON, or IoT Hub's 400 ArgumentInvalid answer when it is not JSON."""
    try:
        return orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return error_response(400, "ArgumentInvalid", "the body is not JSON")


def module_etag(key: str) -> str:
    """A module identity's etag: it changes when its keys do (the only thing the local hub lets an update change)."""
    return base64.b64encode(hashlib.sha256(key.encode()).digest()[:8]).decode("ascii")


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return bool(text)


async def module_connection_string(
    service_url: str, hostname: str, device_id: str, module_id: str, managed_by: str = "iotEdge"
) -> str:
    """The module's connection string from a running local hub, creating the module identity (with generated keys)
    unless it exists: what `az iot hub module-identity create` + `connection-string show` do, for a process outside
    the stack (an Edge module under `make dev`: `service_url` is the stack's LOCAL_IOTHUB_SERVICE_URL, `hostname` its
    IOTHUB_HOSTNAME). In process, `registry.provision_module(device_id, module_id)` gives the same. Raises
    LookupError when the device does not exist, aiohttp.ClientResponseError for any other refusal."""
    import aiohttp

    path = f"{service_url.rstrip('/')}/devices/{quote(device_id, safe='')}/modules/{quote(module_id, safe='')}"
    identity = {"deviceId": device_id, "moduleId": module_id, "managedBy": managed_by}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.put(path, data=orjson.dumps(identity)) as created:
            status = created.status
            answer = await created.json() if status == 200 else None
        if status == 409:  # it exists: read its keys
            async with session.get(path) as read:
                read.raise_for_status()
                answer = await read.json()
        elif status == 404:
            raise LookupError(f"no device {device_id} in the local hub")
        elif answer is None:
            raise aiohttp.ClientResponseError(created.request_info, (), status=status, message="module not created")
    key = answer["authentication"]["symmetricKey"]["primaryKey"]
    return f"HostName={hostname};DeviceId={device_id};ModuleId={module_id};SharedAccessKey={key}"


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
