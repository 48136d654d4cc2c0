"""IoTHubGateway on `azure-iot-hub` (the IoT Hub service SDK), authenticated with the app's managed identity.

The SDK is synchronous (C2D over AMQP through uamqp, twins over HTTPS) and importing it loads uamqp, so it is
imported on first use and every call runs in a worker thread, never on the event loop. The app's identity
needs the "IoT Hub Data Contributor" role (or Twin Contributor + Service Connect) on the hub.

Errors go through `shared.faults.iothub_error` like every gateway's: REST calls give the status of msrest's
`HttpOperationError` and the error code from the `iothub-errorcode` header or the body's `ErrorCode:<code>`;
a C2D send gives the AMQP error condition (translated to the HTTP status IoT Hub documents for the same
error) and the error description, which carries IoT Hub's error code text.

Direct methods go through the SDK's REST client (`POST /twins/{id}/methods`, what
`IoTHubRegistryManager.invoke_device_method` sends; `POST /twins/{id}/modules/{mid}/methods`, what
`invoke_device_module_method` sends, for a module) with an HTTP read timeout longer than IoT Hub's own wait
(connect + response timeout), so IoT Hub's 404103 / 504101 answer arrives instead of a client-side timeout:
msrest's default of 100 s is shorter than the 600 s a call may legitimately take. The POST is sent once: with
urllib3 2 (what `requests` installs) msrest's retry policy does not cover POST (its `method_whitelist` is
ignored), so a device is never asked twice to unlock (tests/unit/test_iothub_methods.py checks it).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any, Final
from uuid import uuid4

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
    method_request_body,
    new_device_key,
)
from shared.settings import setting

# AMQP 1.0 error conditions (spec, section 2.8.15) → the HTTP status IoT Hub's REST API gives the same error,
# so one mapping (shared/faults.py) reads both. A protocol translation, not a classification: the error code
# in the description (e.g. DeviceMaximumQueueDepthExceeded) decides before the status does.
AMQP_STATUS: Final = {
    "amqp:not-found": 404,
    "amqp:unauthorized-access": 401,
    "amqp:resource-limit-exceeded": 403,
    "amqp:link:message-size-exceeded": 413,
    "amqp:decode-error": 400,
    "amqp:invalid-field": 400,
    "amqp:internal-error": 500,
    "com.microsoft:server-busy": 503,
    "com.microsoft:timeout": 408,
}
# The system properties `IoTHubAmqpClientBase.send_message_to_device` (azure-iot-hub 2.7) takes from the
# properties dict; every other key is an application property. `expiryTimeUtc` becomes the AMQP
# absolute-expiry-time, an integer timestamp in milliseconds since the Unix epoch (uamqp requires an int).
SYSTEM_PROPERTIES: Final = {
    "contentType": "content_type",
    "contentEncoding": "content_encoding",
    "correlationId": "correlation_id",
    "expiryTimeUtc": "absolute_expiry_time",
    "messageId": "message_id",
}
# Seconds the HTTP client waits for IoT Hub beyond the method's own connect + response timeouts.
METHOD_HTTP_GRACE_SECONDS: Final = 30


class AzureIoTHubGateway(IoTHubGateway):
    def __init__(self, hostname: str, client_id: str | None = None) -> None:
        self._hostname = hostname
        self._client_id = client_id
        self._manager: Any = None
        self._lock = threading.Lock()  # one registry manager, created once even by concurrent first calls
        self._amqp_lock = threading.Lock()  # uamqp's SendClient is not thread-safe: one send at a time

    @classmethod
    def from_env(cls) -> AzureIoTHubGateway:
        hostname = setting("IOTHUB_HOSTNAME")
        if not hostname:
            raise ConfigurationError("IOTHUB_HOSTNAME is not set")
        return cls(hostname, setting("AZURE_CLIENT_ID"))

    def _registry(self) -> Any:
        with self._lock:
            if self._manager is None:
                from azure.identity import DefaultAzureCredential  # the SDK wants a sync credential
                from azure.iot.hub import IoTHubRegistryManager  # type: ignore[import-untyped]

                credential = DefaultAzureCredential(managed_identity_client_id=self._client_id)
                self._manager = IoTHubRegistryManager.from_token_credential(self._hostname, credential)
            return self._manager

    def _send(self, device_id: str, body: bytes, properties: Mapping[str, str], ttl_seconds: float) -> None:
        operation = f"C2D to {device_id}"
        expiry_ms = int(c2d_expiry(ttl_seconds).timestamp() * 1000)
        try:
            with self._amqp_lock:
                failure = send_message_to_device(
                    self._registry().amqp_svc_client.amqp_client,
                    device_id,
                    body,
                    {**properties, "expiryTimeUtc": expiry_ms},
                )
        except Exception as exc:  # connection, auth, link: no answer about this message
            raise iothub_error(amqp_status(exc), amqp_description(exc), operation) from exc
        if failure is not None:
            raise iothub_error(amqp_status(failure), amqp_description(failure) or type(failure).__name__, operation)

    def _patch(self, device_id: str, patch: Mapping[str, Any]) -> None:
        from azure.iot.hub.models import Twin, TwinProperties  # type: ignore[import-untyped]

        twin = Twin(properties=TwinProperties(desired=dict(patch)))
        try:
            self._registry().update_twin(device_id, twin, "*")
        except Exception as exc:
            raise iothub_error(rest_status(exc), rest_error_code(exc), f"twin patch of {device_id}") from exc

    def _patch_module(self, device_id: str, module_id: str, patch: Mapping[str, Any], etag: str | None) -> None:
        from azure.iot.hub.models import Twin, TwinProperties

        twin = Twin(properties=TwinProperties(desired=dict(patch)))
        try:  # the SDK sends the etag quoted in If-Match; a stale one is 412 PreconditionFailed
            self._registry().update_module_twin(device_id, module_id, twin, etag or "*")
        except Exception as exc:
            operation = f"twin patch of {device_id}/{module_id}"
            raise iothub_error(rest_status(exc), rest_error_code(exc), operation) from exc

    def _get_module_twin(self, device_id: str, module_id: str) -> ModuleTwin:
        try:
            twin = self._registry().get_module_twin(device_id, module_id)
        except Exception as exc:
            operation = f"twin of {device_id}/{module_id}"
            raise iothub_error(rest_status(exc), rest_error_code(exc), operation) from exc
        # msrest's model → IoT Hub's JSON again (the model's own serialize gives the REST keys)
        return ModuleTwin.from_json(twin.serialize())

    def _create(self, device_id: str) -> DeviceIdentity:
        primary, secondary = new_device_key(), new_device_key()
        try:
            self._registry().create_device_with_sas(device_id, primary, secondary, "enabled")
        except Exception as exc:
            if rest_status(exc) in (409, 412):  # DeviceAlreadyExists
                raise DeviceExistsError(f"device {device_id} exists") from exc
            raise iothub_error(rest_status(exc), rest_error_code(exc), f"create device {device_id}") from exc
        return DeviceIdentity(device_id, self._hostname, primary)

    def _delete(self, device_id: str) -> bool:
        try:
            self._registry().delete_device(device_id)  # etag "*": whatever its version
        except Exception as exc:
            if rest_status(exc) == 404:
                return False
            raise iothub_error(rest_status(exc), rest_error_code(exc), f"delete device {device_id}") from exc
        return True

    def _set_enabled(self, device_id: str, enabled: bool) -> bool:
        """Read the identity and write it back with the new status and its etag (IoT Hub's PUT /devices/{id} with
        If-Match, what `update_device_with_sas` / `update_device_with_certificate_authority` send, without having
        to restate the keys or the authentication type); a concurrent change (412) reads again."""
        operation = f"{'enable' if enabled else 'disable'} device {device_id}"
        wanted = "enabled" if enabled else "disabled"
        for _ in range(3):
            try:
                device = self._registry().get_device(device_id)
            except Exception as exc:
                if rest_status(exc) == 404:
                    return False
                raise iothub_error(rest_status(exc), rest_error_code(exc), operation) from exc
            if getattr(device, "status", None) == wanted:
                return True
            device.status = wanted
            device.status_reason = None if enabled else "revoked"
            etag = getattr(device, "etag", None) or "*"
            quoted = etag if etag == "*" or etag.startswith('"') else f'"{etag}"'
            try:
                self._registry().protocol.devices.create_or_update_identity(device_id, device, quoted)
            except Exception as exc:
                if rest_status(exc) == 412:
                    continue
                if rest_status(exc) == 404:
                    return False
                raise iothub_error(rest_status(exc), rest_error_code(exc), operation) from exc
            return True
        raise iothub_error(412, "PreconditionFailed", operation)

    def _invoke(
        self,
        device_id: str,
        module_id: str | None,
        method: str,
        payload: Any,
        connect_timeout: int,
        response_timeout: int,
    ) -> Any:
        from azure.iot.hub.models import CloudToDeviceMethod

        request = CloudToDeviceMethod(
            method_name=method,
            payload="" if payload is None else payload,  # None goes as "", as invoke_device_method sends it
            response_timeout_in_seconds=response_timeout,
            connect_timeout_in_seconds=connect_timeout,
        )
        http_timeout = connect_timeout + response_timeout + METHOD_HTTP_GRACE_SECONDS
        protocol = self._registry().protocol
        target = device_id if module_id is None else f"{device_id}/{module_id}"
        try:
            # what invoke_device_method(device_id, request) / invoke_device_module_method(device_id, module_id,
            # request) do, plus the HTTP read timeout
            if module_id is None:
                return protocol.devices.invoke_method(device_id, request, timeout=http_timeout)
            return protocol.modules.invoke_method(device_id, module_id, request, timeout=http_timeout)
        except Exception as exc:
            raise iothub_error(rest_status(exc), rest_error_code(exc), f"method {method} on {target}") from exc

    async def _method(
        self,
        device_id: str,
        module_id: str | None,
        method: str,
        payload: Any,
        connect_timeout: int,
        response_timeout: int,
    ) -> MethodResult:
        method_request_body(method, payload, connect_timeout, response_timeout)  # refuse before sending
        result = await asyncio.to_thread(
            self._invoke, device_id, module_id, method, payload, connect_timeout, response_timeout
        )
        status = getattr(result, "status", None)
        if isinstance(status, bool) or not isinstance(status, int):
            raise iothub_error(None, f"no device status in the answer: {result!r}"[:200], f"method {method}")
        return MethodResult(status, getattr(result, "payload", None))

    async def invoke_method(
        self,
        device_id: str,
        method: str,
        payload: Any,
        connect_timeout: int = 0,
        response_timeout: int = DEFAULT_METHOD_RESPONSE_TIMEOUT,
    ) -> MethodResult:
        return await self._method(device_id, None, method, payload, connect_timeout, response_timeout)

    async def invoke_module_method(
        self,
        device_id: str,
        module_id: str,
        method: str,
        payload: Any,
        connect_timeout: int = 0,
        response_timeout: int = DEFAULT_METHOD_RESPONSE_TIMEOUT,
    ) -> MethodResult:
        return await self._method(device_id, module_id, method, payload, connect_timeout, response_timeout)

    async def create_device(self, device_id: str) -> DeviceIdentity:
        return await asyncio.to_thread(self._create, device_id)

    async def delete_device(self, device_id: str) -> bool:
        return await asyncio.to_thread(self._delete, device_id)

    async def set_device_enabled(self, device_id: str, enabled: bool) -> bool:
        return await asyncio.to_thread(self._set_enabled, device_id, enabled)

    async def send_c2d(
        self,
        device_id: str,
        body: bytes,
        properties: Mapping[str, str],
        ttl_seconds: float = DEFAULT_C2D_TTL_SECONDS,
    ) -> None:
        await asyncio.to_thread(self._send, device_id, body, properties, ttl_seconds)

    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._patch, device_id, patch)

    async def patch_module_desired(
        self, device_id: str, module_id: str, patch: Mapping[str, Any], etag: str | None = None
    ) -> None:
        await asyncio.to_thread(self._patch_module, device_id, module_id, patch, etag)

    async def get_module_twin(self, device_id: str, module_id: str) -> ModuleTwin:
        return await asyncio.to_thread(self._get_module_twin, device_id, module_id)

    async def close(self) -> None:
        manager, self._manager = self._manager, None
        if manager is not None and hasattr(manager, "amqp_svc_client"):
            await asyncio.to_thread(manager.amqp_svc_client.disconnect_sync)


def send_message_to_device(
    amqp_client: Any, device_id: str, body: bytes, properties: Mapping[str, Any]
) -> BaseException | None:
    """What `IoTHubRegistryManager.send_c2d_message` does (azure-iot-hub 2.7,
    `IoTHubAmqpClientBase.send_message_to_device`: same message id, `to`, system and application properties,
    on the SDK's own authenticated SendClient), except that a refused message's error is returned instead of
    the SDK's bare `Exception("C2D message send failure")`, which cannot tell a full queue from an outage
    (Azure/azure-iot-hub-python#5). None when IoT Hub accepted the message."""
    import uamqp  # type: ignore[import-untyped]

    props = uamqp.message.MessageProperties()
    props.message_id = str(uuid4())
    props.to = f"/devices/{device_id}/messages/devicebound"
    application: dict[str, Any] = {}
    for key, value in properties.items():
        if key in SYSTEM_PROPERTIES:
            setattr(props, SYSTEM_PROPERTIES[key], value)
        else:
            application[key] = value
    outcome: list[BaseException | None] = []
    message = uamqp.Message(body, properties=props, application_properties=application)
    message.on_send_complete = lambda _result, error: outcome.append(error)  # uamqp's documented callback
    amqp_client.queue_message(message)
    results = amqp_client.send_all_messages(close_on_done=False)
    if uamqp.constants.MessageState.SendFailed not in results:
        return None
    error = outcome[0] if outcome and outcome[0] is not None else None
    return error if error is not None else RuntimeError("C2D message send failure")


def _text(value: Any) -> str:
    """uamqp gives conditions as bytes or as `ErrorCodes` members (whose value is the symbol, as bytes)."""
    value = getattr(value, "value", value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def amqp_status(exc: BaseException) -> int | None:
    """The HTTP-equivalent status of a uamqp error's condition; None when there is none (no answer)."""
    condition = _text(getattr(exc, "condition", None))
    return AMQP_STATUS.get(condition) if condition else None


def amqp_description(exc: BaseException) -> str | None:
    """The error description (IoT Hub puts its error code text there), else the exception's text."""
    description = _text(getattr(exc, "description", None))
    return description or str(exc) or None


def rest_status(exc: BaseException) -> int | None:
    """The HTTP status of the registry's msrest HttpOperationError (None for transport errors)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def rest_error_code(exc: BaseException) -> str | None:
    """IoT Hub's error code of a REST answer (header or body), else the exception text."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    body = getattr(response, "text", None)
    if isinstance(headers, Mapping):
        code = error_code_of(headers, body if isinstance(body, str | bytes) else None)
        if code:
            return code
    return str(exc) or None
