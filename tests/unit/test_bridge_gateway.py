"""LocalIoTHubGateway → the local hub's service API: the same IoTHubGateway interface the Azure code uses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from devstack.eventhubs import EventHubsNamespace
from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import DeviceRegistry
from devstack.iothub.service_api import ServiceApi
from devstack.iothub.topics import decode_properties
from shared.iothub.local_gateway import LocalIoTHubGateway


@pytest.fixture
async def hub_and_gateway() -> AsyncIterator[tuple[LocalIoTHub, LocalIoTHubGateway]]:
    hub = LocalIoTHub(DeviceRegistry("localhost"), EventHubsNamespace())
    api = ServiceApi(hub)
    url = await api.start()
    gateway = LocalIoTHubGateway.from_env({"LOCAL_IOTHUB_SERVICE_URL": url})
    yield hub, gateway
    await gateway.close()
    await api.stop()


async def test_desired_patches_reach_the_twin(hub_and_gateway: tuple[LocalIoTHub, LocalIoTHubGateway]) -> None:
    hub, gateway = hub_and_gateway
    await gateway.patch_desired("car-001", {"agenda": {"events": [{"id": "e1"}]}})
    await gateway.patch_desired("car-001", {"agenda": {"hash": "h"}})
    assert hub.twin_document("car-001")["desired"] == {
        "agenda": {"events": [{"id": "e1"}], "hash": "h"},
        "$version": 3,
    }


async def test_c2d_messages_are_queued_with_their_properties(
    hub_and_gateway: tuple[LocalIoTHub, LocalIoTHubGateway],
) -> None:
    # GIVEN a car that is not connected
    hub, gateway = hub_and_gateway

    # WHEN the backend replies to it
    await gateway.send_c2d("car-001", b'{"ok":true}', {"type": "response", "requestId": "r-1"})

    # THEN the message waits in its queue, on the topic the car will receive it on
    [(topic, body)] = list(hub._c2d["car-001"])
    assert body == b'{"ok":true}'
    props = decode_properties(topic.rsplit("/", 1)[1])
    assert props.application == {"type": "response", "requestId": "r-1"}
    assert props.system["to"] == "/devices/car-001/messages/devicebound"
