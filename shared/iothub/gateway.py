"""What the backend asks of IoT Hub's service side. Azure: `azure-iot-hub`; locally: the devstack bridge.

Every gateway turns IoT Hub's answer into an error through `shared.faults.iothub_error` (one mapping): a
`PermanentError` (device gone, its C2D queue full, message too large, a direct method to a car that is
asleep or does not answer) is about this one message or call and the caller contains it; `IoTHubError` is
transient and the caller lets the batch be retried.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.errors import DeviceNotFoundError, FleetError, InvalidMethodCallError

log = logging.getLogger(__name__)

# IoT Hub keeps at most 50 pending cloud-to-device messages per device; the 51st send is refused (403004
# DeviceMaximumQueueDepthExceeded) until the device completes some (docs: "IoT Hub quotas and throttling").
C2D_QUEUE_LIMIT: Final = 50
# IoT Hub's size limit of one cloud-to-device message (413001 MessageTooLarge above it).
C2D_MAX_BYTES: Final = 64 * 1024
# How long a cloud-to-device message waits for its device. A reply to a car request is useless after an hour
# (the car gave up on it long before, and retries with the same requestId get the stored reply again), and a
# car offline for days must not find its 50-message queue full of stale replies when it comes back. The
# hub-wide default TTL is also 1 hour, but stating it per message keeps that true whatever the hub says.
DEFAULT_C2D_TTL_SECONDS: Final = 3600


def c2d_expiry(ttl_seconds: float, now: dt.datetime | None = None) -> dt.datetime:
    """The absolute UTC time after which IoT Hub drops a C2D message sent now with this time to live."""
    return (now or dt.datetime.now(dt.UTC)) + dt.timedelta(seconds=ttl_seconds)


# Direct methods (docs: "Understand and invoke direct methods from IoT Hub"): the request and response payloads are
# JSON documents of at most 128 KB; the device must answer within responseTimeoutInSeconds (5..300, default 30),
# and IoT Hub waits up to connectTimeoutInSeconds (0..300, default 0: it must be online now) for a device that is
# not connected. A method name is non-empty and at most 100 characters: this platform's rule (the docs consulted
# give no length for the name, only the characters allowed), checked here so no gateway sends a longer one.
METHOD_NAME_MAX_CHARS: Final = 100
METHOD_PAYLOAD_MAX_BYTES: Final = 128 * 1024
METHOD_RESPONSE_TIMEOUT_RANGE: Final = range(5, 301)
METHOD_CONNECT_TIMEOUT_RANGE: Final = range(0, 301)
DEFAULT_METHOD_RESPONSE_TIMEOUT: Final = 30


@dataclass(frozen=True, slots=True)
class MethodResult:
    """A device's answer to a direct method."""

    status: int  # the status code the device answered with
    payload: Any  # the JSON the device answered (None when it sent none or not JSON)


