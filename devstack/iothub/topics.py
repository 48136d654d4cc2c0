"""IoT Hub's MQTT topics for a device, and the properties IoT Hub encodes in them.

Properties travel URL-encoded in the last topic level, `key=value&...`; system properties use `$.` keys
(`$.mid` message id, `$.cid` correlation id, `$.ct` content type, `$.ce` content encoding, `$.to` the C2D
destination). Values are percent-decoded without turning `+` into a space (as the device SDK does).
Ref: https://learn.microsoft.com/azure/iot/iot-mqtt-connect-to-iot-hub

Direct methods (docs: "Understand and invoke direct methods from IoT Hub"): a device subscribed to
`$iothub/methods/POST/#` receives `$iothub/methods/POST/{method name}/?$rid={request id}` (QoS 0, the body is the
JSON payload) and answers on `$iothub/methods/res/{status}/?$rid={request id}` with any body it likes.

A module identity (registry.py) uses the same `$iothub/twin/...` and `$iothub/methods/...` topics on its own
connection, and sends on `devices/{device}/modules/{module}/messages/events/{props}`. It is granted no C2D topic:
IoT Hub delivers no cloud-to-device messages to modules (azure-iot-sdk-node#279: "Modules connected to the hub can
do D2C, but not C2D, inputs, or outputs"), and `devices/{device}/modules/{module}/inputs/#`, which the SDK's module
client subscribes to for edgeHub's routes, is refused (SUBACK failure; the SDK ignores it and keeps running).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, unquote

SYSTEM_KEYS: Final = {
    "$.mid": "message-id",
    "$.cid": "correlation-id",
    "$.uid": "user-id",
    "$.ct": "content-type",
    "$.ce": "content-encoding",
    "$.exp": "absolute-expiry-time",
    "$.to": "to",
}

TWIN_RESPONSES_FILTER: Final = "$iothub/twin/res/#"
DESIRED_PATCHES_FILTER: Final = "$iothub/twin/PATCH/properties/desired/#"
METHODS_FILTER: Final = "$iothub/methods/POST/#"
METHOD_RESPONSE_PREFIX: Final = "$iothub/methods/res/"
# The device's status is an int; the SDK sends str(status). Anything outside a 32-bit int is not a status.
_INT32: Final = range(-(2**31), 2**31)


def c2d_filter(device_id: str) -> str:
    return f"devices/{device_id}/messages/devicebound/#"


def allowed_filters(identity: str) -> frozenset[str]:
    """The only subscriptions IoT Hub grants a device (anything else is refused). `identity` is a device id or a
    module's `{device}/{module}`: a module gets the twin and method topics, never a C2D one."""
    shared = {TWIN_RESPONSES_FILTER, DESIRED_PATCHES_FILTER, METHODS_FILTER}
    return frozenset(shared if "/" in identity else {c2d_filter(identity), *shared})


def input_filter(device_id: str, module_id: str) -> str:
    """What the SDK's module client subscribes to for edgeHub routes (IoT Hub refuses it)."""
    return f"devices/{device_id}/modules/{module_id}/inputs/#"


@dataclass(frozen=True)
class Properties:
    """A message's properties split the way IoT Hub exposes them: system (by IoT Hub name) and application."""

    system: dict[str, str] = field(default_factory=dict)
    application: dict[str, str] = field(default_factory=dict)


def decode_properties(encoded: str) -> Properties:
    """`$.ct=application%2Fjson&type=telemetry` → Properties(system={content-type: ...}, application={type: ...})."""
    props = Properties()
    for pair in filter(None, encoded.split("&")):
        raw_key, _, raw_value = pair.partition("=")
        key, value = unquote(raw_key), unquote(raw_value)
        if key in SYSTEM_KEYS:
            props.system[SYSTEM_KEYS[key]] = value
        else:
            props.application[key] = value
    return props


def encode_properties(system: Mapping[str, str], application: Mapping[str, str]) -> str:
    """The inverse of decode_properties, system properties first."""
    by_name = {name: key for key, name in SYSTEM_KEYS.items()}
    pairs = [(by_name[name], value) for name, value in system.items()]
    pairs += list(application.items())
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)


