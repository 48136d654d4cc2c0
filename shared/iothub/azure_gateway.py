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

from shared.errors import ConfigurationError, FleetError
from shared.iothub.gateway import IoTHubGateway
from shared.settings import setting


class IoTHubError(FleetError):
    """IoT Hub refused or failed a call (the trigger lets the host retry)."""


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
            raise IoTHubError(f"C2D to {device_id}: {type(exc).__name__}: {exc}") from exc

    def _patch(self, device_id: str, patch: Mapping[str, Any]) -> None:
        from azure.iot.hub.models import Twin, TwinProperties  # type: ignore[import-untyped]

        twin = Twin(properties=TwinProperties(desired=dict(patch)))
        try:
            self._registry().update_twin(device_id, twin, "*")
        except Exception as exc:
            raise IoTHubError(f"twin patch of {device_id}: {type(exc).__name__}: {exc}") from exc

    async def send_c2d(self, device_id: str, body: bytes, properties: Mapping[str, str]) -> None:
        await asyncio.to_thread(self._send, device_id, body, properties)

    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._patch, device_id, patch)

    async def close(self) -> None:
        manager, self._manager = self._manager, None
        if manager is not None and hasattr(manager, "amqp_svc_client"):
            await asyncio.to_thread(manager.amqp_svc_client.disconnect_sync)
