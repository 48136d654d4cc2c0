"""What the backend asks of IoT Hub's service side. Azure: `azure-iot-hub`; locally: the devstack bridge."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any


class IoTHubGateway(ABC):
    """Cloud-to-device messages and desired-property patches for one IoT Hub."""

    @abstractmethod
    async def send_c2d(self, device_id: str, body: bytes, properties: Mapping[str, str]) -> None:
        """Queue a cloud-to-device message; `properties` become its application properties."""

    @abstractmethod
    async def patch_desired(self, device_id: str, patch: Mapping[str, Any]) -> None:
        """Merge `patch` into the device twin's desired properties (IoT Hub pushes it to a connected car)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
