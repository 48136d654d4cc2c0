"""The local IoT Hub: device endpoint + routing into Event Hubs + twins + the cloud-to-device queue + direct
methods.

The service side (`send_c2d`, `patch_desired`, `invoke_method`) is what the backend's IoTHubGateway calls, in
process or through service_api.py. Counters here are for the live status line only; the demo report counts
what the cars received and what the functions stored, not what the hub believes it sent.

The endpoint owns the device connections; the hub gets every device event through `device_event` (events.py)
and reaches devices only through the endpoint's `DeviceLinks` methods, so traffic flows one way each.

Cloud-to-device messages follow IoT Hub's rules, so the backend meets here what it meets in Azure: at most
50 pending messages per device (the 51st is refused with DeviceQueueFullError, which the service API answers
403 DeviceMaximumQueueDepthExceeded), at most 64 KB per message (MessageTooLargeError, 413), and a message
past its absolute expiry time is dropped, never delivered. A message is pending until the device completes it
(docs: "the cloud-to-device message life cycle"; over MQTT, its PUBACK): once delivered it is invisible but still
counts against the 50, and a connection that ends before the PUBACK leaves it to be delivered again when the
device is back, its delivery count one higher; after C2D_MAX_DELIVERY_COUNT deliveries (IoT Hub's default
maxDeliveryCount) it is dead-lettered (IoT Hub's feedback: `deliveryCountExceeded`; here the counter
`c2d:dead_lettered`). Its expiry applies in every state.

Direct methods (methods.py) follow IoT Hub's rules too: online only while connected and subscribed to methods,
404103 / 504101 as DeviceNotOnlineError / DeviceTimeoutError.

Twin patches, desired (service side) and reported (a device's `$iothub/twin/PATCH/properties/reported/`), are
refused whole when a property name breaks IoT Hub's rule (twin.py `check_keys`: no '.', '$', '#', space or control
character, at most 1 KB) or when the properties they would leave are over 32 KB or 10 levels deep (twin.py
`check_section`): the service API answers 400 ArgumentInvalid, the device gets twin response status 400.

Module identities (registry.py; what an IoT Edge module in the car connects as): connections, twins and pending
methods are keyed by identity (`{device}/{module}` for a module), so twin requests, desired patches and direct
methods work on a module's own connection exactly as on a device's. A module's messages are routed like the
device's, stamped `connection-device-id` (the car) and `connection-module-id`, so the backend's ingestion sees the
car. Cloud-to-device messages have no module form: IoT Hub delivers none to modules (topics.py), and neither does
this hub; the cloud reaches a module through its twin and direct methods.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from devstack.eventhubs import EventHubsNamespace
from devstack.iothub.endpoint import DeviceEndpoint
from devstack.iothub.events import (
    C2DCompleted,
    C2DReleased,
    DeviceEvent,
    DeviceLinks,
    DeviceToCloud,
    Disconnected,
    MethodAnswered,
    Reply,
    Subscribed,
    TwinRequested,
)
from devstack.iothub.methods import DirectMethods
from devstack.iothub.registry import DeviceRegistry, identity_key, split_identity
from devstack.iothub.routing import Routes
from devstack.iothub.topics import (
    Properties,
    TwinRequest,
    c2d_topic,
    desired_patch_topic,
    twin_response_topic,
)
from devstack.iothub.twin import TwinError, TwinStore
from devstack.tls import TlsFiles
from shared.errors import DeviceQueueFullError, MessageTooLargeError
from shared.iothub.gateway import C2D_MAX_BYTES, C2D_QUEUE_LIMIT

log = logging.getLogger(__name__)

# IoT Hub's default maxDeliveryCount: how often a message may go to its device unacknowledged before it is
# dead-lettered instead of delivered again.
C2D_MAX_DELIVERY_COUNT: Final = 10


@dataclass(slots=True)
class PendingMessage:
    """A cloud-to-device message the hub holds for its device until the device completes it."""

    message_id: str
    topic: str  # what the device receives it on (message id, `to`, application properties)
    body: bytes
    expiry: dt.datetime | None  # absolute expiry time (UTC); None = never
    delivery_count: int = 0  # how often it went to the device
    in_flight: bool = False  # delivered on the current connection, its PUBACK not yet in (IoT Hub: Invisible)

    def expired(self, now: dt.datetime) -> bool:
        return self.expiry is not None and self.expiry <= now


def iothub_system_properties(
    device_id: str, enqueued: dt.datetime, properties: Properties, module_id: str | None = None
) -> dict[str, str]:
    """The `iothub-*` system properties IoT Hub stamps on a routed message, prefix removed as the host does; a
    module's message also carries `connection-module-id` (and the auth scope "module")."""
    scope = "device" if module_id is None else "module"
    stamped = {
        "connection-device-id": device_id,
        "connection-auth-method": f'{{"scope":"{scope}","type":"sas","issuer":"iothub","acceptingIpFilterRule":null}}',
        "connection-auth-generation-id": "local",
        "enqueuedtime": enqueued.isoformat().replace("+00:00", "Z"),
        "message-source": "Telemetry",
    }
    if module_id is not None:
        stamped["connection-module-id"] = module_id
    return {**properties.system, **stamped}


