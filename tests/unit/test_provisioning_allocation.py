"""DPS custom allocation (shared/provisioning): the request parser, the rules, the hub choice, idempotency."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.containers import VEHICLES, partition_keys
from shared.errors import ConfigurationError
from shared.provisioning.allocation import Allocation, AllocationRequest, Allocator, Refusal, parse_request, subject_cn
from shared.provisioning.model import Stamp, choose_hub, parse_stamps
from shared.stores.memory import MemoryDocumentStore

EU1, EU2, US1 = "hub-eu-1.azure-devices.net", "hub-eu-2.azure-devices.net", "hub-us-1.azure-devices.net"
STAMPS = (Stamp(EU1, "eu"), Stamp(EU2, "eu"), Stamp(US1, "us"))
T0 = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


def request(
    rid: str = "car-001", kind: str = "symmetricKey", subject: str | None = None, hubs: list[str] | None = None
) -> dict[str, Any]:
    context: dict[str, Any] = {"registrationId": rid, "payload": {"modelId": "x"}}
    if kind == "x509":
        context["x509"] = {"subjectName": subject if subject is not None else f"CN={rid}", "sha1Thumbprint": "AB"}
    else:
        context["symmetricKey"] = {}
    return {
        "enrollmentGroup": {"enrollmentGroupId": "contoso"},
        "deviceRuntimeContext": context,
        "linkedHubs": hubs if hubs is not None else [EU1, EU2, US1],
    }


def vehicle(
    rid: str = "car-001", attestation: str = "symmetricKey", status: str = "preregistered", **extra: Any
) -> dict[str, Any]:
    return {
        "id": rid,
        "vehicleId": rid,
        "type": "vehicle",
        "brandId": "contoso",
        "fleetId": "berlin",
        "provisioning": {
            "attestation": attestation,
            "region": "eu",
            "status": status,
            "hub": None,
            "preregisteredAt": "2026-12-01T07:00:00.000Z",
            **extra,
        },
    }


async def world(*docs: dict[str, Any]) -> tuple[MemoryDocumentStore, Allocator]:
    store = MemoryDocumentStore(partition_keys())
    for doc in docs:
        await store.create(VEHICLES, doc)
    return store, Allocator(store, STAMPS, clock=lambda: T0)


async def allocate(allocator: Allocator, body: dict[str, Any]) -> Allocation | Refusal:
    parsed = parse_request(orjson.dumps(body))
    assert isinstance(parsed, AllocationRequest), parsed
    return await allocator.allocate(parsed)


# --- the parser -------------------------------------------------------------------------------------------------


def test_parses_symmetric_key_and_x509_requests() -> None:
    sym = parse_request(orjson.dumps(request()))
    assert sym == AllocationRequest("car-001", "symmetricKey", None, (EU1, EU2, US1))
    x509 = parse_request(orjson.dumps(request(kind="x509", subject="CN=car-001, O=Contoso, C=DE")))
    assert isinstance(x509, AllocationRequest)
    assert x509.attestation == "x509"
    assert x509.subject_cn == "car-001"
    nested = request(kind="x509")
    nested["deviceRuntimeContext"]["x509"] = {"clientCertificateInfo": {"subjectName": "CN=car-001"}}
    assert parse_request(orjson.dumps(nested)) == AllocationRequest("car-001", "x509", "car-001", (EU1, EU2, US1))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"linkedHubs": ["a"]}',
        orjson.dumps({**request(), "linkedHubs": []}),
        orjson.dumps({**request(), "linkedHubs": [1]}),
        orjson.dumps({**request(), "deviceRuntimeContext": {"registrationId": "car 1", "symmetricKey": {}}}),
        orjson.dumps({**request(), "deviceRuntimeContext": {"registrationId": "car-1"}}),
        b"{" * 100_000,
    ],
)
def test_bad_requests_are_malformed_refusals(body: bytes) -> None:
    refusal = parse_request(body)
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "malformed"
    assert refusal.client_error


def test_tpm_is_refused_as_unsupported() -> None:
    body = {**request(), "deviceRuntimeContext": {"registrationId": "car-1", "tpm": {"endorsementKey": "x"}}}
    refusal = parse_request(orjson.dumps(body))
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "unsupported_attestation"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=24), inner, max_size=4),
    max_leaves=20,
)
shaped = st.fixed_dictionaries(
    {
        "deviceRuntimeContext": st.fixed_dictionaries(
            {"registrationId": json_values | st.text(max_size=12)},
            optional={"x509": json_values, "symmetricKey": json_values, "tpm": json_values},
        ),
        "linkedHubs": json_values | st.lists(st.text(max_size=30), max_size=3),
    }
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, shaped))
def test_any_json_is_a_request_or_a_typed_refusal(value: Any) -> None:
    for body in (value, orjson.dumps(value)):
        assert isinstance(parse_request(body), AllocationRequest | Refusal)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_a_request_or_a_typed_refusal(body: bytes) -> None:
    assert isinstance(parse_request(body), AllocationRequest | Refusal)


def test_subject_cn() -> None:
    assert subject_cn("CN=car-001") == "car-001"
    assert subject_cn("O=Contoso, CN = car-001") == "car-001"
    assert subject_cn("O=Contoso") is None


# --- stamps and the hub choice ----------------------------------------------------------------------------------


def test_stamps_parse_and_default_to_the_one_hub() -> None:
    raw = orjson.dumps([{"hostName": EU1, "region": "eu"}, {"hostName": US1, "region": "us"}]).decode()
    assert parse_stamps(raw, "ignored") == (Stamp(EU1, "eu"), Stamp(US1, "us"))
    assert parse_stamps(None, "One.azure-devices.net") == (Stamp("one.azure-devices.net", "*"),)
    for bad in ("{", "{}", '[{"hostName": 1, "region": "eu"}]', '[{"hostName": "h"}]'):
        with pytest.raises(ConfigurationError):
            parse_stamps(bad, None)


def test_hub_is_in_the_cars_region_stable_and_sticky() -> None:
    spread = {choose_hub(f"car-{i}", [EU1, EU2, US1], STAMPS, "eu", None) for i in range(50)}
    assert spread == {EU1, EU2}  # both EU hubs are used, never the US one
    assert choose_hub("car-7", [US1, EU2, EU1], STAMPS, "eu", None) == choose_hub(
        "car-7", [EU1, EU2], STAMPS, "eu", None
    )
    assert choose_hub("car-7", [EU1, EU2], STAMPS, "eu", EU2) == EU2  # stays where it is while that is allowed
    assert choose_hub("car-7", [EU1], STAMPS, "eu", EU2) == EU1  # moved when its hub is no longer linked
    assert choose_hub("car-7", [US1], STAMPS, "eu", None) is None  # never outside its region
    assert choose_hub("car-7", [US1.upper()], (Stamp(US1, "*"),), "eu", None) == US1


# --- the rules --------------------------------------------------------------------------------------------------


async def test_admits_a_preregistered_car_and_records_its_hub() -> None:
    store, allocator = await world(vehicle())
    answer = await allocate(allocator, request())
    assert isinstance(answer, Allocation)
    assert answer.hub in (EU1, EU2)
    response = answer.response()
    assert response["iotHubHostName"] == answer.hub
    twin = response["initialTwin"]
    assert twin["tags"] == {"brandId": "contoso", "fleetId": "berlin"}
    desired = twin["properties"]["desired"]
    assert desired["brand"]["brandId"] == "contoso"
    assert isinstance(desired["brand"]["calendar"], bool)
    assert set(desired["consent"]["categories"])
    assert all(set(c) == {"collected", "basis", "granted"} for c in desired["consent"]["categories"].values())
    stored = await store.read(VEHICLES, "car-001", "car-001")
    assert stored is not None
    assert stored.document["provisioning"] == {
        **vehicle()["provisioning"],
        "status": "assigned",
        "hub": answer.hub,
        "assignedAt": "2026-12-01T08:00:00.000Z",
    }


async def test_asked_twice_same_answer_nothing_written() -> None:
    store, allocator = await world(vehicle())
    first = await allocate(allocator, request())
    etag = (await store.read(VEHICLES, "car-001", "car-001")).etag  # type: ignore[union-attr]
    allocator.clock = lambda: T0 + dt.timedelta(hours=1)
    second = await allocate(allocator, request())
    assert first == second
    assert (await store.read(VEHICLES, "car-001", "car-001")).etag == etag  # type: ignore[union-attr]


async def test_reprovisioning_to_another_hub_updates_it() -> None:
    store, allocator = await world(vehicle(status="assigned", hub=EU2, assignedAt="2026-12-01T07:30:00.000Z"))
    answer = await allocate(allocator, request(hubs=[EU1, US1]))
    assert isinstance(answer, Allocation)
    assert answer.hub == EU1
    doc = (await store.read(VEHICLES, "car-001", "car-001")).document  # type: ignore[union-attr]
    assert doc["provisioning"]["hub"] == EU1
    assert doc["provisioning"]["assignedAt"] == "2026-12-01T08:00:00.000Z"


async def test_x509_car_needs_its_own_certificate() -> None:
    _, allocator = await world(vehicle(attestation="x509"))
    assert isinstance(await allocate(allocator, request(kind="x509")), Allocation)
    refusal = await allocate(allocator, request(kind="x509", subject="CN=car-002"))
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "attestation_mismatch"
    refusal = await allocate(allocator, request(kind="symmetricKey"))
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "attestation_mismatch"


@pytest.mark.parametrize(
    ("docs", "reason"),
    [
        ((), "unknown"),
        (({"id": "car-001", "vehicleId": "car-001", "type": "vehicle"},), "unknown"),  # registered directly
        (({"id": "car-001", "vehicleId": "car-001", "type": "erased", "erasedAt": "x", "ttl": 1},), "unknown"),
        ((vehicle(status="revoked", revokedAt="2026-12-01T07:50:00.000Z"),), "revoked"),
        ((vehicle(attestation="x509"),), "attestation_mismatch"),
    ],
)
async def test_refusals_write_nothing(docs: tuple[dict[str, Any], ...], reason: str) -> None:
    store, allocator = await world(*docs)
    before = [await store.read(VEHICLES, "car-001", "car-001")]
    refusal = await allocate(allocator, request())
    assert isinstance(refusal, Refusal)
    assert refusal.reason == reason
    assert not refusal.client_error
    assert [await store.read(VEHICLES, "car-001", "car-001")] == before


async def test_a_registration_id_differing_from_the_car_only_in_case_is_refused_and_writes_nothing() -> None:
    """DPS takes registration ids case-insensitively (REST "Runtime Registration - Register Device"), so a device
    registering as `CAR-001` is DPS's registration of the pre-registered `car-001`. Which case DPS then passes here
    and gives the device id on the hub is not documented; IoT Hub ids are case-sensitive, so admitting the variant
    could put a second identity `CAR-001` beside `car-001`'s, or one no vehicle document names. The safe behaviour:
    refused with its own reason (the firmware must register with the vehicle id), nothing written."""
    store, allocator = await world(vehicle())
    before = await store.read(VEHICLES, "car-001", "car-001")
    for variant in ("CAR-001", "Car-001"):
        refusal = await allocate(allocator, request(variant))
        assert isinstance(refusal, Refusal)
        assert refusal.reason == "registration_id_case"
        assert "car-001" in refusal.detail
        assert not refusal.client_error
    assert await store.read(VEHICLES, "car-001", "car-001") == before
    # an unknown mixed-case id is just unknown
    refusal = await allocate(allocator, request("CAR-999"))
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "unknown"


async def test_a_car_pre_registered_under_a_mixed_case_id_still_provisions_with_exactly_that_id() -> None:
    """Before vehicle ids for DPS had to be lowercase a car could be pre-registered as `Car-002`: it keeps
    provisioning under exactly that id (its device id is that id), its case variants are refused."""
    _, allocator = await world(vehicle("Car-002"))
    assert isinstance(await allocate(allocator, request("Car-002")), Allocation)
    refusal = await allocate(allocator, request("car-002"))
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "unknown"


async def test_of_two_cars_pre_registered_in_different_cases_only_the_lowercase_one_provisions() -> None:
    """Before vehicle ids for DPS had to be lowercase, `car-050` and `CAR-050` could both be pre-registered: to DPS
    they are one registration, so admitting both would put two cars on one identity. The lowercase one provisions,
    the other is refused as a case variant and its document is left as it was."""
    store, allocator = await world(vehicle("car-050"), vehicle("CAR-050"))
    before = await store.read(VEHICLES, "CAR-050", "CAR-050")
    refusal = await allocate(allocator, request("CAR-050"))
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "registration_id_case"
    assert await store.read(VEHICLES, "CAR-050", "CAR-050") == before
    assert isinstance(await allocate(allocator, request("car-050")), Allocation)


async def test_no_hub_in_the_region_is_refused() -> None:
    store, allocator = await world(vehicle())
    refusal = await allocate(allocator, request(hubs=[US1]))
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "no_hub_in_region"
    doc = (await store.read(VEHICLES, "car-001", "car-001")).document  # type: ignore[union-attr]
    assert doc["provisioning"]["status"] == "preregistered"
    assert doc["provisioning"]["hub"] is None