_EVENTS: Final = re.compile(r"devices/(?P<device>[^/]+)(?:/modules/(?P<module>[^/]+))?/messages/events/?(?P<props>.*)")
_TWIN: Final = re.compile(r"\$iothub/twin/(?P<method>GET|PATCH)(?P<resource>/[^?]*)?\?(?P<query>.*)")
_METHOD_REQUEST: Final = re.compile(r"\$iothub/methods/POST/(?P<name>[^/?]+)/\?(?P<query>.*)", re.DOTALL)
_METHOD_RESPONSE: Final = re.compile(r"\$iothub/methods/res/(?P<status>-?[0-9]{1,10})/\?(?P<query>.*)", re.DOTALL)


def parse_event_topic(topic: str) -> tuple[str, Properties] | None:
    """A device-to-cloud topic → (identity in the topic, properties); None if it is not one. The identity is the
    device id, or `{device}/{module}` for a module's `devices/{device}/modules/{module}/messages/events/`."""
    match = _EVENTS.fullmatch(topic)
    if match is None:
        return None
    identity = unquote(match["device"])
    if match["module"] is not None:
        identity = f"{identity}/{unquote(match['module'])}"
    return identity, decode_properties(match["props"])


@dataclass(frozen=True)
class TwinRequest:
    method: str  # GET | PATCH
    resource: str  # "/" for GET, "/properties/reported/" for a reported patch
    request_id: str


def parse_twin_topic(topic: str) -> TwinRequest | None:
    """`$iothub/twin/GET/?$rid=7` → TwinRequest("GET", "/", "7"); None if not a twin request."""
    match = _TWIN.fullmatch(topic)
    if match is None:
        return None
    query = decode_properties(match["query"]).application
    request_id = query.get("$rid")
    if request_id is None:
        return None
    return TwinRequest(match["method"], match["resource"] or "/", request_id)


def twin_response_topic(status: int, request_id: str, version: int | None = None) -> str:
    topic = f"$iothub/twin/res/{status}/?$rid={quote(request_id, safe='')}"
    return topic if version is None else f"{topic}&$version={version}"


@dataclass(frozen=True)
class MethodResponse:
    """A device's answer to direct method request `request_id`, with the status it chose."""

    status: int
    request_id: str


def _request_id(query: str) -> str | None:
    request_id = decode_properties(query).application.get("$rid")
    return request_id or None


def method_request_topic(method: str, request_id: str) -> str:
    """Where the hub sends direct method `method` to a device (the SDK percent-decodes both parts)."""
    return f"$iothub/methods/POST/{quote(method, safe='')}/?$rid={quote(request_id, safe='')}"


def parse_method_request_topic(topic: str) -> tuple[str, str] | None:
    """`$iothub/methods/POST/lock/?$rid=7` → ("lock", "7"); None if it is not one."""
    match = _METHOD_REQUEST.fullmatch(topic)
    if match is None:
        return None
    request_id = _request_id(match["query"])
    return None if request_id is None else (unquote(match["name"]), request_id)


def method_response_topic(status: int, request_id: str) -> str:
    """What a device publishes to answer a direct method (as the SDK builds it)."""
    return f"{METHOD_RESPONSE_PREFIX}{status}/?$rid={quote(request_id, safe='')}"


def parse_method_response_topic(topic: str) -> MethodResponse | None:
    """`$iothub/methods/res/200/?$rid=7` → MethodResponse(200, "7"); None if it is not a well-formed answer (a
    status that is not a 32-bit integer, no request id). Never raises: devices publish what they like."""
    match = _METHOD_RESPONSE.fullmatch(topic)
    if match is None:
        return None
    status, request_id = int(match["status"]), _request_id(match["query"])
    if status not in _INT32 or request_id is None:
        return None
    return MethodResponse(status, request_id)


def desired_patch_topic(version: int) -> str:
    return f"$iothub/twin/PATCH/properties/desired/?$version={version}"


def c2d_topic(device_id: str, message_id: str, application: Mapping[str, str]) -> str:
    """The topic a cloud-to-device message is delivered on, with `$.mid`, `$.to` and the app properties."""
    system = {"message-id": message_id, "to": f"/devices/{device_id}/messages/devicebound"}
    return f"devices/{device_id}/messages/devicebound/{encode_properties(system, application)}"


def filter_matches(topic_filter: str, topic: str) -> bool:
    """MQTT wildcard match (`+` one level, `#` the rest)."""
    parts, levels = topic_filter.split("/"), topic.split("/")
    for index, part in enumerate(parts):
        if part == "#":
            return True
        if index >= len(levels) or (part != "+" and part != levels[index]):
            return False
    return len(parts) == len(levels)