def twin_error(code: int, message: str) -> bytes:
    """The body of a refused twin operation, as IoT Hub answers it (`errorCode`, `trackingId`, `message`,
    `timestampUtc`)."""
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    body = {"errorCode": code, "trackingId": uuid.uuid4().hex, "message": message, "timestampUtc": now}
    return orjson.dumps(body)


class LocalIoTHub:
    def __init__(self, registry: DeviceRegistry, event_hubs: EventHubsNamespace, routes: Routes | None = None) -> None:
        self.registry = registry
        self.event_hubs = event_hubs
        self.routes = routes or Routes.load()
        self.twins = TwinStore()
        self.endpoint = DeviceEndpoint(registry, self)  # starts and stops the server; owns the connections
        self._devices: DeviceLinks = self.endpoint  # all the hub may do with them
        self._c2d: dict[str, deque[PendingMessage]] = {}
        self._flushing: dict[str, asyncio.Lock] = {}
        self.counters: Counter[str] = Counter()
        self.methods = DirectMethods(self._devices, self.counters)

    async def start(self, host: str, tls_files: TlsFiles, port: int = 8883) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_files.server_cert, tls_files.server_key)
        await self.endpoint.start(host, port, context)

    async def stop(self) -> None:
        await self.endpoint.stop()

    # --- device side: every event the endpoint hands in -------------------------------------------------------

    async def device_event(self, event: DeviceEvent) -> Reply | None:
        if isinstance(event, DeviceToCloud):
            await self._device_to_cloud(event.device_id, event.properties, event.body)
        elif isinstance(event, TwinRequested):
            status, body, version = await self._twin_request(event.device_id, event.request, event.body)
            return Reply(twin_response_topic(status, event.request.request_id, version), body)
        elif isinstance(event, MethodAnswered):
            self.methods.answered(event.device_id, event.response, event.body)
        elif isinstance(event, Subscribed):
            await self.methods.subscribed()
            await self._flush(event.device_id)
        elif isinstance(event, C2DCompleted):
            self._complete(event.device_id, event.message_id)
        elif isinstance(event, C2DReleased):
            await self._release(event.device_id, event.message_ids)
        elif isinstance(event, Disconnected):
            self.methods.device_gone(event.device_id, "disconnected during the method")
        return None

    async def _device_to_cloud(self, identity: str, properties: Properties, body: bytes) -> None:
        """Route a device's or a module's message; the partition key is the device id (a car's messages, from the
        device or any of its modules, stay in one partition, in order)."""
        now = dt.datetime.now(dt.UTC)
        device_id, module_id = split_identity(identity)
        system = iothub_system_properties(device_id, now, properties, module_id)
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
            try:
                version = twin.patch_reported(patch)
            except TwinError as exc:  # a bad name, too large or too deep: refused whole (errorCode 400004)
                self.counters["twin:refused"] += 1
                return 400, twin_error(400004, str(exc)), None
            self.counters["twin:reported"] += 1
            return 204, b"", version
        return 404, b'{"message":"unsupported twin operation"}', None

    def _drop_expired(self, device_id: str, now: dt.datetime) -> deque[PendingMessage]:
        queue = self._c2d.setdefault(device_id, deque())
        live = [m for m in queue if not m.expired(now)]
        if len(live) != len(queue):
            self.counters["c2d:expired"] += len(queue) - len(live)
            queue.clear()
            queue.extend(live)
        return queue

    async def _flush(self, device_id: str) -> None:
        """Deliver the device's messages not in flight, oldest first, while it is connected and listening; expired
        ones are dropped. Each stays queued (invisible) until its PUBACK. One flush per device at a time, so no
        message goes out twice on one connection."""
        lock = self._flushing.setdefault(device_id, asyncio.Lock())
        async with lock:
            queue = self._drop_expired(device_id, dt.datetime.now(dt.UTC))
            for message in list(queue):
                if self._c2d.get(device_id) is not queue:
                    return  # the device was deleted meanwhile
                if message.in_flight or not any(m is message for m in queue):
                    continue  # awaiting its PUBACK, or completed or expired meanwhile
                message.in_flight, delivered = True, False
                message.delivery_count += 1
                try:
                    delivered = await self._devices.deliver_c2d(
                        device_id, message.message_id, message.topic, message.body
                    )
                finally:
                    if not delivered and message.in_flight:  # it never reached the device: as it was
                        message.in_flight = False
                        message.delivery_count -= 1
                if not delivered:
                    return
                self.counters["c2d:delivered"] += 1

    def _complete(self, device_id: str, message_id: str) -> None:
        """The device's PUBACK: the message leaves the queue (one already expired or deleted is no matter)."""
        queue = self._c2d.get(device_id, deque())
        for message in queue:
            if message.message_id == message_id:
                queue.remove(message)
                self.counters["c2d:completed"] += 1
                return

    async def _release(self, device_id: str, message_ids: tuple[str, ...]) -> None:
        """A connection ended before these were acknowledged: visible again, and delivered again now if the device
        has another connection; one delivered C2D_MAX_DELIVERY_COUNT times is dead-lettered instead."""
        queue = self._c2d.get(device_id)
        if queue is None:
            return
        released = set(message_ids)
        for message in [m for m in queue if m.in_flight and m.message_id in released]:
            message.in_flight = False
            if message.delivery_count >= C2D_MAX_DELIVERY_COUNT:
                queue.remove(message)
                self.counters["c2d:dead_lettered"] += 1
                log.info("C2D %s to %s dead-lettered: deliveryCountExceeded", message.message_id, device_id)
        await self._flush(device_id)

    # --- service side (what IoTHubGateway does in Azure) ------------------------------------------------------

    async def send_c2d(
        self,
        device_id: str,
        body: bytes,
        properties: Mapping[str, str],
        expiry: dt.datetime | None = None,
        now: dt.datetime | None = None,
    ) -> str:
        """Queue a cloud-to-device message; delivered now if the device is connected and listening.

        Raises MessageTooLargeError over 64 KB and DeviceQueueFullError when 50 messages are pending (after
        dropping expired ones), as IoT Hub refuses them."""
        if len(body) > C2D_MAX_BYTES:
            self.counters["c2d:too_large"] += 1
            raise MessageTooLargeError(f"C2D to {device_id}: {len(body)} bytes, the limit is {C2D_MAX_BYTES}")
        queue = self._drop_expired(device_id, now or dt.datetime.now(dt.UTC))
        if len(queue) >= C2D_QUEUE_LIMIT:
            self.counters["c2d:refused"] += 1
            raise DeviceQueueFullError(f"C2D to {device_id}: {C2D_QUEUE_LIMIT} messages pending")
        message_id = str(uuid.uuid4())
        queue.append(PendingMessage(message_id, c2d_topic(device_id, message_id, properties), bytes(body), expiry))
        self.counters["c2d:queued"] += 1
        await self._flush(device_id)
        return message_id

    def pending(self, device_id: str, now: dt.datetime | None = None) -> list[PendingMessage]:
        """The device's unexpired messages it has not completed (queued or in flight: what counts against the 50),
        oldest first."""
        return list(self._drop_expired(device_id, now or dt.datetime.now(dt.UTC)))

    def remove_device(self, device_id: str, module_ids: Iterable[str] = ()) -> None:
        """A deleted identity: IoT Hub closes its connection and drops its twin and queued messages, and those of
        its modules (`module_ids`: the registry forgets them with the device, so the caller names them)."""
        self._devices.disconnect(device_id)
        self.methods.device_gone(device_id, "its identity was deleted")
        self.twins.remove(device_id)
        self._c2d.pop(device_id, None)
        for module_id in module_ids:
            self.remove_module(device_id, module_id)

    def remove_module(self, device_id: str, module_id: str) -> None:
        """A deleted module identity: its connection is closed, its twin and pending methods go."""
        identity = identity_key(device_id, module_id)
        self._devices.disconnect(identity)
        self.methods.device_gone(identity, "its identity was deleted")
        self.twins.remove(identity)

    def disconnect_modules(self, device_id: str) -> None:
        """Close the connections of the device's modules (the device was disabled: they are refused too)."""
        for module_id in self.registry.modules(device_id):
            self._devices.disconnect(identity_key(device_id, module_id))

    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> int:
        """Merge into the twin's desired properties and push the patch to the device if it is listening.
        TwinError (nothing changed, nothing pushed) for a property name IoT Hub refuses or desired properties it
        would leave over 32 KB or 10 levels deep."""
        twin = self.twins.get(device_id)
        pushed = twin.patch_desired(patch)
        self.counters["twin:desired"] += 1
        topic = desired_patch_topic(twin.desired_version)
        await self._devices.deliver(device_id, topic, orjson.dumps(pushed), qos=0)
        return twin.desired_version

    def twin_document(self, device_id: str) -> dict[str, Any]:
        return self.twins.get(device_id).document()

    def twin_json(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        """The twin as IoT Hub's service REST API returns it (`GET /twins/{id}[/modules/{mid}]`, the azure-iot-hub
        SDK's `Twin` model): ids, etag, version, and the properties with their `$version`s. Tags and `$metadata`
        are not kept locally."""
        identity = identity_key(device_id, module_id)
        twin = self.twins.get(identity)
        document: dict[str, Any] = {"deviceId": device_id}
        if module_id is not None:
            document["moduleId"] = module_id
        document.update(
            etag=twin.etag,
            version=twin.version,
            status="enabled" if self.registry.enabled(device_id) else "disabled",
            connectionState="Connected" if self.connected(identity) else "Disconnected",
            properties=twin.document(),
        )
        return document

    def connected(self, device_id: str) -> bool:
        return self._devices.connected(device_id)

    def methods_online(self, device_id: str) -> bool:
        """Connected and subscribed to direct methods: what IoT Hub calls online for a method."""
        return self.methods.online(device_id)

    async def invoke_method(
        self, device_id: str, method: str, payload: bytes, connect_timeout: float, response_timeout: float
    ) -> tuple[int, bytes]:
        """Direct method `method` with this JSON payload; the device's (status, body). See DirectMethods.invoke."""
        return await self.methods.invoke(device_id, method, payload, connect_timeout, response_timeout)


async def wait_connected(hub: LocalIoTHub, device_ids: list[str], seconds: float) -> bool:
    """True once every device has a session (for tests and the demo's start-up)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if all(hub.connected(d) for d in device_ids):
            return True
        await asyncio.sleep(0.05)
    return False
