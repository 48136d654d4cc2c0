"""The local hub's service API over HTTP on loopback, for LocalIoTHubGateway (shared/iothub/local_gateway.py).

Shaped after IoT Hub's own service REST API so the gateway reads like the Azure one:
- `PATCH /twins/{deviceId}` with `{"properties": {"desired": {...}}}` merges desired properties;
- `GET /twins/{deviceId}` returns the twin;
- `POST /devices/{deviceId}/messages/deviceBound` sends a cloud-to-device message; application properties
  come as `iothub-app-<name>` headers, as in IoT Hub's HTTPS C2D API;
- `PUT /devices/{deviceId}` with `{"deviceId", "authentication": {"type": "sas", "symmetricKey": {"primaryKey"}}}`
  registers a device (409 if it exists), `DELETE /devices/{deviceId}` removes it (404 if there is none) and
  drops its connection, twin and queued messages (registry.py).
No authentication: it listens on 127.0.0.1 only, for processes of the developer's own machine (including
`func start`, which runs the functions outside this process).
"""

from __future__ import annotations

import orjson
from aiohttp import web

from devstack.iothub.hub import LocalIoTHub

APP_PROPERTY_PREFIX = "iothub-app-"


def service_app(hub: LocalIoTHub) -> web.Application:
    def gone(device: str) -> web.Response | None:
        """A deleted identity: IoT Hub answers 404 DeviceNotFound to C2D sends and twin updates."""
        if hub.registry.exists(device):
            return None
        return web.json_response({"message": f"DeviceNotFound: {device}"}, status=404)

    async def patch_twin(request: web.Request) -> web.Response:
        if (missing := gone(request.match_info["device"])) is not None:
            return missing
        body = orjson.loads(await request.read())
        desired = body.get("properties", {}).get("desired") if isinstance(body, dict) else None
        if not isinstance(desired, dict):
            return web.json_response({"message": "expected {properties: {desired: {...}}}"}, status=400)
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
        message_id = await hub.send_c2d(request.match_info["device"], await request.read(), properties)
        return web.Response(status=204, headers={"iothub-messageid": message_id})

    async def put_device(request: web.Request) -> web.Response:
        device = request.match_info["device"]
        try:
            body = orjson.loads(await request.read())
            key = body["authentication"]["symmetricKey"]["primaryKey"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.json_response({"message": "expected a SAS device identity"}, status=400)
        if not isinstance(key, str) or not key:
            return web.json_response({"message": "primaryKey must be a base64 string"}, status=400)
        if not hub.registry.register(device, key):
            return web.json_response({"message": f"DeviceAlreadyExists: {device}"}, status=409)
        return web.json_response({"deviceId": device, "status": "enabled", "authentication": {"type": "sas"}})

    async def delete_device(request: web.Request) -> web.Response:
        device = request.match_info["device"]
        if not hub.registry.remove(device):
            return web.json_response({"message": f"DeviceNotFound: {device}"}, status=404)
        session = hub.endpoint.sessions.pop(device, None)
        if session is not None:  # IoT Hub closes the connection of a deleted device
            session.writer.close()
        hub.twins._twins.pop(device, None)
        hub._c2d.pop(device, None)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_put("/devices/{device}", put_device)
    app.router.add_delete("/devices/{device}", delete_device)
    app.router.add_patch("/twins/{device}", patch_twin)
    app.router.add_get("/twins/{device}", get_twin)
    app.router.add_post("/devices/{device}/messages/deviceBound", send_c2d)
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
