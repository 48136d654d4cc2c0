"""The local DPS's protocol parsing (devstack/dps/protocol.py): topics, usernames, registration bodies, SAS tokens,
checked against what the installed device SDK itself sends and parses."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import string
import time
from pathlib import Path

import orjson
import pytest
from azure.iot.device.common.auth import sastoken
from azure.iot.device.common.auth.signing_mechanism import SymmetricKeySigningMechanism
from azure.iot.device.provisioning.pipeline import mqtt_topic_provisioning as sdk_topics
from azure.iot.device.provisioning.pipeline.pipeline_stages_provisioning import DeviceRegistrationPayload
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given
from hypothesis import strategies as st

from devstack.dps import protocol as dps
from devstack.dps.service import (
    Assignment,
    Attested,
    EnrollmentGroup,
    LocalDps,
    Operation,
    Refused,
    sas_attestation,
    x509_attestation,
)
from devstack.tls import DevicePki, device_pki, issue_device_certificate
from simulator.provisioning import ProvisioningConfig, load_provisioning_file

ids = st.from_regex(dps.REGISTRATION_ID, fullmatch=True)  # registration ids DPS takes, either case
request_ids = st.uuids().map(str)
anything = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(request_ids)
def test_the_sdks_register_topic_parses(rid: str) -> None:
    assert dps.parse_request_topic(sdk_topics.get_register_topic_for_publish(rid)) == dps.Request("register", rid)


@given(request_ids, st.text(alphabet=string.ascii_letters + string.digits + ".-", min_size=1, max_size=80))
def test_the_sdks_status_topic_parses(rid: str, operation_id: str) -> None:
    topic = sdk_topics.get_query_topic_for_publish(rid, operation_id)
    assert dps.parse_request_topic(topic) == dps.Request("status", rid, operation_id)


@given(st.text(max_size=200))
def test_any_topic_parses_or_is_none_never_raises(topic: str) -> None:
    request = dps.parse_request_topic(topic)
    assert request is None or (request.request_id and request.kind in {"register", "status"})


@given(st.sampled_from([200, 202, 400, 401, 404, 429]), request_ids, st.none() | st.integers(1, 60))
def test_the_sdk_reads_our_response_topics(status: int, rid: str, retry_after: int | None) -> None:
    topic = dps.response_topic(status, rid, retry_after)
    assert sdk_topics.is_dps_response_topic(topic)
    assert sdk_topics.extract_status_code_from_dps_response_topic(topic) == str(status)
    properties = sdk_topics.extract_properties_from_dps_response_topic(topic)
    assert properties["rid"] == rid
    assert properties.get("retry-after") == (None if retry_after is None else str(retry_after))


@given(ids)
def test_the_sdks_username_gives_scope_and_registration_id(registration_id: str) -> None:
    username = f"0ne00000001/registrations/{registration_id}/api-version=2019-03-31&ClientVersion=py-azure-iot/2.14"
    assert dps.parse_username(username) == ("0ne00000001", registration_id)


@pytest.mark.parametrize(
    "username", [None, "", "scope/devices/car/api-version=1", "scope/registrations//api-version=1", "scope/reg"]
)
def test_other_usernames_are_none(username: str | None) -> None:
    assert dps.parse_username(username) is None


@given(ids, anything)
def test_the_sdks_registration_body_parses(registration_id: str, payload: object) -> None:
    body = DeviceRegistrationPayload(registration_id, payload).get_json_string().encode()  # the SDK's own encoder
    assert dps.parse_registration(body, registration_id) == dps.Registration(registration_id, payload)


@given(st.binary(max_size=300), ids)
def test_any_body_is_a_registration_or_malformed_never_anything_else(body: bytes, registration_id: str) -> None:
    try:
        registration = dps.parse_registration(body, registration_id)
    except dps.MalformedError:
        return
    assert registration.registration_id == registration_id


@given(ids, ids)
def test_a_body_for_another_registration_id_is_malformed(claimed: str, connected: str) -> None:
    body = orjson.dumps({"registrationId": claimed})
    if claimed == connected:
        assert dps.parse_registration(body, connected).registration_id == claimed
    else:
        with pytest.raises(dps.MalformedError):
            dps.parse_registration(body, connected)


@given(st.text(max_size=140) | st.text(alphabet=string.ascii_letters + string.digits + "-._:", max_size=140))
def test_registration_ids_follow_dps_rules(registration_id: str) -> None:
    """Azure's rule (REST "Runtime Registration - Register Device", `registrationId`): "a case-insensitive string (up
    to 128 characters long) of alphanumeric characters plus certain special characters : . _ -. No special characters
    allowed at start or end." Upper case is allowed (the local DPS used to refuse it, stricter than Azure); a special
    character at either end is not (the local DPS used to take it, kinder than Azure)."""
    ok = dps.valid_registration_id(registration_id)
    alphanumeric = string.ascii_letters + string.digits
    assert ok == (
        0 < len(registration_id) <= 128
        and all(c in alphanumeric + "-._:" for c in registration_id)
        and registration_id[0] in alphanumeric
        and registration_id[-1] in alphanumeric
    )


@pytest.mark.parametrize(
    ("registration_id", "valid"),
    [
        *[("car-7", True), ("Car-7", True), ("CAR-7", True), ("a", True), ("a:b.c_d-e", True), ("x" * 128, True)],
        *[("-car-7", False), ("car-7-", False), (":car", False), ("car.", False), ("_", False), ("x" * 129, False)],
        *[("", False), ("car 7", False), ("car/7", False), ("cär-7", False)],
    ],
)
def test_registration_id_examples(registration_id: str, valid: bool) -> None:
    assert dps.valid_registration_id(registration_id) is valid


async def test_registration_records_are_keyed_case_insensitively() -> None:
    """One DPS registration per case-insensitive id in the local DPS itself: a registration of `car-7` is the one
    `CAR-7` and `Car-7` find (the allocation request names its current device id, an operation started as one case
    answers a poll in another), and `car-8` is another."""
    group = EnrollmentGroup("keys", "symmetricKey", "http://webhook", ("hub-a",), primary_key="a2V5")
    service = LocalDps("0ne00000001", [group], {})
    attested = Attested(group, {})
    service.assignments[dps.registration_key("car-7")] = Assignment("hub-a", "car-7", "2026-01-01", "symmetricKey")
    for variant in ("car-7", "CAR-7", "Car-7"):
        request = await service.allocation_request(attested, dps.Registration(variant, None))
        context = request["deviceRuntimeContext"]
        assert (context["registrationId"], context["currentDeviceId"]) == (variant, "car-7")
    other = await service.allocation_request(attested, dps.Registration("car-8", None))
    assert "currentDeviceId" not in other["deviceRuntimeContext"]

    operation = Operation("4.op", "car-7", result={"operationId": "4.op", "status": "assigned"})
    service._operations[operation.operation_id] = operation
    poll = dps.Request("status", "r1", operation.operation_id)
    assert (await service._request("CAR-7", attested, poll, b""))[0] == 200
    assert (await service._request("car-8", attested, poll, b""))[0] == 404


@given(st.binary(min_size=16, max_size=64), ids)
def test_the_derived_key_is_hmac_sha256_of_the_registration_id(group: bytes, registration_id: str) -> None:
    group_key = base64.b64encode(group).decode()
    expected = base64.b64encode(hmac.new(group, registration_id.encode(), hashlib.sha256).digest()).decode()
    assert dps.derive_device_key(group_key, registration_id) == expected


@given(ids, st.binary(min_size=32, max_size=32))
def test_the_sdks_own_sas_token_verifies_and_only_for_its_registration(registration_id: str, key: bytes) -> None:
    device_key = base64.b64encode(key).decode()
    resource = f"0ne00000001/registrations/{registration_id}"
    token = str(sastoken.RenewableSasToken(resource, SymmetricKeySigningMechanism(device_key), ttl=3600))
    assert dps.verify_sas(token, device_key, resource, time.time())
    assert not dps.verify_sas(token, device_key, resource, time.time() + 7200)  # expired
    assert not dps.verify_sas(token, device_key, resource + "x", time.time())  # another registration
    other = base64.b64encode(bytes(b ^ 1 for b in key)).decode()
    assert not dps.verify_sas(token, other, resource, time.time())  # another key


@given(st.text(max_size=200))
def test_any_password_is_refused_or_verified_never_raises(password: str) -> None:
    assert dps.verify_sas(password, base64.b64encode(b"k" * 32).decode(), "scope/registrations/car", 0) in {
        True,
        False,
    }


def test_a_provisioning_file_gives_the_cars_configs(tmp_path: Path) -> None:
    """simulator --provision: relative paths resolve against the file; a group key derives the device key."""
    (tmp_path / "ca.pem").write_text("PEM")
    group_key = base64.b64encode(b"g" * 32).decode()
    entries = [
        {
            "provisioningHost": "127.0.0.9",
            "idScope": "0ne1",
            "registrationId": "car-1",
            "attestation": {"type": "x509", "certificate": "car-1.pem", "key": "car-1.key"},
            "serverVerificationCert": "ca.pem",
            "payload": {"vin": "V1"},
        },
        {
            "provisioningHost": "127.0.0.9",
            "idScope": "0ne1",
            "registrationId": "car-2",
            "attestation": {"type": "symmetricKey", "groupKey": group_key},
        },
    ]
    path = tmp_path / "fleet.json"
    path.write_bytes(orjson.dumps(entries))
    x509_car, sas_car = load_provisioning_file(path)
    assert (x509_car.certificate, x509_car.key) == (tmp_path / "car-1.pem", tmp_path / "car-1.key")
    assert (x509_car.server_verification_cert, x509_car.payload, x509_car.attestation) == ("PEM", {"vin": "V1"}, "x509")
    assert sas_car.device_key == dps.derive_device_key(group_key, "car-2")
    assert sas_car.attestation == "symmetricKey"
    with pytest.raises(ValueError, match="attestation type"):
        ProvisioningConfig.from_json({**entries[1], "attestation": {"type": "tpm"}})
    with pytest.raises(ValueError, match="not a provisioning config"):
        ProvisioningConfig.from_json({"idScope": "x"})


def _leaf_der(pki: DevicePki, cn: str, directory: Path, **validity: dt.datetime) -> bytes:
    files = issue_device_certificate(pki, cn, directory, **validity)
    return x509.load_pem_x509_certificate(files.cert_file.read_bytes()).public_bytes(serialization.Encoding.DER)


def test_x509_attestation_takes_the_issuing_groups_valid_certificate_for_its_own_id(tmp_path: Path) -> None:
    pki, other = device_pki("brand"), device_pki("other")
    groups = [
        EnrollmentGroup("other", "x509", "http://x", (), ca_pem=other.intermediate_pem),
        EnrollmentGroup("brand", "x509", "http://x", (), ca_pem=pki.intermediate_pem),
    ]
    now = dt.datetime.now(dt.UTC)
    attested = x509_attestation(_leaf_der(pki, "car-1", tmp_path), "car-1", groups, now)
    assert attested.group.group_id == "brand"
    assert attested.runtime["x509"]["subjectName"] == "CN=car-1"
    # the registration id is case-insensitive to DPS, so a CN differing from it only in case names the same
    # registration (DPS passes the subject on as it is; the allocation function decides whether it admits it)
    upper = x509_attestation(_leaf_der(pki, "CAR-1", tmp_path), "car-1", groups, now)
    assert upper.runtime["x509"]["subjectName"] == "CN=CAR-1"
    refusals = {
        "no certificate": (None, "car-1", groups),
        "another registration id": (_leaf_der(pki, "car-2", tmp_path), "car-1", groups),
        "expired": (
            _leaf_der(pki, "car-1", tmp_path, not_before=now - dt.timedelta(days=9), not_after=now - dt.timedelta(1)),
            "car-1",
            groups,
        ),
        "not yet valid": (
            _leaf_der(pki, "car-1", tmp_path, not_before=now + dt.timedelta(days=1), not_after=now + dt.timedelta(9)),
            "car-1",
            groups,
        ),
        "a CA no group holds": (_leaf_der(device_pki("stranger"), "car-1", tmp_path), "car-1", groups),
        "the root, not the registered intermediate": (
            _leaf_der(pki, "car-1", tmp_path),
            "car-1",
            [EnrollmentGroup("root", "x509", "http://x", (), ca_pem=pki.root_pem)],
        ),
    }
    for case, (leaf, registration_id, candidates) in refusals.items():
        with pytest.raises(Refused) as refused:
            x509_attestation(leaf, registration_id, candidates, now)
        assert (refused.value.status, refused.value.error_code) == (401, dps.UNAUTHORIZED), case


def test_sas_attestation_finds_the_group_whose_derived_key_signed() -> None:
    keys = [base64.b64encode(bytes([n]) * 32).decode() for n in (1, 2)]
    groups = [EnrollmentGroup(f"g{n}", "symmetricKey", "http://x", (), primary_key=k) for n, k in enumerate(keys)]
    resource = "scope/registrations/car-1"
    token = sastoken.RenewableSasToken(resource, SymmetricKeySigningMechanism(dps.derive_device_key(keys[1], "car-1")))
    assert sas_attestation(str(token), "scope", "car-1", groups, time.time()).group.group_id == "g1"
    for scope, registration_id in (("other", "car-1"), ("scope", "car-2")):
        with pytest.raises(Refused):
            sas_attestation(str(token), scope, registration_id, groups, time.time())
