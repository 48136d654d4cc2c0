"""AzureIoTHubGateway reads IoT Hub's refusals (AMQP for C2D, REST for twins) into the shared fault mapping.

No IoT Hub here: a fake uamqp SendClient answers as IoT Hub does (a rejected outcome with a condition and a
description carrying IoT Hub's error code); the message it receives is the real uamqp Message the gateway built.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import pytest
import uamqp  # type: ignore[import-untyped]

from shared.errors import DeviceNotFoundError, DeviceQueueFullError, IoTHubError, MessageTooLargeError
from shared.iothub.azure_gateway import AzureIoTHubGateway, rest_error_code, rest_status


class FakeSendClient:
    """uamqp.SendClient as the SDK uses it: queue_message, then send_all_messages with the outcome callback."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.messages: list[Any] = []

    def queue_message(self, message: Any) -> None:
        self.messages.append(message)

    def send_all_messages(self, close_on_done: bool = True) -> list[Any]:
        message = self.messages[-1]
        if self.error is None:
            message.on_send_complete(uamqp.constants.MessageSendResult.Ok, None)
            return [uamqp.constants.MessageState.SendComplete]
        message.on_send_complete(uamqp.constants.MessageSendResult.Error, self.error)
        return [uamqp.constants.MessageState.SendFailed]


def gateway_with(client: FakeSendClient) -> AzureIoTHubGateway:
    gateway = AzureIoTHubGateway("hub.azure-devices.net")
    gateway._manager = SimpleNamespace(amqp_svc_client=SimpleNamespace(amqp_client=client))
    return gateway


async def test_a_c2d_message_carries_its_properties_and_absolute_expiry_as_the_sdk_sends_them() -> None:
    client = FakeSendClient()
    before = dt.datetime.now(dt.UTC)
    await gateway_with(client).send_c2d("car-001", b"{}", {"type": "response", "requestId": "r"}, ttl_seconds=60)
    [message] = client.messages
    assert message.properties.to == b"/devices/car-001/messages/devicebound"
    assert message.application_properties == {"type": "response", "requestId": "r"}
    expiry = dt.datetime.fromtimestamp(message.properties.absolute_expiry_time / 1000, dt.UTC)
    assert before + dt.timedelta(seconds=59) <= expiry <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61)


@pytest.mark.parametrize(
    ("condition", "description", "expected"),
    [
        (
            b"amqp:resource-limit-exceeded",
            b"ErrorCode:DeviceMaximumQueueDepthExceeded;queue full",
            DeviceQueueFullError,
        ),
        (b"amqp:not-found", b"ErrorCode:DeviceNotFound;car-001", DeviceNotFoundError),
        (b"amqp:link:message-size-exceeded", b"too large", MessageTooLargeError),
        (b"amqp:resource-limit-exceeded", b"ErrorCode:IotHubQuotaExceeded;daily quota", IoTHubError),
        (b"com.microsoft:server-busy", b"busy", IoTHubError),
        (uamqp.constants.ErrorCodes.NotFound, b"", DeviceNotFoundError),
    ],
)
async def test_c2d_refusals_map_through_the_shared_faults(
    condition: Any, description: bytes, expected: type[Exception]
) -> None:
    error = uamqp.errors.MessageSendFailed(condition, description)
    with pytest.raises(expected):
        await gateway_with(FakeSendClient(error)).send_c2d("car-001", b"{}", {})


async def test_a_broken_connection_is_transient() -> None:
    class Broken(FakeSendClient):
        def send_all_messages(self, close_on_done: bool = True) -> list[Any]:
            raise uamqp.errors.AMQPConnectionError(b"amqp:connection:forced", b"gone")

    with pytest.raises(IoTHubError):
        await gateway_with(Broken()).send_c2d("car-001", b"{}", {})


def test_rest_errors_give_status_and_error_code() -> None:
    response = SimpleNamespace(
        status_code=404,
        headers={"Content-Type": "application/json"},
        text='{"Message":"ErrorCode:DeviceNotFound;car-001","ExceptionMessage":"Tracking ID:x"}',
    )
    error = Exception("Operation returned an invalid status code 'Not Found'")
    error.response = response  # type: ignore[attr-defined]
    assert rest_status(error) == 404
    assert rest_error_code(error) == "DeviceNotFound"
    assert rest_status(Exception("connection reset")) is None
