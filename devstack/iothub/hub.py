"""The local IoT Hub: device endpoint + routing into Event Hubs + twins + the cloud-to-device queue.

The service side (`send_c2d`, `patch_desired`) is what the backend's IoTHubGateway calls, in process or
through service_api.py. Counters here are for the live status line only; the demo report counts what the
cars received and what the functions stored, not what the hub believes it sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any, Final

import orjson

from devstack.eventhubs import EventHubsNamespace
from devstack.iothub.endpoint import DeviceEndpoint, Session
from devstack.iothub.registry import DeviceRegistry
from devstack.iothub.routing import Routes
from devstack.iothub.topics import (
    Properties,
    TwinRequest,
    c2d_topic,
    desired_patch_topic,
)
from devstack.iothub.twin import TwinStore
from devstack.tls import TlsFiles

log = logging.getLogger(__name__)

C2D_QUEUE_LIMIT: Final = 50  # IoT Hub keeps at most 50 messages per device queue


def iothub_system_properties(device_id: str, enqueued: dt.datetime, properties: Properties) -> dict[str, str]:
    """The `iothub-*` system properties IoT Hub stamps on a routed message, prefix removed as the host does."""
    stamped = {
        "connection-device-id": device_id,
        "connection-auth-method": '{"scope":"device","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}',
        "connection-auth-generation-id": "local",
        "enqueuedtime": enqueued.isoformat().replace("+00:00", "Z"),
        "message-source": "Telemetry",
    }
    return {**properties.system, **stamped}


class LocalIoTHub:
    def __init__(self, registry: DeviceRegistry, event_hubs: EventHubsNamespace, routes: Routes | None = None) -> None:
        self.registry = registry
        self.event_hubs = event_hubs
        self.routes = routes or Routes.load()
        self.twins = TwinStore()
        self.endpoint = DeviceEndpoint(registry, self._device_to_cloud, self._twin_request)
        self.endpoint.on_subscribed = self._flush
        self._c2d: dict[str, deque[tuple[str, bytes]]] = {}
        self.counters: Counter[str] = Counter()

    async def start(self, host: str, tls_files: TlsFiles, port: int = 8883) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_files.server_cert, tls_files.server_key)
        await self.endpoint.start(host, port, context)

    async def stop(self) -> None:
        await self.endpoint.stop()

    # --- device side -----------------------------------------------------------------------------------------

    async def _device_to_cloud(self, device_id: str, properties: Properties, body: bytes) -> None:
        now = dt.datetime.now(dt.UTC)
        system = iothub_system_properties(device_id, now, properties)
        for name in self.routes.event_hubs(properties.application):
            self.event_hubs.hub(name).append(device_id, body, properties.application, system, now)
            self.counters[f"d2c:{name}"] += 1

    async def _twin_request(self, device_id: str, request: TwinRequest, body: bytes) -> tuple[int, bytes, int | None]:
        twin = self.twins.get(device_id)
        if request.method == "GET" and request.resource == "/":
            return 200, orjson.dumps(twin.document()), None
        if request.method == "PATCH" and request.resource == "/properties/reported/":
            try:
                patch = orjson.loads(body)
            except orjson.JSONDecodeError:
                return 400, b'{"message":"invalid JSON"}', None
            if not isinstance(patch, dict):
                return 400, b'{"message":"a patch is a JSON object"}', None
            version = twin.patch_reported(patch)
            self.counters["twin:reported"] += 1
            return 204, b"", version
        return 404, b'{"message":"unsupported twin operation"}', None

    async def _flush(self, session: Session) -> None:
        """Deliver queued cloud-to-device messages once the device listens for them."""
        queue = self._c2d.get(session.device_id)
        if not queue or not session.subscribed(c2d_topic(session.device_id, "probe", {})):
            return
        while queue:
            topic, body = queue.popleft()
            await session.send(topic, body, qos=1)
            self.counters["c2d:delivered"] += 1

    # --- service side (what IoTHubGateway does in Azure) ------------------------------------------------------

    async def send_c2d(self, device_id: str, body: bytes, properties: Mapping[str, str]) -> str:
        """Queue a cloud-to-device message; delivered now if the device is connected and listening."""
        message_id = str(uuid.uuid4())
        queue = self._c2d.setdefault(device_id, deque(maxlen=C2D_QUEUE_LIMIT))
        queue.append((c2d_topic(device_id, message_id, properties), body))
        self.counters["c2d:queued"] += 1
        session = self.endpoint.sessions.get(device_id)
        if session is not None:
            await self._flush(session)
        return message_id

    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> int:
        """Merge into the twin's desired properties and push the patch to the device if it is listening."""
        twin = self.twins.get(device_id)
        pushed = twin.patch_desired(patch)
        self.counters["twin:desired"] += 1
        session = self.endpoint.sessions.get(device_id)
        if session is not None and session.subscribed(desired_patch_topic(0)):
            await session.send(desired_patch_topic(twin.desired_version), orjson.dumps(pushed))
        return twin.desired_version

    def twin_document(self, device_id: str) -> dict[str, Any]:
        return self.twins.get(device_id).document()


async def wait_connected(hub: LocalIoTHub, device_ids: list[str], seconds: float) -> bool:
    """True once every device has a session (for tests and the demo's start-up)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if all(d in hub.endpoint.sessions for d in device_ids):
            return True
        await asyncio.sleep(0.05)
    return False
