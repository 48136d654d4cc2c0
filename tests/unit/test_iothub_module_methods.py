"""Direct methods on a module (issue 16: how the backend reaches the car's Edge module): every gateway's
invoke_module_method, IoT Hub's module errors through the one mapping (404 ModuleNotFound is DeviceNotFoundError
like a missing device; 404103 is DeviceNotOnlineError), the real azure-iot-hub SDK's REST shape against a
loopback server, the memory gateway's scripted modules, and the module twin inbox's bounds."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.device_messages import canonical_time
from shared.errors import (
    DeviceNotFoundError,
    DeviceNotOnlineError,
    DeviceQueueFullError,
    DeviceTimeoutError,
    InvalidMethodCallError,
    IoTHubError,
    IoTHubPreconditionFailedError,
    MessageTooLargeError,
)
from shared.iothub.azure_gateway import AzureIoTHubGateway
from shared.iothub.gateway import MethodResult, ModuleTwin
from shared.iothub.hubs import MultiHubGateway
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.iothub.module_inbox import PUT_ATTEMPTS, ModuleInbox, drop
from shared.stores.memory import MemoryDocumentStore
from tests.iothub_support import FakeIoTHub
from tests.iothub_support import sdk_gateway as sdk_gateway_fixture

NOT_ONLINE = '{"Message":"{\\"errorCode\\":404103,\\"message\\":\\"Timed out waiting for device to connect.\\"}"}'
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
sdk_gateway = sdk_gateway_fixture  # the fixture (tests/iothub_support.py), under the name the tests take


class Refusal(Exception):
    """msrest's HttpOperationError as the gateway reads it: `.response` with status_code, headers, text."""

    def __init__(self, status: int, headers: dict[str, str], text: str) -> None:
        super().__init__(f"Operation returned an invalid status code {status}")
        self.response = SimpleNamespace(status_code=status, headers=headers, text=text)


class FakeModules:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str, Any, dict[str, Any]]] = []

    def invoke_method(self, device_id: str, module_id: str, request: Any, **config: Any) -> Any:
        self.calls.append((device_id, module_id, request, config))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def azure_with(modules: FakeModules) -> AzureIoTHubGateway:
    gateway = AzureIoTHubGateway("hub.azure-devices.net")
    gateway._manager = SimpleNamespace(protocol=SimpleNamespace(modules=modules, devices=None))
    return gateway


async def test_azure_sends_the_module_request_with_a_read_timeout_beyond_iot_hubs_wait() -> None:
    modules = FakeModules(SimpleNamespace(status=200, payload={"requestId": "r1"}))
    result = await azure_with(modules).invoke_module_method("car-001", "carlink", "reply", {"requestId": "r1"}, 0, 5)
    assert result == MethodResult(200, {"requestId": "r1"})
    [(device_id, module_id, request, config)] = modules.calls
    assert (device_id, module_id, request.method_name, request.payload) == ("car-001", "carlink", "reply",
                                                                          {"requestId": "r1"})  # fmt: skip
    assert (request.connect_timeout_in_seconds, request.response_timeout_in_seconds) == (0, 5)
    assert config["timeout"] > 5


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Refusal(404, {"iothub-errorcode": "DeviceNotOnline"}, NOT_ONLINE), DeviceNotOnlineError),
        (Refusal(404, {}, NOT_ONLINE), DeviceNotOnlineError),
        (Refusal(504, {"iothub-errorcode": "GatewayTimeout"}, "{}"), DeviceTimeoutError),
        (Refusal(404, {"iothub-errorcode": "ModuleNotFound"}, "{}"), DeviceNotFoundError),
        (Refusal(404, {"iothub-errorcode": "DeviceNotFound"}, "{}"), DeviceNotFoundError),
        (Refusal(429, {"iothub-errorcode": "ThrottlingException"}, "{}"), IoTHubError),
        (ConnectionError("reset by peer"), IoTHubError),
    ],
)
async def test_azure_maps_iot_hubs_module_method_errors(error: Exception, expected: type[Exception]) -> None:
    with pytest.raises(expected):
        await azure_with(FakeModules(error)).invoke_module_method("car-001", "carlink", "lock", {})


async def test_azure_refuses_bad_module_calls_before_calling_iot_hub() -> None:
    modules = FakeModules(SimpleNamespace(status=200, payload=None))
    with pytest.raises(InvalidMethodCallError):
        await azure_with(modules).invoke_module_method("car-001", "carlink", "lock", {}, response_timeout=4)
    assert modules.calls == []


