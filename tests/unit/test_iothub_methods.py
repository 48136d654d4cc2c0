"""Direct methods without a hub (issue 14): the method topics against the device SDK's own topic code
(hypothesis), IoT Hub's method errors through the one mapping, AzureIoTHubGateway with a fake registry manager
and with the real SDK against a loopback HTTP server (no network), the argument rules, the memory gateway."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from azure.iot.device.iothub.pipeline import mqtt_topic_iothub as _sdk_topics
from hypothesis import given
from hypothesis import strategies as st

from devstack.iothub.topics import (
    METHODS_FILTER,
    MethodResponse,
    filter_matches,
    method_request_topic,
    method_response_topic,
    parse_method_request_topic,
    parse_method_response_topic,
)
from shared.errors import (
    DeviceNotFoundError,
    DeviceNotOnlineError,
    DeviceQueueFullError,
    DeviceTimeoutError,
    InvalidMethodCallError,
    IoTHubAccessDeniedError,
    IoTHubError,
    MessageTooLargeError,
    PermanentError,
)
from shared.faults import iothub_error, is_permanent
from shared.iothub.azure_gateway import AzureIoTHubGateway
from shared.iothub.gateway import METHOD_PAYLOAD_MAX_BYTES, MethodResult, error_code_of, method_request_body
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from tests.iothub_support import FakeIoTHub
from tests.iothub_support import sdk_gateway as sdk_gateway_fixture

sdk_topics: Any = _sdk_topics  # the device SDK's own topic code (untyped)
sdk_gateway = sdk_gateway_fixture  # the fixture (tests/iothub_support.py), under the name the tests take

# --- topics -----------------------------------------------------------------------------------------------------

# The characters IoT Hub allows in a method name are restricted, but a device may be sent anything a caller
# names; request ids are the hub's own. Any text must survive the round trip through the SDK's parsing.
names = st.text(min_size=1, max_size=100)
request_ids = st.text(min_size=1, max_size=40)
statuses = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@given(names, request_ids)
def test_the_sdk_reads_back_the_method_and_request_id_the_hub_sends(name: str, request_id: str) -> None:
    topic = method_request_topic(name, request_id)
    assert filter_matches(METHODS_FILTER, topic)  # a device subscribed to methods receives it
    assert sdk_topics.is_method_topic(topic)
    assert sdk_topics.get_method_name_from_topic(topic) == name
    assert sdk_topics.get_method_request_id_from_topic(topic) == request_id
    assert parse_method_request_topic(topic) == (name, request_id)


@given(statuses, request_ids)
def test_the_hub_reads_back_what_the_sdk_answers_on(status: int, request_id: str) -> None:
    topic = sdk_topics.get_method_topic_for_publish(request_id, status)
    assert parse_method_response_topic(topic) == MethodResponse(status, request_id)
    assert method_response_topic(status, request_id) == topic


@given(st.text(max_size=300))
def test_any_topic_parses_to_a_well_formed_answer_or_none_and_never_raises(topic: str) -> None:
    answer = parse_method_response_topic("$iothub/methods/res/" + topic)
    if answer is not None:
        assert -(2**31) <= answer.status < 2**31
        assert answer.request_id
    request = parse_method_request_topic("$iothub/methods/POST/" + topic)
    if request is not None:
        assert request[0]
        assert request[1]


@pytest.mark.parametrize(
    "topic",
    [
        "$iothub/methods/res/abc/?$rid=1",
        "$iothub/methods/res//?$rid=1",
        "$iothub/methods/res/200/?$rid=",
        "$iothub/methods/res/200/",
        "$iothub/methods/res/200?$rid=1",
        "$iothub/methods/res/4294967296/?$rid=1",
        "$iothub/methods/res/2.5/?$rid=1",
        "$iothub/methods/POST/lock/?$rid=1",
    ],
)
def test_garbled_answers_are_not_answers(topic: str) -> None:
    assert parse_method_response_topic(topic) is None


# --- the one mapping --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, "DeviceNotOnline", DeviceNotOnlineError),
        (404, "404103", DeviceNotOnlineError),
        (None, "ErrorCode 404103 in a description", DeviceNotOnlineError),
        (504, "GatewayTimeout", DeviceTimeoutError),
        (504, "504101", DeviceTimeoutError),
        (504, "GenericGatewayTimeout", IoTHubError),  # 504000: a gateway hiccup, not the device's silence
        (504, None, IoTHubError),
        (404, "DeviceNotFound", DeviceNotFoundError),
        (404, "404001", DeviceNotFoundError),
        (404, None, DeviceNotFoundError),
        (429, "ThrottlingException", IoTHubError),
        (503, "ServerBusy", IoTHubError),
        (None, None, IoTHubError),
        (413, "MessageTooLarge", MessageTooLargeError),
        (400, "ArgumentInvalid", PermanentError),
        # the caller refused (no data-plane role, a token that does not apply) or the tier lacks the operation:
        # transient to a batch, but typed so a rollout stops at once instead of waiting on every car
        (401, "IoTHubUnauthorized", IoTHubAccessDeniedError),
        (401, None, IoTHubAccessDeniedError),
        (None, "401003 IoTHubUnauthorized: principal has no assigned permissions", IoTHubAccessDeniedError),
        (403, "403010", IoTHubAccessDeniedError),
        (403, "IoTHubQuotaExceeded", IoTHubError),  # the hub's daily quota: comes back at midnight UTC
        (403, "DeviceMaximumQueueDepthExceeded", DeviceQueueFullError),
    ],
)
def test_method_errors_map_once(status: int | None, code: str | None, expected: type[Exception]) -> None:
    error = iothub_error(status, code, "method door.lock on car-001")
    assert type(error) is expected
    assert is_permanent(error) == issubclass(expected, PermanentError)


def test_not_online_and_timeout_are_permanent_for_the_call_and_carry_their_reasons() -> None:
    assert iothub_error(404, "DeviceNotOnline", "m").reason == "device_not_online"  # type: ignore[attr-defined]
    assert iothub_error(504, "GatewayTimeout", "m").reason == "device_timeout"  # type: ignore[attr-defined]
    assert not isinstance(iothub_error(404, "DeviceNotOnline", "m"), DeviceNotFoundError)  # no C2D fallback skip


# IoT Hub's body for a direct method error: the error is JSON inside the Message string.
NOT_ONLINE_BODY = json.dumps(
    {
        "Message": json.dumps(
            {
                "errorCode": 404103,
                "trackingId": "t-G:0-TimeStamp:12/06/2026 05:00:00",
                "message": "Timed out waiting for device to connect.",
                "info": {"timeout": "00:00:00"},
                "timestampUtc": "2026-12-06T05:00:00Z",
            }
        ),
        "ExceptionMessage": "",
    }
)


def test_the_error_code_of_a_method_error_is_read_from_the_header_else_the_nested_body() -> None:
    assert error_code_of({"iothub-errorcode": "DeviceNotOnline"}, NOT_ONLINE_BODY) == "DeviceNotOnline"
    assert error_code_of({}, NOT_ONLINE_BODY) == "404103"
    assert error_code_of({}, '{"Message":"ErrorCode:DeviceNotFound;car-001","ExceptionMessage":""}') == "DeviceNotFound"
    assert error_code_of({}, '{"Message":"{not json","ExceptionMessage":""}') is None


# --- arguments --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "payload", "connect_timeout", "response_timeout"),
    [
        ("", None, 0, 30),
        ("   ", None, 0, 30),
        ("m" * 101, None, 0, 30),
        ("m", "x" * METHOD_PAYLOAD_MAX_BYTES, 0, 30),
        ("m", object(), 0, 30),
        ("m", None, 0, 4),
        ("m", None, 0, 301),
        ("m", None, -1, 30),
        ("m", None, 301, 30),
        ("m", None, 0, 30.5),
        ("m", None, True, 30),
    ],
)
def test_calls_iot_hub_would_refuse(method: str, payload: Any, connect_timeout: Any, response_timeout: Any) -> None:
    with pytest.raises(InvalidMethodCallError) as refused:
        method_request_body(method, payload, connect_timeout, response_timeout)
    assert isinstance(refused.value, ValueError)
    assert is_permanent(refused.value)


def test_the_limits_themselves_are_allowed() -> None:
    biggest = "x" * (METHOD_PAYLOAD_MAX_BYTES - 2)  # with its two quotes: exactly 128 KB
    assert len(method_request_body("m" * 100, biggest, 300, 300)) == METHOD_PAYLOAD_MAX_BYTES
    assert method_request_body("m", None, 0, 5) == b"null"


# --- AzureIoTHubGateway with a fake registry manager -------------------------------------------------------------


class HttpOperationError(Exception):
    """msrest's HttpOperationError as the gateway reads it: `.response` with status_code, headers, text."""

    def __init__(self, status: int, headers: dict[str, str], text: str) -> None:
        super().__init__(f"Operation returned an invalid status code {status}")
        self.response = SimpleNamespace(status_code=status, headers=headers, text=text)


