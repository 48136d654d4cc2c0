"""In-memory IoTHubGateway for unit tests: records every message and merges patches like IoT Hub does.

It refuses what IoT Hub refuses, through the same mapping the real gateways use (shared/faults.py): C2D to a
deleted device (404 DeviceNotFound), a 51st pending message for one device (403
DeviceMaximumQueueDepthExceeded; `receive` plays the car completing its messages), a body over 64 KB (413),
and whatever answer a test puts in `answers` for a device (e.g. 503 for an outage).

Direct methods are scripted per device: `on_method(device, handler)` plays a car with a method handler (it gets
the method name and the payload as the car would, and returns a MethodResult, or awaits one); a device without
a handler, or in `offline`, is not online (404103, like a car that is connected but never subscribed to
methods); `connect_delay[device] = s` plays a car that connects s seconds after the call (online if the
call's connect timeout is at least s); `response_delay[device] = s` a car that needs s seconds to answer
(504101 GatewayTimeout when the response timeout is shorter). No time passes: the delays are compared, not slept.
A module is scripted the same way with `on_module_method(device, module, handler)` (its identity then exists;
a method to any other module is 404 ModuleNotFound), its keys in `offline` and the delays being "device/module".
Module twins carry an etag that changes with every patch, and a patch naming a stale one is refused 412
PreconditionFailed, as IoT Hub refuses it.
"""

from __future__ import annotations

import base64
import datetime as dt
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.faults import iothub_error
from shared.iothub.gateway import (
    C2D_MAX_BYTES,
    C2D_QUEUE_LIMIT,
    DEFAULT_C2D_TTL_SECONDS,
    DEFAULT_METHOD_RESPONSE_TIMEOUT,
    DeviceExistsError,
    DeviceIdentity,
    IoTHubGateway,
    MethodResult,
    ModuleTwin,
    c2d_expiry,
    method_request_body,
    new_device_key,
)
from shared.iothub.twin_values import patch_problem

# What a scripted car does with a direct method: (method name, payload) → its answer.
MethodHandler = Callable[[str, Any], MethodResult | Awaitable[MethodResult]]


@dataclass(frozen=True, slots=True)
class SentMessage:
    device_id: str
    body: bytes
    properties: dict[str, str]
    expiry: dt.datetime | None = None

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class InvokedMethod:
    """A direct method that reached its device (it was online within the connect timeout)."""

    device_id: str
    method: str
    payload: Any
    connect_timeout: int
    response_timeout: int
    module_id: str | None = None  # a module method (invoke_module_method)


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Twin semantics: objects merge key by key, null deletes a key, anything else (arrays too) replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = orjson.loads(orjson.dumps(value))