async def test_the_sdk_posts_to_the_modules_method_path_once(sdk_gateway: AzureIoTHubGateway) -> None:
    FakeIoTHub.answers.append((200, {}, '{"status": 200, "payload": {"status": "succeeded"}}'))
    result = await sdk_gateway.invoke_module_method("car-001", "carlink", "lock", {"commandId": "c1"}, 5, 20)
    assert result == MethodResult(200, {"status": "succeeded"})
    FakeIoTHub.answers.extend([(404, {"iothub-errorcode": "ModuleNotFound"}, "{}")] * 3)
    with pytest.raises(DeviceNotFoundError):
        await sdk_gateway.invoke_module_method("car-002", "carlink", "unlock", {})
    (path, body), (missing, _) = FakeIoTHub.requests  # never a second unlock
    assert path.startswith("/twins/car-001/modules/carlink/methods?api-version=")
    assert missing.startswith("/twins/car-002/modules/carlink/methods?")
    assert body == {"methodName": "lock", "payload": {"commandId": "c1"}, "responseTimeoutInSeconds": 20,
                    "connectTimeoutInSeconds": 5}  # fmt: skip


async def test_memory_and_multi_hub_gateways_play_modules_apart_from_their_device() -> None:
    gateway = MemoryIoTHubGateway()
    with pytest.raises(DeviceNotFoundError):  # no such module identity
        await gateway.invoke_module_method("car-001", "carlink", "reply", {})
    gateway.on_module_method("car-001", "carlink", lambda method, payload: MethodResult(200, {"got": method}))
    multi = MultiHubGateway({"hub": gateway}, "hub", MemoryDocumentStore({"vehicles": "/vehicleId"}))
    assert await multi.invoke_module_method("car-001", "carlink", "reply", {"a": 1}) == MethodResult(
        200, {"got": "reply"}
    )
    with pytest.raises(DeviceNotOnlineError):  # the module is not the device: the device has no handler
        await gateway.invoke_method("car-001", "reply", {})
    gateway.offline.add("car-001/carlink")
    with pytest.raises(DeviceNotOnlineError):
        await gateway.invoke_module_method("car-001", "carlink", "reply", {})
    gateway.offline.clear()
    gateway.response_delay["car-001/carlink"] = 10
    with pytest.raises(DeviceTimeoutError):
        await gateway.invoke_module_method("car-001", "carlink", "lock", {}, response_timeout=5)
    await gateway.delete_device("car-001")
    with pytest.raises(DeviceNotFoundError):
        await gateway.invoke_module_method("car-001", "carlink", "reply", {})
    assert [(m.module_id, m.method, m.payload) for m in gateway.invoked] == [
        ("carlink", "reply", {"a": 1}),
        ("carlink", "lock", {}),
    ]


# --- the module twin inbox ---------------------------------------------------------------------------------------


def entry(queued: int, expires: int, body: str = "{}") -> dict[str, str]:
    return {"body": body, "queuedAt": canonical_time(NOW + dt.timedelta(seconds=queued)),
            "expiresAt": canonical_time(NOW + dt.timedelta(seconds=expires))}  # fmt: skip


async def test_the_inbox_keeps_the_newest_live_entries_within_its_bounds() -> None:
    gateway = MemoryIoTHubGateway()
    inbox = ModuleInbox(gateway, "replies", kept=3, max_bytes=2048)
    for n in range(5):
        at = NOW + dt.timedelta(seconds=n)
        await inbox.put("car-001", "carlink", f"r{n}", b'{"n":%d}' % n, at + dt.timedelta(hours=1), at)
    kept = gateway.module_desired[("car-001", "carlink")]["replies"]
    assert sorted(kept) == ["r2", "r3", "r4"]
    assert kept["r4"]["body"] == '{"n":4}'
    # an hour later the old ones are expired: dropped by the next write
    later = NOW + dt.timedelta(hours=2)
    await inbox.put("car-001", "carlink", "r9", b"{}", later + dt.timedelta(hours=1), later)
    assert sorted(gateway.module_desired[("car-001", "carlink")]["replies"]) == ["r9"]
    await inbox.remove("car-001", "carlink", "r9")
    assert gateway.module_desired[("car-001", "carlink")]["replies"] == {}
    with pytest.raises(MessageTooLargeError):  # one twin string value holds at most 4 KB
        await inbox.put("car-001", "carlink", "big", b"x" * 4097, later, later)

    strict = ModuleInbox(gateway, "commands", kept=2, max_bytes=2048, evict=False)
    await strict.put("car-001", "carlink", "c1", b"{}", NOW + dt.timedelta(hours=1), NOW)
    await strict.put("car-001", "carlink", "c2", b"{}", NOW + dt.timedelta(hours=1), NOW)
    with pytest.raises(DeviceQueueFullError):  # a command is refused, never one dropped unseen
        await strict.put("car-001", "carlink", "c3", b"{}", NOW + dt.timedelta(hours=1), NOW)
    assert sorted(gateway.module_desired[("car-001", "carlink")]["commands"]) == ["c1", "c2"]