class FakeDevices:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []

    def invoke_method(self, device_id: str, request: Any, **config: Any) -> Any:
        self.calls.append((device_id, request, config))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def azure_with(devices: FakeDevices) -> AzureIoTHubGateway:
    gateway = AzureIoTHubGateway("hub.azure-devices.net")
    gateway._manager = SimpleNamespace(protocol=SimpleNamespace(devices=devices))
    return gateway


async def test_azure_sends_the_sdk_request_with_a_read_timeout_beyond_iot_hubs_wait() -> None:
    devices = FakeDevices(SimpleNamespace(status=202, payload={"accepted": True}))
    result = await azure_with(devices).invoke_method("car-001", "door.lock", {"d": 1}, 10, 20)
    assert result == MethodResult(202, {"accepted": True})
    [(device_id, request, config)] = devices.calls
    assert device_id == "car-001"
    assert (request.method_name, request.payload) == ("door.lock", {"d": 1})
    assert (request.connect_timeout_in_seconds, request.response_timeout_in_seconds) == (10, 20)
    assert config["timeout"] > 30


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (HttpOperationError(404, {"iothub-errorcode": "DeviceNotOnline"}, NOT_ONLINE_BODY), DeviceNotOnlineError),
        (HttpOperationError(404, {}, NOT_ONLINE_BODY), DeviceNotOnlineError),
        (HttpOperationError(504, {"iothub-errorcode": "GatewayTimeout"}, "{}"), DeviceTimeoutError),
        (HttpOperationError(404, {"iothub-errorcode": "DeviceNotFound"}, "{}"), DeviceNotFoundError),
        (HttpOperationError(429, {"iothub-errorcode": "ThrottlingException"}, "{}"), IoTHubError),
        (HttpOperationError(503, {}, ""), IoTHubError),
        (ConnectionError("reset by peer"), IoTHubError),
    ],
)
async def test_azure_maps_iot_hubs_method_errors(error: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected):
        await azure_with(FakeDevices(error)).invoke_method("car-001", "door.lock", {})


