"""The process's IoT Hub gateway: the local hub's when the local stack set its URL, else IoT Hub's service SDK.

Created on first use, once per event loop (PerLoop), so a cold start imports no IoT Hub SDK.
"""

from __future__ import annotations

import os

from shared.iothub.gateway import IoTHubGateway
from shared.per_loop import PerLoop


def _gateway_from_env() -> IoTHubGateway:
    """The local hub's gateway when the local stack set its URL, else IoT Hub (IOTHUB_HOSTNAME)."""
    from shared.iothub.local_gateway import SERVICE_URL_SETTING, LocalIoTHubGateway

    if os.environ.get(SERVICE_URL_SETTING):
        return LocalIoTHubGateway.from_env()
    from shared.iothub.azure_gateway import AzureIoTHubGateway  # azure-iot-hub loads uamqp: only on first use

    return AzureIoTHubGateway.from_env()


gateway: PerLoop[IoTHubGateway] = PerLoop(_gateway_from_env)