def losing_every_race(gateway: MemoryIoTHubGateway, races: int) -> list[int]:
    """Play another writer that patches the module twin right after each of the first `races` reads (so the read's
    etag is stale when the inbox patches); the list counts the reads."""
    read, reads = gateway.get_module_twin, [0]

    async def get_module_twin(device_id: str, module_id: str) -> ModuleTwin:
        twin = await read(device_id, module_id)
        reads[0] += 1
        if reads[0] <= races:
            await gateway.patch_module_desired(device_id, module_id, {"agenda": {"n": reads[0]}})
        return twin

    gateway.get_module_twin = get_module_twin  # type: ignore[method-assign]
    return reads


async def test_the_inbox_writes_only_on_the_twin_it_read_and_reads_again_after_a_412() -> None:
    gateway = MemoryIoTHubGateway()
    stale = await gateway.get_module_twin("car-001", "carlink")
    await gateway.patch_module_desired("car-001", "carlink", {"agenda": {}}, stale.etag)
    with pytest.raises(IoTHubPreconditionFailedError):  # the memory gateway refuses a stale etag as IoT Hub does
        await gateway.patch_module_desired("car-001", "carlink", {"agenda": {"x": 1}}, stale.etag)

    reads = losing_every_race(gateway, races=2)
    inbox = ModuleInbox(gateway, "replies", kept=3, max_bytes=2048)
    await inbox.put("car-001", "carlink", "r1", b"{}", NOW + dt.timedelta(hours=1), NOW)
    assert reads == [3]  # two lost races, each read again, then written
    assert sorted(gateway.module_desired[("car-001", "carlink")]["replies"]) == ["r1"]


async def test_a_twin_that_keeps_changing_fails_the_put_with_a_typed_error_after_bounded_tries() -> None:
    gateway = MemoryIoTHubGateway()
    reads = losing_every_race(gateway, races=PUT_ATTEMPTS + 10)
    inbox = ModuleInbox(gateway, "commands", kept=2, max_bytes=2048, evict=False)
    with pytest.raises(IoTHubPreconditionFailedError, match="changed under each of") as failed:
        await inbox.put("car-001", "carlink", "c1", b"{}", NOW + dt.timedelta(hours=1), NOW)
    assert isinstance(failed.value, IoTHubError)  # transient: the caller retries later, as for any IoT Hub error
    assert reads == [PUT_ATTEMPTS]
    assert "commands" not in gateway.module_desired[("car-001", "carlink")]


entries = st.dictionaries(
    st.text("abc123-", min_size=1, max_size=8),
    st.one_of(
        st.builds(entry, st.integers(-100, 100), st.integers(-100, 100), st.text(max_size=50)),
        st.none(),
        st.integers(),
        st.text(max_size=5),
    ),
    max_size=12,
)


@given(entries, st.integers(0, 6), st.integers(0, 1000))
def test_drop_keeps_only_live_entries_newest_first_within_count_and_bytes(
    current: dict[str, Any], kept: int, max_bytes: int
) -> None:
    expired, evicted = drop(current, "new", NOW, kept, max_bytes)
    stay = {k: v for k, v in current.items() if k not in expired and k not in evicted and k != "new"}
    assert len(stay) <= kept
    assert sum(len(k) + len(orjson.dumps(v)) for k, v in stay.items()) <= max_bytes
    assert all(v["expiresAt"] > canonical_time(NOW) for v in stay.values())
    newest_dropped = max((current[k]["queuedAt"] for k in evicted), default=None)
    assert newest_dropped is None or all(v["queuedAt"] >= newest_dropped for v in stay.values())
