"""IoTHubGateway on `azure-iot-hub` (the IoT Hub service SDK), authenticated with the app's managed identity.

The SDK is synchronous (C2D over AMQP through uamqp, twins over HTTPS) and importing it loads uamqp, so it is
imported on first use and every call runs in a worker thread, never on the event loop. The app's identity
needs the "IoT Hub Data Contributor" role (or Twin Contributor + Service Connect) on the hub.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from shared.errors import ConfigurationError, DeviceNotFoundError, IoTHubError
from shared.iothub.gateway import (
    DeviceExistsError,
    DeviceIdentity,
    IoTHubGateway,
    new_device_key,
)
from shared.settings import setting


class AzureIoTHubGateway(IoTHubGateway):
    def __init__(self, hostname: str, client_id: str | None = None) -> None:
        self._hostname = hostname
        self._client_id = client_id
        self._manager: Any = None
        self._lock = threading.Lock()  # one registry manager, created once even by concurrent first calls

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

    def _send(self, device_id: str, body: bytes, properties: Mapping[str, str]) -> None:
        try:
            self._registry().send_c2d_message(device_id, body, properties=dict(properties))
        except Exception as exc:  # the SDK raises uamqp and msrest errors of many kinds
            if _not_found(exc):
                raise DeviceNotFoundError(f"C2D to {device_id}: no such device") from exc
            raise IoTHubError(f"C2D to {device_id}: {type(exc).__name__}: {exc}") from exc

    def _patch(self, device_id: str, patch: Mapping[str, Any]) -> None:
        from azure.iot.hub.models import Twin, TwinProperties  # type: ignore[import-untyped]

        twin = Twin(properties=TwinProperties(desired=dict(patch)))
        try:
            self._registry().update_twin(device_id, twin, "*")
        except Exception as exc:
            if _not_found(exc):
                raise DeviceNotFoundError(f"twin patch of {device_id}: no such device") from exc
            raise IoTHubError(f"twin patch of {device_id}: {type(exc).__name__}: {exc}") from exc

    def _create(self, device_id: str) -> DeviceIdentity:
        primary, secondary = new_device_key(), new_device_key()
        try:
            self._registry().create_device_with_sas(device_id, primary, secondary, "enabled")
        except Exception as exc:
            if _status(exc) in (409, 412):  # DeviceAlreadyExists
                raise DeviceExistsError(f"device {device_id} exists") from exc
            raise IoTHubError(f"create device {device_id}: {type(exc).__name__}: {exc}") from exc
        return DeviceIdentity(device_id, self._hostname, primary)

    def _delete(self, device_id: str) -> bool:
        try:
            self._registry().delete_device(device_id)  # etag "*": whatever its version
        except Exception as exc:
            if _status(exc) == 404:
                return False
            raise IoTHubError(f"delete device {device_id}: {type(exc).__name__}: {exc}") from exc
        return True

    async def create_device(self, device_id: str) -> DeviceIdentity:
        return await asyncio.to_thread(self._create, device_id)

    async def delete_device(self, device_id: str) -> bool:
        return await asyncio.to_thread(self._delete, device_id)

    async def send_c2d(self, device_id: str, body: bytes, properties: Mapping[str, str]) -> None:
        await asyncio.to_thread(self._send, device_id, body, properties)

    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._patch, device_id, patch)

    async def close(self) -> None:
        manager, self._manager = self._manager, None
        if manager is not None and hasattr(manager, "amqp_svc_client"):
            await asyncio.to_thread(manager.amqp_svc_client.disconnect_sync)


def _status(exc: Exception) -> int | None:
    """The HTTP status of the registry's msrest HttpOperationError (None for transport errors)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _not_found(exc: Exception) -> bool:
    """A 404 from the registry (REST), or the DeviceNotFound error condition of a C2D send (AMQP)."""
    return _status(exc) == 404 or "DeviceNotFound" in str(exc)
