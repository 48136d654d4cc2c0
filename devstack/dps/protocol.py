"""DPS's device-side MQTT protocol, pure: topics, usernames, SAS tokens, registration bodies, answers.

As the device SDK speaks it (azure-iot-device 2.14, `provisioning/pipeline/mqtt_topic_provisioning.py`, and the
docs "Provision devices using MQTT" / "DPS device SDKs"): the client id is the registration id, the username
`{idScope}/registrations/{registrationId}/api-version=2019-03-31&ClientVersion=...`, the password a SAS token for
`{idScope}/registrations/{registrationId}` (symmetric key; `skn=registration`) or none (X.509: the TLS client
certificate). The device subscribes to `$dps/registrations/res/#`, registers with
`$dps/registrations/PUT/iotdps-register/?$rid={rid}` (body `{"registrationId", "payload"}`), polls with
`$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`, and gets every answer on
`$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`: 202 `{"operationId", "status": "assigning"}` while
the service works, 200 with `status` assigned / failed / disabled and `registrationState`, 4xx with
`{"errorCode", "trackingId", "message", "timestampUtc"}`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

import orjson

from devstack.iothub.registry import sign

REGISTER_PREFIX: Final = "$dps/registrations/PUT/iotdps-register/"
STATUS_PREFIX: Final = "$dps/registrations/GET/iotdps-get-operationstatus/"
RESPONSE_FILTER: Final = "$dps/registrations/res/#"
API_VERSION: Final = "2019-03-31"
# REST "Runtime Registration - Register Device", `registrationId`: "a case-insensitive string (up to 128 characters
# long) of alphanumeric characters plus certain special characters : . _ -. No special characters allowed at start or
# end." (shared/provisioning/model.py holds the same rule for pre-registration.)
REGISTRATION_ID: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9:._-]{0,126}[A-Za-z0-9])?")
MAX_BODY_BYTES: Final = 64 * 1024

# errorCode values as DPS reports them (401002 seen in the SDKs' logs; 400209 for a failed custom allocation)
UNAUTHORIZED: Final = 401002
BAD_REQUEST: Final = 400004
CUSTOM_ALLOCATION_FAILED: Final = 400209
NOT_FOUND: Final = 404201


@dataclass(frozen=True, slots=True)
class Request:
    """A device's request: `register` (with the request id) or `status` (with the operation id too)."""

    kind: str  # "register" | "status"
    request_id: str
    operation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Registration:
    """A register body: the registration id the device claims and its custom payload (any JSON, or None)."""

    registration_id: str
    payload: Any


class MalformedError(ValueError):
    """A request DPS answers 400."""


def valid_registration_id(registration_id: str) -> bool:
    """DPS's rule: 1..128 ASCII letters (either case), digits and - . _ :, a letter or digit at both ends."""
    return REGISTRATION_ID.fullmatch(registration_id) is not None


def registration_key(registration_id: str) -> str:
    """What identifies a registration to DPS: its id without case (`CAR-7` and `car-7` are one registration)."""
    return registration_id.lower()


def _query(topic: str, prefix: str) -> dict[str, str] | None:
    rest = topic[len(prefix) :]
    if not rest.startswith("?"):
        return None
    pairs = parse_qsl(rest[1:], keep_blank_values=True)
    fields = dict(pairs)
    if len(fields) != len(pairs):
        return None  # duplicate keys
    return fields


def parse_request_topic(topic: str) -> Request | None:
    """The request a device published, or None if the topic is none DPS serves."""
    if topic.startswith(REGISTER_PREFIX):
        fields = _query(topic, REGISTER_PREFIX)
        rid = (fields or {}).get("$rid")
        return Request("register", rid) if rid else None
    if topic.startswith(STATUS_PREFIX):
        fields = _query(topic, STATUS_PREFIX) or {}
        rid, operation = fields.get("$rid"), fields.get("operationId")
        return Request("status", rid, operation) if rid and operation else None
    return None


def response_topic(status: int, request_id: str, retry_after: int | None = None) -> str:
    topic = f"$dps/registrations/res/{status}/?$rid={request_id}"
    return topic if retry_after is None else f"{topic}&retry-after={retry_after}"


def parse_username(username: str | None) -> tuple[str, str] | None:
    """(id scope, registration id) from `{idScope}/registrations/{registrationId}/api-version=...`, else None."""
    if not username:
        return None
    parts = username.split("/", 3)
    if len(parts) != 4 or parts[1] != "registrations" or not parts[0] or not parts[2]:
        return None
    query = dict(parse_qsl(parts[3]))
    return (parts[0], parts[2]) if query.get("api-version") else None


def parse_registration(body: bytes, expected_id: str) -> Registration:
    """The register body; MalformedError if it is not `{"registrationId": <the connection's id>, "payload"?}`."""
    if len(body) > MAX_BODY_BYTES:
        raise MalformedError(f"a registration of {len(body)} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedError("the registration is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedError("the registration is not a JSON object")
    registration_id = data.get("registrationId")
    if not isinstance(registration_id, str) or not valid_registration_id(registration_id):
        raise MalformedError("registrationId is missing or not a valid registration id")
    if registration_id != expected_id:
        raise MalformedError("registrationId is not the one the device connected as")
    return Registration(registration_id, data.get("payload"))


def derive_device_key(group_key: str, registration_id: str) -> str:
    """A symmetric-key enrollment group's device key: base64(HMAC-SHA256(base64-decoded group key, id))."""
    digest = hmac.new(base64.b64decode(group_key), registration_id.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_sas(token: str | None, key: str, resource: str, now: float) -> bool:
    """True if `token` is an unexpired SAS for exactly `resource` signed with `key` (the signature covers the
    resource and expiry, so a token for another device or a changed expiry does not verify)."""
    if not token or not token.startswith("SharedAccessSignature "):
        return False
    try:
        fields = dict(
            parse_qsl(token.removeprefix("SharedAccessSignature "), keep_blank_values=True, strict_parsing=True)
        )
    except ValueError:
        return False
    signed_resource, signature, expiry = fields.get("sr", ""), fields.get("sig", ""), fields.get("se", "")
    if unquote(signed_resource) != resource or not expiry.isdigit() or int(expiry) < now:
        return False
    return hmac.compare_digest(sign(key, resource, int(expiry)), signature)


def utc(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def error_body(status: int, error_code: int, message: str, tracking_id: str, now: dt.datetime) -> bytes:
    return orjson.dumps(
        {"errorCode": error_code, "trackingId": tracking_id, "message": message, "timestampUtc": utc(now)}
    )
