"""LocalIoTHubGateway → the local hub's service API: the same IoTHubGateway interface the Azure code uses."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest

from devstack.eventhubs import EventHubsNamespace
from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import DeviceRegistry
from devstack.iothub.service_api import ServiceApi
from devstack.iothub.topics import decode_properties
from shared.errors import (
    DeviceNotFoundError,
    DeviceQueueFullError,
    IoTHubError,
    MessageTooLargeError,
    StoreError,
)
from shared.faults import is_permanent, reason_of
from shared.iothub.gateway import C2D_MAX_BYTES, C2D_QUEUE_LIMIT, error_code_of
from shared.iothub.local_gateway import LocalIoTHubGateway

Pair = tuple[LocalIoTHub, LocalIoTHubGateway]


@pytest.fixture
async def hub_and_gateway() -> AsyncIterator[tuple[LocalIoTHub, LocalIoTHubGateway]]:
    hub = LocalIoTHub(DeviceRegistry("localhost"), EventHubsNamespace())
    for device in ("car-001", "car-002", "car-009"):  # identities exist, as in IoT Hub, before anything is sent
        hub.registry.provision(device)
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

    # THEN the message waits in its queue, on the topic the car will receive it on, with its expiry
    [pending] = hub.pending("car-001")
    assert pending.body == b'{"ok":true}'
    assert pending.expiry is not None
    assert dt.timedelta(minutes=59) < pending.expiry - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=1)
    props = decode_properties(pending.topic.rsplit("/", 1)[1])
    assert props.application == {"type": "response", "requestId": "r-1"}
    assert props.system["to"] == "/devices/car-001/messages/devicebound"


async def test_the_51st_pending_message_is_refused_as_iot_hub_refuses_it(hub_and_gateway: Pair) -> None:
    # GIVEN a car that never reads its cloud-to-device queue, with 50 messages pending
    hub, gateway = hub_and_gateway
    for n in range(C2D_QUEUE_LIMIT):
        await gateway.send_c2d("car-001", b"{}", {"n": str(n)})

    # WHEN a 51st is sent
    with pytest.raises(DeviceQueueFullError) as refused:
        await gateway.send_c2d("car-001", b"{}", {"n": "51"})

    # THEN it is refused as permanent for this message (not silently dropping the oldest, as before),
    # and another car's queue is unaffected
    assert is_permanent(refused.value)
    assert reason_of(refused.value) == "queue_full"
    assert hub.pending("car-001")[0].topic.endswith("n=0")  # the oldest is kept, not dropped
    assert len(hub.pending("car-001")) == C2D_QUEUE_LIMIT
    await gateway.send_c2d("car-002", b"{}", {})


async def test_expired_messages_are_dropped_and_free_the_queue(hub_and_gateway: Pair) -> None:
    hub, gateway = hub_and_gateway
    for _ in range(C2D_QUEUE_LIMIT):
        await gateway.send_c2d("car-001", b"{}", {}, ttl_seconds=0)  # expired as soon as it is queued
    await gateway.send_c2d("car-001", b"{}", {}, ttl_seconds=60)
    [live] = hub.pending("car-001")
    assert live.expiry is not None
    assert hub.counters["c2d:expired"] == C2D_QUEUE_LIMIT


async def test_a_message_over_64_kb_is_refused_with_413(hub_and_gateway: Pair) -> None:
    hub, gateway = hub_and_gateway
    await gateway.send_c2d("car-001", b"x" * C2D_MAX_BYTES, {})  # exactly the limit is fine
    with pytest.raises(MessageTooLargeError):
        await gateway.send_c2d("car-001", b"x" * (C2D_MAX_BYTES + 1), {})
    assert len(hub.pending("car-001")) == 1


async def test_an_unknown_device_is_not_found(hub_and_gateway: Pair) -> None:
    # a device id the hub has no identity for: 404 DeviceNotFound, as IoT Hub answers
    _, gateway = hub_and_gateway
    with pytest.raises(DeviceNotFoundError):
        await gateway.patch_desired("car-never-registered", {"agenda": {}})
    with pytest.raises(DeviceNotFoundError):
        await gateway.send_c2d("car-never-registered", b"{}", {})


async def test_a_deleted_device_is_permanent_not_found(hub_and_gateway: Pair) -> None:
    hub, gateway = hub_and_gateway
    assert await gateway.delete_device("car-009")
    with pytest.raises(DeviceNotFoundError):
        await gateway.send_c2d("car-009", b"{}", {})
    with pytest.raises(DeviceNotFoundError):
        await gateway.patch_desired("car-009", {"a": 1})
    assert hub.pending("car-009") == []


async def test_no_answer_is_a_transient_iot_hub_error_not_a_store_error() -> None:
    # GIVEN a service URL where nothing listens
    gateway = LocalIoTHubGateway("http://127.0.0.1:9")
    try:
        # WHEN a reply is sent
        with pytest.raises(IoTHubError) as failed:
            await gateway.send_c2d("car-001", b"{}", {})
    finally:
        await gateway.close()
    # THEN the batch is retried (transient), and it is not mistaken for a store failure
    assert not is_permanent(failed.value)
    assert not isinstance(failed.value, StoreError)


def test_error_codes_are_read_from_header_or_message() -> None:
    body = b'{"Message":"ErrorCode:DeviceMaximumQueueDepthExceeded;full","ExceptionMessage":"Tracking ID:x"}'
    assert error_code_of({}, body) == "DeviceMaximumQueueDepthExceeded"
    assert error_code_of({"iothub-errorcode": "DeviceNotFound"}, b"") == "DeviceNotFound"
    assert error_code_of({}, b'{"ErrorCode": "IotHubQuotaExceeded"}') == "IotHubQuotaExceeded"
    assert error_code_of({}, b"<html>") is None