def method_request_body(
    method: str, payload: Any, connect_timeout: int = 0, response_timeout: int = DEFAULT_METHOD_RESPONSE_TIMEOUT
) -> bytes:
    """The JSON payload of a direct method call, after IoT Hub's checks; InvalidMethodCallError for a call IoT Hub
    would refuse (400 ArgumentInvalid, 413 for a payload over 128 KB)."""
    if not isinstance(method, str) or not method.strip():
        raise InvalidMethodCallError("a direct method needs a method name")
    if len(method) > METHOD_NAME_MAX_CHARS:
        raise InvalidMethodCallError(f"method name of {len(method)} characters, the limit is {METHOD_NAME_MAX_CHARS}")
    for name, value, allowed in (
        ("response_timeout", response_timeout, METHOD_RESPONSE_TIMEOUT_RANGE),
        ("connect_timeout", connect_timeout, METHOD_CONNECT_TIMEOUT_RANGE),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
            raise InvalidMethodCallError(f"{name} must be whole seconds in {allowed.start}..{allowed.stop - 1}")
    try:
        body = orjson.dumps(payload)
    except TypeError as exc:
        raise InvalidMethodCallError(f"the method payload is not JSON: {exc}") from exc
    if len(body) > METHOD_PAYLOAD_MAX_BYTES:
        raise InvalidMethodCallError(f"method payload of {len(body)} bytes, the limit is {METHOD_PAYLOAD_MAX_BYTES}")
    return body


def method_payload(body: bytes | str | None) -> Any:
    """What a device answered, as JSON; None when it answered nothing or something that is not JSON."""
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


ERROR_CODE_HEADER: Final = "iothub-errorcode"
_ERROR_CODE_IN_MESSAGE: Final = re.compile(r"ErrorCode:\s*(\w+)")


def error_code_of(headers: Mapping[str, str], body: bytes | str | None) -> str | None:
    """IoT Hub's error code of a REST answer: the `iothub-errorcode` header, else `ErrorCode:<code>` in the
    body's `Message` (`{"Message":"ErrorCode:DeviceNotFound;car-001","ExceptionMessage":"Tracking ID:..."}`),
    else the number in a `Message` that is itself JSON (direct methods:
    `{"Message":"{\"errorCode\":404103,\"message\":\"Timed out waiting for device to connect.\",...}"}`),
    else an `ErrorCode` field. None when the answer names none."""
    header = headers.get(ERROR_CODE_HEADER)
    if header:
        return header
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        message = str(parsed.get("Message") or "")
        match = _ERROR_CODE_IN_MESSAGE.search(message)
        if match:
            return match.group(1)
        nested = method_payload(message) if message.startswith("{") else None
        if isinstance(nested, dict):  # a direct method's error: {"Message": "{\"errorCode\":404103,...}"}
            parsed = nested
        code = parsed.get("ErrorCode") or parsed.get("errorCode")
        if isinstance(code, str | int) and not isinstance(code, bool):
            return str(code)
    return None


class DeviceExistsError(FleetError):
    """A device identity with that id is already registered (its key cannot be shown again)."""


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """A registered device and the symmetric key it signs its SAS tokens with."""

    device_id: str
    hostname: str
    primary_key: str

    @property
    def connection_string(self) -> str:
        """The format of the Azure portal's device connection strings (what azure-iot-device takes)."""
        return f"HostName={self.hostname};DeviceId={self.device_id};SharedAccessKey={self.primary_key}"


@dataclass(frozen=True, slots=True)
class ModuleTwin:
    """A module twin as the service side reads it: desired and reported properties (without IoT Hub's `$version`
    and `$metadata`, given apart), the twin's etag and version (what an If-Match update names)."""

    device_id: str
    module_id: str
    desired: dict[str, Any]
    reported: dict[str, Any]
    desired_version: int
    reported_version: int
    etag: str | None = None
    version: int | None = None

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> ModuleTwin:
        """From IoT Hub's twin JSON (`GET /twins/{id}/modules/{mid}`: deviceId, moduleId, etag, version,
        properties.desired / properties.reported with `$version` and `$metadata`)."""
        properties = document.get("properties") or {}
        desired, reported = properties.get("desired") or {}, properties.get("reported") or {}
        return cls(
            str(document.get("deviceId", "")),
            str(document.get("moduleId", "")),
            _without_metadata(desired),
            _without_metadata(reported),
            int(desired.get("$version", 0)),
            int(reported.get("$version", 0)),
            document.get("etag"),
            document.get("version"),
        )


def _without_metadata(properties: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in properties.items() if not key.startswith("$")}


def new_device_key() -> str:
    """A 256-bit symmetric key, base64, as IoT Hub generates them."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class IoTHubGateway(ABC):
    """Cloud-to-device messages, desired-property patches and the device registry of one IoT Hub."""

    @abstractmethod
    async def send_c2d(
        self,
        device_id: str,
        body: bytes,
        properties: Mapping[str, str],
        ttl_seconds: float = DEFAULT_C2D_TTL_SECONDS,
    ) -> None:
        """Queue a cloud-to-device message; `properties` become its application properties, and IoT Hub drops
        it undelivered `ttl_seconds` from now (its absolute expiry time).

        Raises DeviceNotFoundError (no such identity), DeviceQueueFullError (50 pending), MessageTooLargeError
        (over 64 KB): permanent for this message; IoTHubError: transient, retry later."""

    @abstractmethod
    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        """Merge `patch` into the device twin's desired properties (IoT Hub pushes it to a connected car).

        Raises DeviceNotFoundError when the device identity does not exist."""

    @abstractmethod
    async def create_device(self, device_id: str) -> DeviceIdentity:
        """Register a device with SAS authentication and new keys; raises DeviceExistsError if it exists."""

    @abstractmethod
    async def delete_device(self, device_id: str) -> bool:
        """Remove the device identity (its twin and queued messages go with it); False if there was none."""

    @abstractmethod
    async def invoke_method(
        self,
        device_id: str,
        method: str,
        payload: Any,
        connect_timeout: int = 0,
        response_timeout: int = DEFAULT_METHOD_RESPONSE_TIMEOUT,
    ) -> MethodResult:
        """Invoke a direct method on the device and return its answer (any status the device chose, 4xx/5xx
        included: that is the device's verdict, not an error of IoT Hub's).

        IoT Hub waits up to `connect_timeout` seconds (0..300) for the device to connect and subscribe to methods,
        then up to `response_timeout` seconds (5..300) for its answer (docs: "Understand and invoke direct methods
        from IoT Hub"). Raises InvalidMethodCallError before sending anything for an empty or over-long (100)
        method name, a payload that is not JSON or over 128 KB, a timeout out of range; DeviceNotOnlineError (IoT
        Hub 404103 DeviceNotOnline: not connected, or connected without a method handler, within the connect
        timeout) and DeviceTimeoutError (504101 GatewayTimeout: no answer within the response timeout), both
        permanent for this call (the caller falls back to a queued C2D message); DeviceNotFoundError (404001
        DeviceNotFound); IoTHubError: transient (throttled, 5xx, no answer from IoT Hub). Error codes: docs
        "Understand and resolve Azure IoT Hub errors"."""

    async def invoke_module_method(
        self,
        device_id: str,
        module_id: str,
        method: str,
        payload: Any,
        connect_timeout: int = 0,
        response_timeout: int = DEFAULT_METHOD_RESPONSE_TIMEOUT,
    ) -> MethodResult:
        """invoke_method on a module of the device (IoT Hub `POST /twins/{id}/modules/{mid}/methods`, what
        `IoTHubRegistryManager.invoke_device_module_method` sends): how the backend reaches the car's Edge module,
        which gets no cloud-to-device messages. Same rules and errors as invoke_method; a module identity that does
        not exist (404 ModuleNotFound) is DeviceNotFoundError like a missing device. Every gateway overrides it."""
        raise NotImplementedError(f"{type(self).__name__} has no module methods")

    async def patch_module_desired(
        self, device_id: str, module_id: str, patch: Mapping[str, Any], etag: str | None = None
    ) -> None:
        """Merge `patch` into the module twin's desired properties (IoT Hub pushes it to the connected module: how the
        backend sets the car's Edge module's collection policy). With `etag` (a ModuleTwin's, as read), only if the
        twin has not changed since (IoT Hub's PATCH with If-Match: a read-modify-write that must not lose a
        concurrent one); without, unconditional (If-Match `*`).

        Raises IoTHubPreconditionFailedError when the twin's etag is no longer `etag` (412 PreconditionFailed);
        DeviceNotFoundError when the device or the module identity does not exist (IoT Hub 404 DeviceNotFound /
        ModuleNotFound); IoTHubError: transient. Every gateway overrides it."""
        raise NotImplementedError(f"{type(self).__name__} has no module twins")

    async def get_module_twin(self, device_id: str, module_id: str) -> ModuleTwin:
        """The module twin (its desired and reported properties: e.g. what policy the module says it applies) and its
        etag, for a conditional patch_module_desired.

        Raises DeviceNotFoundError when the device or the module identity does not exist. Every gateway overrides
        it."""
        raise NotImplementedError(f"{type(self).__name__} has no module twins")

    async def set_device_enabled(self, device_id: str, enabled: bool) -> bool:
        """Enable or disable the device identity (IoT Hub's device `status`): a disabled device cannot connect, and
        its open connection is closed. Its twin and identity stay (revocation is undone by enabling it again).
        False when there is no such identity; idempotent. Every gateway overrides it; a multi-hub one applies it
        on every hub (an identity left enabled on an old hub could still connect)."""
        raise NotImplementedError(f"{type(self).__name__} cannot enable or disable devices")

    async def send_c2d_if_present(
        self,
        device_id: str,
        body: bytes,
        properties: Mapping[str, str],
        ttl_seconds: float = DEFAULT_C2D_TTL_SECONDS,
    ) -> bool:
        """send_c2d, except that a device that no longer exists is logged and skipped (False), not raised."""
        try:
            await self.send_c2d(device_id, body, properties, ttl_seconds)
        except DeviceNotFoundError:
            log.warning("device %s no longer exists: cloud-to-device message dropped", device_id)
            return False
        return True

    async def patch_desired_if_present(self, device_id: str, patch: Mapping[str, Any]) -> bool:
        """patch_desired, except that a device that no longer exists is logged and skipped (False), not raised."""
        try:
            await self.patch_desired(device_id, patch)
        except DeviceNotFoundError:
            log.warning("device %s no longer exists: twin patch dropped", device_id)
            return False
        return True

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