@dataclass
class MemoryIoTHubGateway(IoTHubGateway):
    sent: list[SentMessage] = field(default_factory=list)
    desired: dict[str, dict[str, Any]] = field(default_factory=dict)
    patches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    devices: dict[str, str] = field(default_factory=dict)  # device id → primary key
    disabled: set[str] = field(default_factory=set)  # identities set_device_enabled(False) disabled
    hostname: str = "memory.azure-devices.net"
    # Ids removed with delete_device: like IoT Hub, C2D and twin patches to them fail (others are accepted
    # without registration, so tests need not register every car).
    deleted: set[str] = field(default_factory=set)
    # device id → (HTTP status, IoT Hub error code) every call for that device is answered with, until removed.
    answers: dict[str, tuple[int | None, str | None]] = field(default_factory=dict)
    queue_limit: int = C2D_QUEUE_LIMIT
    received: Counter[str] = field(default_factory=Counter)  # C2D messages each device has completed
    method_handlers: dict[str, MethodHandler] = field(default_factory=dict)  # device id → its method handler
    offline: set[str] = field(default_factory=set)  # devices not connected (their handlers stay for later)
    connect_delay: dict[str, float] = field(default_factory=dict)  # device id → seconds until it connects
    response_delay: dict[str, float] = field(default_factory=dict)  # device id → seconds it takes to answer
    invoked: list[InvokedMethod] = field(default_factory=list)  # every method a device received, in order
    # Module identities (device id, module id) that exist: a module method to any other is 404 ModuleNotFound.
    # Their handlers, `offline`, `connect_delay` and `response_delay` are keyed "device/module".
    modules: set[tuple[str, str]] = field(default_factory=set)
    # Module twins by (device id, module id): what the backend set, and what a test plays the module reporting.
    # Like device twins, a module need not be registered; a deleted device's modules are refused.
    module_desired: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    module_reported: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    module_patches: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def on_method(self, device_id: str, handler: MethodHandler) -> None:
        """The car connects and subscribes to direct methods with this handler."""
        self.method_handlers[device_id] = handler
        self.offline.discard(device_id)

    def on_module_method(self, device_id: str, module_id: str, handler: MethodHandler) -> None:
        """The car's module (its identity now exists) connects and subscribes to direct methods."""
        self.modules.add((device_id, module_id))
        self.on_method(f"{device_id}/{module_id}", handler)

    def pending(self, device_id: str) -> int:
        """Messages queued for the device and not yet completed by it (expiry is not simulated here)."""
        return sum(1 for m in self.sent if m.device_id == device_id) - self.received[device_id]

    def receive(self, device_id: str) -> list[SentMessage]:
        """The car reads and completes everything pending for it, which frees its queue."""
        mine = [m for m in self.sent if m.device_id == device_id]
        fresh = mine[self.received[device_id] :]
        self.received[device_id] = len(mine)
        return fresh

    def _refusal(self, device_id: str, operation: str) -> None:
        if device_id in self.answers:
            status, code = self.answers[device_id]
            raise iothub_error(status, code, operation)
        if device_id in self.deleted:
            raise iothub_error(404, "DeviceNotFound", operation)

    async def send_c2d(
        self,
        device_id: str,
        body: bytes,
        properties: Mapping[str, str],
        ttl_seconds: float = DEFAULT_C2D_TTL_SECONDS,
    ) -> None:
        operation = f"C2D to {device_id}"
        self._refusal(device_id, operation)
        if len(body) > C2D_MAX_BYTES:
            raise iothub_error(413, "MessageTooLarge", operation)
        if self.pending(device_id) >= self.queue_limit:
            raise iothub_error(403, "DeviceMaximumQueueDepthExceeded", operation)
        self.sent.append(SentMessage(device_id, bytes(body), dict(properties), c2d_expiry(ttl_seconds)))

    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        self._refusal(device_id, f"twin patch of {device_id}")
        _refused_as_iot_hub_does(patch, f"twin patch of {device_id}")
        self.patches.append((device_id, orjson.loads(orjson.dumps(patch))))
        merge_patch(self.desired.setdefault(device_id, {}), patch)

    def _module_version(self, device_id: str, module_id: str) -> int:
        """The module twin's version: 1, and one more with each patch of the backend's."""
        return 1 + sum(1 for d, m, _ in self.module_patches if (d, m) == (device_id, module_id))

    async def patch_module_desired(
        self, device_id: str, module_id: str, patch: Mapping[str, Any], etag: str | None = None
    ) -> None:
        operation = f"twin patch of {device_id}/{module_id}"
        self._refusal(device_id, operation)
        _refused_as_iot_hub_does(patch, operation)
        if etag not in (None, "*") and etag.strip('"') != twin_etag(self._module_version(device_id, module_id)):
            raise iothub_error(412, "PreconditionFailed", operation)
        self.module_patches.append((device_id, module_id, orjson.loads(orjson.dumps(patch))))
        merge_patch(self.module_desired.setdefault((device_id, module_id), {}), patch)

    async def get_module_twin(self, device_id: str, module_id: str) -> ModuleTwin:
        """The desired version and the twin's (its etag) count the backend's patches; the reported one is 1 (tests
        set `module_reported`)."""
        self._refusal(device_id, f"twin of {device_id}/{module_id}")
        key, version = (device_id, module_id), self._module_version(device_id, module_id)
        desired, reported = self.module_desired.get(key, {}), self.module_reported.get(key, {})
        copied = orjson.loads(orjson.dumps(desired))
        return ModuleTwin(device_id, module_id, copied, dict(reported), version, 1, twin_etag(version), version)

    async def invoke_method(
        self,
        device_id: str,
        method: str,
        payload: Any,
        connect_timeout: int = 0,
        response_timeout: int = DEFAULT_METHOD_RESPONSE_TIMEOUT,
    ) -> MethodResult:
        return await self._invoke(device_id, None, method, payload, connect_timeout, response_timeout)

    async def invoke_module_method(
        self,
        device_id: str,
        module_id: str,
        method: str,
        payload: Any,
        connect_timeout: int = 0,
        response_timeout: int = DEFAULT_METHOD_RESPONSE_TIMEOUT,
    ) -> MethodResult:
        return await self._invoke(device_id, module_id, method, payload, connect_timeout, response_timeout)

    async def _invoke(
        self,
        device_id: str,
        module_id: str | None,
        method: str,
        payload: Any,
        connect_timeout: int,
        response_timeout: int,
    ) -> MethodResult:
        target = device_id if module_id is None else f"{device_id}/{module_id}"
        operation = f"method {method} on {target}"
        body = method_request_body(method, payload, connect_timeout, response_timeout)
        self._refusal(device_id, operation)
        if module_id is not None and (device_id, module_id) not in self.modules:
            raise iothub_error(404, "ModuleNotFound", operation)
        handler = self.method_handlers.get(target)
        if handler is None or target in self.offline or self.connect_delay.get(target, 0) > connect_timeout:
            raise iothub_error(404, "DeviceNotOnline", operation)
        received = orjson.loads(body)  # what the car gets: the JSON, not the caller's object
        self.invoked.append(InvokedMethod(device_id, method, received, connect_timeout, response_timeout, module_id))
        if self.response_delay.get(target, 0) > response_timeout:
            raise iothub_error(504, "GatewayTimeout", operation)
        answer = handler(method, received)
        result = await answer if inspect.isawaitable(answer) else answer
        if not isinstance(result, MethodResult):
            raise TypeError(f"the method handler of {target} returned {result!r}, not a MethodResult")
        return MethodResult(result.status, orjson.loads(orjson.dumps(result.payload)))

    async def create_device(self, device_id: str) -> DeviceIdentity:
        self.deleted.discard(device_id)
        if device_id in self.devices:
            raise DeviceExistsError(f"device {device_id} exists")
        key = self.devices[device_id] = new_device_key()
        return DeviceIdentity(device_id, self.hostname, key)

    async def delete_device(self, device_id: str) -> bool:
        self.deleted.add(device_id)
        self.desired.pop(device_id, None)
        for key in [k for k in self.module_desired if k[0] == device_id]:
            del self.module_desired[key]
        self.modules = {m for m in self.modules if m[0] != device_id}
        return self.devices.pop(device_id, None) is not None

    async def set_device_enabled(self, device_id: str, enabled: bool) -> bool:
        """Registered devices only (tests register with create_device); a disabled one is also taken offline."""
        if device_id in self.answers:
            self._refusal(device_id, f"update device {device_id}")
        if device_id not in self.devices:
            return False
        if enabled:
            self.disabled.discard(device_id)
        else:
            self.disabled.add(device_id)
            self.offline.add(device_id)
        return True


def twin_etag(version: int) -> str:
    """A twin's etag in IoT Hub's shape (base64 of 8 bytes, e.g. "AAAAAAAAAAI="), from its version."""
    return base64.b64encode(version.to_bytes(8, "big")).decode("ascii")


def _refused_as_iot_hub_does(patch: Mapping[str, Any], operation: str) -> None:
    """What IoT Hub answers 400 ArgumentInvalid to (shared/iothub/twin_values.py), raised as the Azure gateway
    raises it, so a unit test meets it where Azure would."""
    problem = patch_problem(patch)
    if problem is not None:
        raise iothub_error(400, "ArgumentInvalid", f"{operation}: {problem}")