async def test_azure_refuses_bad_calls_before_calling_iot_hub() -> None:
    devices = FakeDevices(SimpleNamespace(status=200, payload=None))
    with pytest.raises(InvalidMethodCallError):
        await azure_with(devices).invoke_method("car-001", "door.lock", {}, response_timeout=1)
    assert devices.calls == []


async def test_an_answer_without_a_device_status_is_transient() -> None:
    with pytest.raises(IoTHubError):
        await azure_with(FakeDevices(SimpleNamespace(status=None, payload=None))).invoke_method("car-001", "m", {})


# --- AzureIoTHubGateway with the real SDK against a loopback HTTP server ------------------------------------------


async def test_the_sdk_posts_iot_hubs_rest_shape_and_reads_the_answer(sdk_gateway: AzureIoTHubGateway) -> None:
    FakeIoTHub.answers.append((200, {}, '{"status": 201, "payload": {"ok": true}}'))
    result = await sdk_gateway.invoke_method("car-001", "climate.start", {"c": 21}, 5, 15)
    assert result == MethodResult(201, {"ok": True})
    [(path, body)] = FakeIoTHub.requests
    assert path.startswith("/twins/car-001/methods?api-version=")
    assert body == {
        "methodName": "climate.start",
        "payload": {"c": 21},
        "responseTimeoutInSeconds": 15,
        "connectTimeoutInSeconds": 5,
    }


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (504, {"iothub-errorcode": "GatewayTimeout"}, "{}", DeviceTimeoutError),
        (404, {"iothub-errorcode": "DeviceNotOnline"}, NOT_ONLINE_BODY, DeviceNotOnlineError),
        (404, {}, NOT_ONLINE_BODY, DeviceNotOnlineError),
        (503, {"iothub-errorcode": "ServerBusy"}, "{}", IoTHubError),
    ],
)
async def test_the_sdk_sends_a_method_once_whatever_iot_hub_answers(
    sdk_gateway: AzureIoTHubGateway, status: int, headers: dict[str, str], body: str, expected: type[Exception]
) -> None:
    FakeIoTHub.answers.extend([(status, headers, body)] * 4)
    with pytest.raises(expected):
        await sdk_gateway.invoke_method("car-001", "door.unlock", {})
    assert len(FakeIoTHub.requests) == 1  # never a second unlock: msrest does not retry this POST


