"""What the backend asks of IoT Hub's service side. Azure: `azure-iot-hub`; locally: the devstack bridge."""

from __future__ import annotations

import base64
import logging
import secrets
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import DeviceNotFoundError, FleetError

log = logging.getLogger(__name__)


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


def new_device_key() -> str:
    """A 256-bit symmetric key, base64, as IoT Hub generates them."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


class IoTHubGateway(ABC):
    """Cloud-to-device messages, desired-property patches and the device registry of one IoT Hub."""

    @abstractmethod
    async def send_c2d(self, device_id: str, body: bytes, properties: Mapping[str, str]) -> None:
        """Queue a cloud-to-device message; `properties` become its application properties.

        Raises DeviceNotFoundError when the device identity does not exist."""

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

    async def send_c2d_if_present(self, device_id: str, body: bytes, properties: Mapping[str, str]) -> bool:
        """send_c2d, except that a device that no longer exists is logged and skipped (False), not raised."""
        try:
            await self.send_c2d(device_id, body, properties)
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
