"""The local IoT Hub's topic and property mapping, checked against what the azure-iot-device SDK itself emits
and parses (its own helpers in azure.iot.device.iothub.pipeline.mqtt_topic_iothub are the reference)."""

from __future__ import annotations

import pytest

pytest.importorskip(
    "azure.iot.device", reason="azure-iot-device is not installed: requirements-dev.txt needs azure-iot-device==2.14.0"
)

from azure.iot.device import Message
from azure.iot.device.iothub.pipeline import mqtt_topic_iothub as sdk

from devstack.iothub import topics


def test_event_topic_from_the_sdk_decodes_to_system_and_application_properties() -> None:
    # GIVEN a telemetry message encoded exactly as the SDK publishes it
    message = Message(b"{}", message_id="m-1", content_encoding="utf-8", content_type="application/json")
    message.custom_properties["type"] = "telemetry"
    message.custom_properties["note"] = "a b&c=d/é"
    topic = sdk.encode_message_properties_in_topic(message, sdk.get_telemetry_topic_for_publish("car-001", None))

    # WHEN the hub parses it
    parsed = topics.parse_event_topic(topic)

    # THEN device id and both kinds of properties come out intact
    assert parsed is not None
    device, props = parsed
    assert device == "car-001"
    assert props.system == {"message-id": "m-1", "content-type": "application/json", "content-encoding": "utf-8"}
    assert props.application == {"type": "telemetry", "note": "a b&c=d/é"}


def test_c2d_topic_is_understood_by_the_sdk() -> None:
    # GIVEN a cloud-to-device message with application properties
    topic = topics.c2d_topic("car-001", "mid-7", {"type": "response", "requestId": "r 1"})

    # WHEN the SDK extracts the properties from it
    received = Message(b"")
    sdk.extract_message_properties_from_topic(topic, received)

    # THEN it sees the message id, the app properties and no `$.to` leaking into them
    assert sdk.is_c2d_topic(topic, "car-001")
    assert received.message_id == "mid-7"
    assert received.custom_properties == {"type": "response", "requestId": "r 1"}


@pytest.mark.parametrize(
    ("topic", "method", "resource"),
    [
        ("$iothub/twin/GET/?$rid=42", "GET", "/"),
        ("$iothub/twin/PATCH/properties/reported/?$rid=42", "PATCH", "/properties/reported/"),
    ],
)
def test_twin_requests_as_the_sdk_sends_them(topic: str, method: str, resource: str) -> None:
    request = topics.parse_twin_topic(topic)
    assert request == topics.TwinRequest(method, resource, "42")


def test_twin_response_and_patch_topics_as_the_sdk_reads_them() -> None:
    response = topics.twin_response_topic(204, "42", version=7)
    assert sdk.is_twin_response_topic(response)
    assert sdk.get_twin_request_id_from_topic(response) == "42"
    assert sdk.get_twin_status_code_from_topic(response) == "204"
    assert sdk.is_twin_desired_property_patch_topic(topics.desired_patch_topic(3))


def test_a_device_may_only_subscribe_to_its_own_topics() -> None:
    allowed = topics.allowed_filters("car-001")
    assert sdk.get_c2d_topic_for_subscribe("car-001") in allowed
    assert sdk.get_twin_response_topic_for_subscribe() in allowed
    assert sdk.get_twin_patch_topic_for_subscribe() in allowed
    assert sdk.get_c2d_topic_for_subscribe("car-002") not in allowed
    assert "#" not in allowed


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("devices/a/messages/devicebound/#", "devices/a/messages/devicebound/x=1", True),
        ("devices/a/messages/devicebound/#", "devices/b/messages/devicebound/x=1", False),
        ("$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1", True),
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
    ],
)
def test_mqtt_filter_matching(topic_filter: str, topic: str, matches: bool) -> None:
    assert topics.filter_matches(topic_filter, topic) is matches


def test_properties_round_trip() -> None:
    encoded = topics.encode_properties({"message-id": "1", "to": "/devices/x"}, {"type": "request", "k": "ä&="})
    decoded = topics.decode_properties(encoded)
    assert decoded.system == {"message-id": "1", "to": "/devices/x"}
    assert decoded.application == {"type": "request", "k": "ä&="}
