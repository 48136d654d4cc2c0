"""The local IoT Hub refuses twin property names IoT Hub refuses ("Tags and properties format": keys are at most
1 KB of UTF-8 and have no control character, '.', '$' or space; the service also refuses '#'), at any depth, from
the service API (400 ArgumentInvalid) and from a device's reported patch (twin response 400), refusing the whole
patch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devstack.eventhubs import EventHubsNamespace
from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import DeviceRegistry, identity_key
from devstack.iothub.service_api import ServiceApi
from devstack.iothub.topics import TwinRequest
from devstack.iothub.twin import Twin, TwinKeyError, check_keys
from shared.iothub.twin_values import KEY_MAX_BYTES, key_problem

BAD_KEYS = [
    "Vehicle.Speed",
    "$schema",
    "has space",
    "sharp#",
    "nul\x00",
    "tab\t",
    "del\x7f",
    "c1\x85",  # NEL, in C1
    "c1\x9f",
    "x" * (KEY_MAX_BYTES + 1),
    "é" * (KEY_MAX_BYTES // 2 + 1),  # 2 bytes each in UTF-8: 1026 bytes, 513 characters
]
GOOD_KEYS = ["speed", "Vehicle_Speed", "a-b:c/d@e", "ümlaut", "日本", "x" * KEY_MAX_BYTES, "1", "__t"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_refused_names(key: str) -> None:
    assert key_problem(key) is not None
    for patch in ({key: 1}, {"a": {"b": {key: 1}}}, {"a": [1, {"b": [{key: None}]}]}):
        with pytest.raises(TwinKeyError, match="Property or Tag name"):
            check_keys(patch)


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_accepted_names(key: str) -> None:
    assert key_problem(key) is None
    check_keys({key: {key: [{key: 1}]}})


def test_values_are_not_names() -> None:
    check_keys({"path": "Vehicle.Speed", "list": ["a.b", "$x", " "], "text": "$ . #"})


def test_the_hubs_own_top_level_names_are_ignored_elsewhere_refused() -> None:
    twin = Twin()
    pushed = twin.patch_desired({"a": 1, "$version": 99, "$metadata": {"$lastUpdated": "2026-01-01T00:00:00Z"}})
    assert pushed == {"a": 1, "$version": 2}
    assert twin.document()["desired"] == {"a": 1, "$version": 2}
    refused: list[dict[str, Any]] = [{"$other": 1}, {"a": {"$version": 1}}, {"a": {"$metadata": {}}}]
    for patch in refused:
        with pytest.raises(TwinKeyError):
            twin.patch_desired(patch)
    assert twin.document()["desired"] == {"a": 1, "$version": 2}


def test_a_refused_patch_changes_nothing() -> None:
    twin = Twin()
    twin.patch_desired({"collection": {"version": "v1"}})
    twin.patch_reported({"state": {"ok": True}})
    before = (twin.document(), twin.version, twin.etag)
    with pytest.raises(TwinKeyError, match=r"Vehicle\.Speed"):
        twin.patch_desired({"collection": {"version": "v2", "signals": {"Vehicle.Speed": {"rateHz": 1}}}})
    with pytest.raises(TwinKeyError):
        twin.patch_reported({"state": None, "sources": {"rejected": {"bad reason": 1}}})
    assert (twin.document(), twin.version, twin.etag) == before


async def test_a_devices_reported_patch_with_a_bad_name_is_answered_400() -> None:
    hub = LocalIoTHub(DeviceRegistry("localhost"), EventHubsNamespace())
    request = TwinRequest("PATCH", "/properties/reported/", "1")
    status, body, version = await hub._twin_request("car-001", request, b'{"ok": 1, "deep": [{"a.b": 1}]}')
    assert (status, version) == (400, None)
    answer = orjson.loads(body)
    assert answer["errorCode"] == 400004
    assert "a.b" in answer["message"]
    assert answer["trackingId"]
    assert answer["timestampUtc"].endswith("Z")
    assert hub.twin_document("car-001")["reported"] == {"$version": 1}  # nothing of it kept
    status, _, version = await hub._twin_request("car-001", TwinRequest("PATCH", "/properties/reported/", "2"),
                                                 b'{"ok": 1}')  # fmt: skip
    assert (status, version) == (204, 2)


async def test_the_hubs_own_patch_desired_refuses_and_pushes_nothing() -> None:
    hub = LocalIoTHub(DeviceRegistry("localhost"), EventHubsNamespace())
    with pytest.raises(TwinKeyError):
        await hub.patch_desired("car-001", {"signals": {"Vehicle.Speed": {}}})
    assert hub.twin_document("car-001")["desired"] == {"$version": 1}
    assert hub.counters["twin:desired"] == 0


@pytest.fixture
async def service() -> AsyncIterator[tuple[LocalIoTHub, str]]:
    hub = LocalIoTHub(DeviceRegistry("localhost"), EventHubsNamespace())
    hub.registry.provision("car-001")
    hub.registry.provision_module("car-001", "carlink")
    api = ServiceApi(hub)
    url = await api.start()
    try:
        yield hub, url
    finally:
        await api.stop()


async def refused(session: aiohttp.ClientSession, url: str, body: Any) -> dict[str, Any]:
    async with session.patch(url, data=orjson.dumps(body), headers={"If-Match": '"*"'}) as resp:
        assert resp.status == 400
        assert resp.headers["iothub-errorcode"] == "ArgumentInvalid"
        answer: dict[str, Any] = await resp.json()
    assert answer["Message"].startswith("ErrorCode:ArgumentInvalid;Property or Tag name has invalid characters.")
    assert answer["ExceptionMessage"].startswith("Tracking ID:")
    return answer


async def test_the_service_api_refuses_a_bad_name_in_a_desired_patch(service: tuple[LocalIoTHub, str]) -> None:
    hub, url = service
    policy = {"version": "v", "signals": {"Vehicle.Speed": {"rateHz": 1}}}
    async with aiohttp.ClientSession() as session:
        answer = await refused(session, f"{url}/twins/car-001/modules/carlink", {"properties": {"desired": {
            "collection": policy}}})  # fmt: skip
        assert "Vehicle.Speed" in answer["Message"]
        await refused(session, f"{url}/twins/car-001", {"properties": {"desired": {"agenda": {"a b": 1}}}})
        await refused(session, f"{url}/twins/car-001", {"tags": {"brand.name": "x"}, "properties": {"desired": {}}})
        await refused(session, f"{url}/twins/car-001", {"properties": {"desired": {"ok": 1, "x": [{"$ref": 1}]}}})
        async with session.patch(
            f"{url}/twins/car-001", data=orjson.dumps({"properties": {"desired": {"ok": 1}}})
        ) as resp:
            assert resp.status == 200
    assert hub.twins.get(identity_key("car-001", "carlink")).desired == {}
    assert hub.twin_document("car-001")["desired"] == {"ok": 1, "$version": 2}  # only the good patch counted


def test_a_null_inside_an_array_is_refused_whole_as_iot_hub_refuses_it() -> None:
    """IoT Hub replaces arrays whole and takes no null in one, nor a null property of an object in one (Azure/
    iotedge#4896): refused, nothing changed. A null outside arrays deletes, as before."""
    from devstack.iothub.twin import TwinError

    twin = Twin()
    twin.patch_desired({"agenda": {"events": [{"id": "a", "location": "Wolfsburg"}], "count": 1}})
    before = twin.desired
    for bad in ({"agenda": {"events": [{"id": "a", "location": None}]}}, {"list": [1, None]},
                {"deep": [{"inner": {"x": None}}]}, {"nested": [[None]]}):  # fmt: skip
        with pytest.raises(TwinError, match="null"):
            twin.patch_desired(bad)
        assert twin.desired == before
    twin.patch_desired({"agenda": {"count": None}})  # outside an array: deletes
    assert "count" not in twin.desired["agenda"]


@given(st.recursive(st.none() | st.integers() | st.text(max_size=3),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
                    max_leaves=12))  # fmt: skip
def test_leaving_nulls_out_of_arrays_leaves_none_and_keeps_the_rest(value: object) -> None:
    from shared.iothub.twin_values import null_in_array, without_nulls_in_arrays

    cleaned = without_nulls_in_arrays(value)
    assert not null_in_array(cleaned)
    if not null_in_array(value):
        assert cleaned == value


def test_a_string_value_over_4_kb_is_refused_whole() -> None:
    from devstack.iothub.twin import TwinError

    twin = Twin()
    twin.patch_desired({"ok": "x" * 4096})
    with pytest.raises(TwinError, match="string"):
        twin.patch_desired({"deep": [{"text": "é" * 2049}]})  # 4,098 bytes in UTF-8
    assert "deep" not in twin.desired


async def test_the_in_memory_gateway_refuses_what_iot_hub_refuses_as_the_azure_gateway_raises_it() -> None:
    """The unit tests' gateway applies the same rules (shared/iothub/twin_values.py) and raises what the Azure
    gateway raises for IoT Hub's 400, so a unit test meets a refused patch where Azure would."""
    from shared.errors import PermanentError
    from shared.iothub.memory_gateway import MemoryIoTHubGateway

    gateway = MemoryIoTHubGateway()
    for bad in ({"signals": {"Vehicle.Speed": {}}}, {"agenda": {"events": [{"location": None}]}},
                {"text": "x" * 4097}):  # fmt: skip
        with pytest.raises(PermanentError, match="ArgumentInvalid"):
            await gateway.patch_desired("car-1", bad)
        with pytest.raises(PermanentError, match="ArgumentInvalid"):
            await gateway.patch_module_desired("car-1", "carlink", bad)
    assert gateway.patches == []
    assert gateway.module_patches == []
    await gateway.patch_desired("car-1", {"agenda": {"events": [{"id": "a"}], "count": None}})
    assert gateway.patches