# --- the memory gateway -----------------------------------------------------------------------------------------


async def test_the_memory_gateway_plays_cars_as_scripted() -> None:
    gateway = MemoryIoTHubGateway()
    with pytest.raises(DeviceNotOnlineError):  # no handler: connected or not, not online for methods
        await gateway.invoke_method("car-001", "door.lock", {})

    async def lock(method: str, payload: Any) -> MethodResult:
        return MethodResult(200, {"method": method, "got": payload})

    gateway.on_method("car-001", lock)
    gateway.on_method("car-002", lambda method, payload: MethodResult(409, {"reason": "moving"}))
    assert await gateway.invoke_method("car-001", "door.lock", {"a": (1, 2)}) == MethodResult(
        200, {"method": "door.lock", "got": {"a": [1, 2]}}
    )
    assert await gateway.invoke_method("car-002", "door.unlock", None) == MethodResult(409, {"reason": "moving"})

    gateway.offline.add("car-001")
    with pytest.raises(DeviceNotOnlineError):
        await gateway.invoke_method("car-001", "door.lock", {})
    gateway.offline.clear()
    gateway.connect_delay["car-001"] = 10
    with pytest.raises(DeviceNotOnlineError):
        await gateway.invoke_method("car-001", "door.lock", {}, connect_timeout=5)
    assert (await gateway.invoke_method("car-001", "door.lock", {}, connect_timeout=10)).status == 200
    gateway.response_delay["car-002"] = 31
    with pytest.raises(DeviceTimeoutError):
        await gateway.invoke_method("car-002", "door.lock", {})
    assert (await gateway.invoke_method("car-002", "door.lock", {}, response_timeout=60)).status == 409

    await gateway.delete_device("car-002")
    with pytest.raises(DeviceNotFoundError):
        await gateway.invoke_method("car-002", "door.lock", {})
    gateway.answers["car-001"] = (503, "ServerBusy")
    with pytest.raises(IoTHubError):
        await gateway.invoke_method("car-001", "door.lock", {})
    with pytest.raises(InvalidMethodCallError):
        await gateway.invoke_method("car-001", "", {})
    assert [(m.device_id, m.method) for m in gateway.invoked] == [
        ("car-001", "door.lock"),
        ("car-002", "door.unlock"),
        ("car-001", "door.lock"),
        ("car-002", "door.lock"),  # it received it, and did not answer in time
        ("car-002", "door.lock"),
    ]
