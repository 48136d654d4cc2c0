"""A revoked car on the real local IoT Hub: LocalIoTHubGateway.set_device_enabled through the service API (`PUT
/devices/{id}` with If-Match and `status`) closes a connected `azure-iot-device` car's connection and refuses it at
CONNECT, as IoT Hub does with a disabled device, until it is enabled again."""

from __future__ import annotations

import asyncio

import pytest
from azure.iot.device.aio import IoTHubDeviceClient

from tests.iothub_support import Hub, local_hub, wait_until  # noqa: F401 - the fixture


def client(h: Hub, device_id: str) -> IoTHubDeviceClient:
    return IoTHubDeviceClient.create_from_connection_string(
        h.registry.provision(device_id), server_verification_cert=h.ca_pem, connection_retry=False
    )


async def test_a_disabled_device_is_disconnected_and_refused_until_enabled(local_hub: Hub) -> None:  # noqa: F811
    h = local_hub
    car = client(h, "car-stolen")
    await car.connect()
    assert h.hub.connected("car-stolen")

    # WHEN the car is revoked (its device disabled)
    assert await h.gateway.set_device_enabled("car-stolen", False) is True
    # THEN its connection is closed ...
    assert await wait_until(lambda: not h.hub.connected("car-stolen"))
    # ... and it cannot connect again, not even with a fresh SAS token
    again = client(h, "car-stolen")
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises CredentialError / ConnectionFailedError
        await asyncio.wait_for(again.connect(), 30)
    assert not h.hub.connected("car-stolen")
    assert await h.gateway.set_device_enabled("car-stolen", False) is True  # idempotent

    # WHEN it is enabled again (a recovered car) THEN it connects
    assert await h.gateway.set_device_enabled("car-stolen", True) is True
    back = client(h, "car-stolen")
    await back.connect()
    assert h.hub.connected("car-stolen")
    for c in (back, again, car):
        await asyncio.wait_for(c.shutdown(), 10)


async def test_unknown_and_deleted_devices(local_hub: Hub) -> None:  # noqa: F811
    h = local_hub
    assert await h.gateway.set_device_enabled("car-nobody", False) is False
    h.registry.provision("car-gone")
    assert await h.gateway.set_device_enabled("car-gone", False) is True
    assert await h.gateway.delete_device("car-gone") is True
    assert await h.gateway.set_device_enabled("car-gone", True) is False
    # created again, it starts enabled
    car = client(h, "car-gone")
    await car.connect()
    assert h.hub.connected("car-gone")
    await asyncio.wait_for(car.shutdown(), 10)
