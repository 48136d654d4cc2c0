"""The local IoT Hub refuses twin patches that would leave a section over IoT Hub's limits ("Device twin size":
tags 8 KB, desired and reported properties 32 KB each, `$version` / `$metadata` not counted; "Tags and properties
format": objects nested at most 10 levels), measured on the section as the patch would leave it, refusing the whole
patch: the service API answers 400 ArgumentInvalid, a device's reported patch gets twin response status 400."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from devstack.eventhubs import EventHubsNamespace
from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import DeviceRegistry, identity_key
from devstack.iothub.topics import TwinRequest
from devstack.iothub.twin import (
    DESIRED_MAX_BYTES,
    MAX_DEPTH,
    REPORTED_MAX_BYTES,
    TAGS_MAX_BYTES,
    Twin,
    TwinLimitError,
    check_tags,
    section_size,
    too_deep,
)
from shared.collection.service import POLICY_MAX_BYTES
from shared.commands.service import MODULE_COMMANDS_MAX_BYTES
from shared.requests.module_replies import REPLIES_MAX_BYTES
from shared.settings import declared
from tests.unit.test_iothub_twin_keys import service  # noqa: F401 - the same local hub and service API


def filled(before: dict[str, Any], key: str, total: int) -> dict[str, Any]:
    """A patch {key: {p0: "xx…", p1: …}} after which `before` merged with it takes exactly `total` bytes of compact
    JSON, in strings of at most 4,000 characters (IoT Hub keeps a string value up to 4 KB)."""
    count = 1
    while True:
        parts = {f"p{i}": "x" * 4000 for i in range(count - 1)}
        parts[f"p{count - 1}"] = ""
        fill = total - len(orjson.dumps({**before, key: parts}))
        if fill <= 4000:
            assert fill >= 0
            parts[f"p{count - 1}"] = "x" * fill
            return {key: parts}
        count += 1


def sized(total: int, key: str = "blob") -> dict[str, Any]:
    """A one-property section whose compact JSON takes exactly `total` bytes."""
    return filled({}, key, total)


def nested(levels: int) -> dict[str, Any]:
    """A section whose deepest object sits `levels` levels below it (the docs' valid example: 10)."""
    value: dict[str, Any] = {"property": "value"}
    for _ in range(levels - 1):
        value = {"level": value}
    return {"one": value}


def test_size_is_the_compact_json_without_the_hubs_own_elements() -> None:
    assert section_size(sized(DESIRED_MAX_BYTES)) == DESIRED_MAX_BYTES
    with_version = {**sized(1000), "$version": 7, "$metadata": {"$lastUpdated": "2026-01-01T00:00:00Z"}}
    assert section_size(with_version) == 1000
    assert section_size({"é": "日本"}) == len('{"é":"日本"}'.encode())  # UTF-8 bytes, not characters


def test_size_is_never_less_than_the_docs_count() -> None:
    """Keys plus values, a number 8 bytes, a boolean 4: more than the JSON for small numbers."""
    numbers = {"n": list(range(10))}  # JSON {"n":[0,1,...,9]}: 27 bytes; the docs' count: 1 + 10 * 8
    assert section_size(numbers) == 81
    assert section_size({"a": True, "b": False}) == max(len(b'{"a":true,"b":false}'), 2 + 4 + 4)


def test_depth_follows_the_docs_example() -> None:
    assert not too_deep(nested(MAX_DEPTH))
    assert too_deep(nested(MAX_DEPTH + 1))
    assert too_deep({"a": [[[[[[[[[[{"b": 1}]]]]]]]]]]})  # arrays count as levels (IoT Edge hub's validator)
    assert not too_deep({"a": [[[[[[[[[1]]]]]]]]]})


def test_desired_up_to_32_kb_is_kept_beyond_refused_whole() -> None:
    twin = Twin()
    twin.patch_desired({"agenda": {"events": []}})
    before = (twin.document(), twin.version, twin.etag)
    # the merged section, not the patch: this patch alone fits, with what is there it does not
    patch = filled(dict(twin.desired), "policy", DESIRED_MAX_BYTES + 1)
    assert len(orjson.dumps(patch)) < DESIRED_MAX_BYTES
    with pytest.raises(TwinLimitError, match="32768"):
        twin.patch_desired(patch)
    assert (twin.document(), twin.version, twin.etag) == before
    twin.patch_desired(filled(dict(twin.desired), "policy", DESIRED_MAX_BYTES))
    assert section_size(twin.desired) == DESIRED_MAX_BYTES


def test_a_patch_that_deletes_makes_room() -> None:
    twin = Twin()
    twin.patch_desired(sized(DESIRED_MAX_BYTES - 100, "old"))
    with pytest.raises(TwinLimitError):
        twin.patch_desired(sized(200, "new"))
    twin.patch_desired({"old": None, **sized(200, "new")})
    assert list(twin.desired) == ["new"]


def test_reported_up_to_32_kb_is_kept_beyond_refused_whole() -> None:
    twin = Twin()
    twin.patch_reported(sized(REPORTED_MAX_BYTES))
    before = (twin.document(), twin.version)
    with pytest.raises(TwinLimitError, match="reported"):
        twin.patch_reported({"more": 1})
    assert (twin.document(), twin.version) == before


def test_a_too_deep_patch_is_refused_whole() -> None:
    twin = Twin()
    twin.patch_desired({"shallow": 1, **nested(MAX_DEPTH)})
    before = twin.document()
    with pytest.raises(TwinLimitError, match="depth"):
        twin.patch_desired({"shallow": 2, **nested(MAX_DEPTH + 1)})
    with pytest.raises(TwinLimitError, match="depth"):
        twin.patch_reported({"ok": 1, "deep": nested(MAX_DEPTH)})  # one level more below "deep"
    assert twin.document() == before


def test_tags_up_to_8_kb() -> None:
    check_tags(sized(TAGS_MAX_BYTES))
    check_tags({**sized(TAGS_MAX_BYTES), "gone": None})  # a deletion takes no room
    with pytest.raises(TwinLimitError, match="tags"):
        check_tags(sized(TAGS_MAX_BYTES + 1))
    with pytest.raises(TwinLimitError, match="depth"):
        check_tags(nested(MAX_DEPTH + 1))


async def test_a_devices_reported_patch_over_the_limit_is_answered_400() -> None:
    hub = LocalIoTHub(DeviceRegistry("localhost"), EventHubsNamespace())
    body = orjson.dumps(sized(REPORTED_MAX_BYTES + 1))
    status, answer, version = await hub._twin_request(
        "car-001", TwinRequest("PATCH", "/properties/reported/", "1"), body
    )
    assert (status, version) == (400, None)
    assert orjson.loads(answer)["errorCode"] == 400004
    assert hub.twin_document("car-001")["reported"] == {"$version": 1}
    assert hub.counters["twin:refused"] == 1


async def test_the_hubs_own_patch_desired_over_the_limit_pushes_nothing() -> None:
    hub = LocalIoTHub(DeviceRegistry("localhost"), EventHubsNamespace())
    with pytest.raises(TwinLimitError):
        await hub.patch_desired("car-001", sized(DESIRED_MAX_BYTES + 1))
    assert hub.twin_document("car-001")["desired"] == {"$version": 1}
    assert hub.counters["twin:desired"] == 0


async def refused(session: aiohttp.ClientSession, url: str, body: Any) -> str:
    async with session.patch(url, data=orjson.dumps(body), headers={"If-Match": '"*"'}) as resp:
        assert resp.status == 400
        assert resp.headers["iothub-errorcode"] == "ArgumentInvalid"
        answer: dict[str, Any] = await resp.json()
    message: str = answer["Message"]
    assert message.startswith("ErrorCode:ArgumentInvalid;")
    return message


async def test_the_service_api_refuses_a_patch_over_the_limits(service: tuple[LocalIoTHub, str]) -> None:  # noqa: F811
    hub, url = service
    module = f"{url}/twins/car-001/modules/carlink"
    async with aiohttp.ClientSession() as session:
        first = {"properties": {"desired": sized(20_000, "collection")}}
        async with session.patch(module, data=orjson.dumps(first)) as resp:
            assert resp.status == 200
        too_much = {"properties": {"desired": sized(13_000, "agenda")}}  # 20 KB + 13 KB: over 32 KB together
        assert "32768" in await refused(session, module, too_much)
        assert "depth" in await refused(session, module, {"properties": {"desired": nested(MAX_DEPTH + 1)}})
        device = f"{url}/twins/car-001"
        assert "tags" in await refused(session, device, {"tags": sized(TAGS_MAX_BYTES + 1), "properties": {
            "desired": {"ok": 1}}})  # fmt: skip
        await refused(session, device, {"properties": {"desired": sized(DESIRED_MAX_BYTES + 1)}})
        await refused(session, device, {"tags": "not an object", "properties": {"desired": {"ok": 1}}})
    assert list(hub.twins.get(identity_key("car-001", "carlink")).desired) == ["collection"]
    assert hub.twin_document("car-001")["desired"] == {"$version": 1}  # the tags' refusal kept the desired out too


def test_the_module_twins_budgets_share_its_32_kb() -> None:
    """What the backend writes into the Edge module's desired properties, each part at its bound (the agenda at the
    highest AGENDA_MAX_BYTES allowed), adds up to at most IoT Hub's 32 KB (the JSON around the parts aside)."""
    agenda = declared("AGENDA_MAX_BYTES").high
    assert agenda is not None
    assert POLICY_MAX_BYTES + agenda + MODULE_COMMANDS_MAX_BYTES + REPLIES_MAX_BYTES <= DESIRED_MAX_BYTES


def test_the_module_twins_worst_case_fits_iot_hubs_desired_properties() -> None:
    """The Edge module's twin holds the collection policy, the agenda, queued commands and replies: each has its
    own bound, and their sum, with the JSON around them (property names, braces, entries' keys: 130 B measured
    for full inboxes), stays within IoT Hub's 32 KB of desired properties."""
    from devstack.iothub.twin import DESIRED_MAX_BYTES
    from shared.collection.service import POLICY_MAX_BYTES
    from shared.commands.service import MODULE_COMMANDS_MAX_BYTES
    from shared.requests.module_replies import REPLIES_MAX_BYTES
    from shared.settings import SETTINGS

    [agenda] = [s for s in SETTINGS if s.name == "AGENDA_MAX_BYTES"]
    assert agenda.high is not None
    worst = POLICY_MAX_BYTES + int(agenda.high) + MODULE_COMMANDS_MAX_BYTES + REPLIES_MAX_BYTES + 130
    assert worst <= DESIRED_MAX_BYTES
