"""Module identities on the real local IoT Hub (issue 16, "Locally"): the real `azure-iot-device` IoTHubModuleClient
(what the car's IoT Edge module runs) connects with a module connection string over MQTT/TLS, sends on
`devices/{id}/modules/{module}/messages/events`, reads and reports its module twin, receives desired patches and
direct methods; the backend reaches it through LocalIoTHubGateway and through the real azure-iot-hub service SDK
(`IoTHubRegistryManager`, pointed at the local service API) as it would reach IoT Hub, etag-conditional twin patches
(the module inbox's read-modify-write) included.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aiohttp
import orjson
import pytest
from azure.iot.device import Message, MethodRequest, MethodResponse
from azure.iot.device.aio import IoTHubModuleClient

from devstack.iothub.service_api import module_connection_string
from devstack.iothub.topics import input_filter
from shared.errors import DeviceNotFoundError, DeviceQueueFullError, IoTHubPreconditionFailedError, PermanentError
from shared.iothub.azure_gateway import AzureIoTHubGateway
from shared.iothub.gateway import IoTHubGateway, ModuleTwin
from shared.iothub.module_inbox import ModuleInbox
from tests.iothub_support import Hub, local_hub, wait_until  # noqa: F401 - the fixture

MODULE = "telematics"


def module_client(h: Hub, device_id: str, connection_string: str | None = None) -> IoTHubModuleClient:
    return IoTHubModuleClient.create_from_connection_string(
        connection_string or h.registry.provision_module(device_id, MODULE),
        server_verification_cert=h.ca_pem,
        connection_retry=False,
    )


def routed(h: Hub, hub_name: str) -> list[Any]:
    event_hub = h.hub.event_hubs.hub(hub_name)
    return [event for partition in event_hub.partitions for event in partition.events]


@pytest.fixture
def sdk_gateway(local_hub: Hub) -> AzureIoTHubGateway:  # noqa: F811
    """The Azure gateway on the real azure-iot-hub SDK, its REST client pointed at the local service API."""
    from azure.iot.hub import IoTHubRegistryManager  # type: ignore[import-untyped]

    manager = IoTHubRegistryManager.from_connection_string(
        f"HostName={local_hub.address};SharedAccessKeyName=service;SharedAccessKey=" + "a" * 44
    )
    manager.protocol.config.base_url = local_hub.service_url
    gateway = AzureIoTHubGateway(local_hub.address)
    gateway._manager = manager
    return gateway


async def test_a_module_sends_and_its_messages_carry_the_cars_device_id(local_hub: Hub) -> None:  # noqa: F811
    h = local_hub
    module = module_client(h, "car-edge-1")
    await module.connect()
    try:
        assert h.hub.connected("car-edge-1/telematics")
        assert not h.hub.connected("car-edge-1")  # the module is its own identity, not the device
        message = Message(b'{"v":1}', content_encoding="utf-8", content_type="application/json")  # type: ignore[no-untyped-call]
        message.custom_properties["type"] = "telemetry"
        await module.send_message(message)
        assert await wait_until(lambda: len(routed(h, "telemetry")) == 1)
    finally:
        await module.shutdown()
    [event] = routed(h, "telemetry")
    assert event.body == b'{"v":1}'
    assert event.properties == {"type": "telemetry"}
    assert event.system_properties["connection-device-id"] == "car-edge-1"
    assert event.system_properties["connection-module-id"] == MODULE
    assert event.system_properties["content-type"] == "application/json"
    assert '"scope":"module"' in event.system_properties["connection-auth-method"]
    # the car's device messages and its module's share a partition (one order per car)
    assert event.partition == h.hub.event_hubs.hub("telemetry").partition_for("car-edge-1")


async def test_module_twin_reported_desired_and_etag_through_both_gateways(
    local_hub: Hub,  # noqa: F811
    sdk_gateway: AzureIoTHubGateway,
) -> None:
    h, patches = local_hub, list[dict[str, Any]]()
    module = module_client(h, "car-edge-2")
    await module.connect()
    try:
        # the setter blocks until SUBACK, and the hub answers on this loop: set it from another thread
        await asyncio.to_thread(setattr, module, "on_twin_desired_properties_patch_received", patches.append)
        # the backend pushes a collection policy (LocalIoTHubGateway) ...
        await h.gateway.patch_module_desired("car-edge-2", MODULE, {"policy": {"speed": {"hz": 1}}})
        assert await wait_until(lambda: len(patches) == 1)
        assert patches[0] == {"policy": {"speed": {"hz": 1}}, "$version": 2}
        # ... and again through the azure-iot-hub SDK (update_module_twin with If-Match "*")
        await sdk_gateway.patch_module_desired("car-edge-2", MODULE, {"policy": {"speed": {"hz": 10}, "rpm": None}})
        assert await wait_until(lambda: len(patches) == 2)
        assert patches[1]["$version"] == 3

        await module.patch_twin_reported_properties({"policy": {"applied": 3}})
        twin = await module.get_twin()
        assert twin["desired"]["policy"] == {"speed": {"hz": 10}}
        assert twin["desired"]["$version"] == 3
        assert twin["reported"]["policy"] == {"applied": 3}
    finally:
        await module.shutdown()

    for gateway in (h.gateway, sdk_gateway):
        read = await gateway.get_module_twin("car-edge-2", MODULE)
        assert read == ModuleTwin("car-edge-2", MODULE, {"policy": {"speed": {"hz": 10}}}, {"policy": {"applied": 3}},
                                  3, 2, read.etag, 4)  # fmt: skip
        assert read.etag
    # the device twin is another twin: untouched
    assert h.hub.twin_document("car-edge-2")["desired"] == {"$version": 1}

    # etag semantics: an update naming a stale etag is refused 412, the current one is accepted
    url = f"{h.service_url}/twins/car-edge-2/modules/{MODULE}"
    body = orjson.dumps({"properties": {"desired": {"x": 1}}})
    async with aiohttp.ClientSession() as session:
        async with session.patch(url, data=body, headers={"If-Match": '"AAAAAAAAAAE="'}) as resp:
            assert (resp.status, resp.headers["iothub-errorcode"]) == (412, "PreconditionFailed")
        async with session.patch(url, data=body, headers={"If-Match": f'"{read.etag}"'}) as resp:
            assert resp.status == 200
            answer = await resp.json()
    assert (answer["version"], answer["properties"]["desired"]["x"], answer["moduleId"]) == (5, 1, MODULE)
    assert answer["etag"] != read.etag


@pytest.mark.parametrize("which", ["local", "sdk"])
async def test_two_concurrent_inbox_writes_cannot_both_pass_its_budget(
    local_hub: Hub,  # noqa: F811
    sdk_gateway: AzureIoTHubGateway,
    which: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each put reads the twin, decides what fits and patches with If-Match the etag it read: of two puts that read
    the same twin and together exceed the budget, the second patch is refused 412, re-reads and decides again."""
    h, car = local_hub, f"car-edge-race-{which}"
    h.registry.provision_module(car, MODULE)
    gateway: IoTHubGateway = h.gateway if which == "local" else sdk_gateway
    # a stale etag is refused (412 PreconditionFailed), through either gateway; the current one is taken
    read = await gateway.get_module_twin(car, MODULE)
    await gateway.patch_module_desired(car, MODULE, {"other": 1}, read.etag)
    with pytest.raises(IoTHubPreconditionFailedError):
        await gateway.patch_module_desired(car, MODULE, {"other": 2}, read.etag)
    assert (await gateway.get_module_twin(car, MODULE)).desired == {"other": 1}

    reads = 0
    both_read = asyncio.Barrier(2)
    get_module_twin = gateway.get_module_twin

    async def read_together(device_id: str, module_id: str) -> ModuleTwin:
        """The first two reads return only once both are done: both puts see the same twin."""
        nonlocal reads
        twin = await get_module_twin(device_id, module_id)
        reads += 1
        if reads <= 2:
            await both_read.wait()
        return twin

    monkeypatch.setattr(gateway, "get_module_twin", read_together)
    now = dt.datetime.now(dt.UTC)
    later = now + dt.timedelta(hours=1)
    body = b'{"pad":"' + b"x" * 100 + b'"}'  # two such entries are over 300 bytes, one is not
    commands = ModuleInbox(gateway, "commands", kept=8, max_bytes=300, evict=False)
    outcomes = await asyncio.gather(
        commands.put(car, MODULE, "c1", body, later, now), commands.put(car, MODULE, "c2", body, later, now),
        return_exceptions=True,
    )  # fmt: skip
    # THEN one landed, and the other, deciding again on what the first left, was refused (a command never evicts)
    assert sorted(type(o).__name__ for o in outcomes) == ["DeviceQueueFullError", "NoneType"]
    assert reads == 3
    held = (await get_module_twin(car, MODULE)).desired["commands"]
    assert len(held) == 1
    assert isinstance(outcomes[0 if "c2" in held else 1], DeviceQueueFullError)


async def test_twin_property_names_iot_hub_refuses_are_refused_on_both_sides(
    local_hub: Hub,  # noqa: F811
    sdk_gateway: AzureIoTHubGateway,
) -> None:
    """'.', '$', '#', spaces and control characters in a property name, at any depth: the whole patch is refused,
    400 ArgumentInvalid to the service SDKs, twin response 400 to the device SDK; good patches still go through."""
    from azure.iot.device.exceptions import ClientError, ServiceError

    h, patches = local_hub, list[dict[str, Any]]()
    module = module_client(h, "car-edge-keys")
    await module.connect()
    try:
        await asyncio.to_thread(setattr, module, "on_twin_desired_properties_patch_received", patches.append)
        bad = {"collection": {"version": "v1", "signals": {"Vehicle.Speed": {"rateHz": 1}}}}
        for gateway in (h.gateway, sdk_gateway):
            with pytest.raises(PermanentError, match="ArgumentInvalid"):
                await gateway.patch_module_desired("car-edge-keys", MODULE, bad)
        with pytest.raises((ServiceError, ClientError)):
            await module.patch_twin_reported_properties({"sources": {"rejected": {"bad reason": 1}}, "ok": 1})
        good = {"collection": {"version": "v1", "signals": [{"path": "Vehicle.Speed", "rateHz": 1}]}}
        await h.gateway.patch_module_desired("car-edge-keys", MODULE, good)
        assert await wait_until(lambda: len(patches) == 1)
        await module.patch_twin_reported_properties({"sources": {"rejected": {"bad_reason": 1}}})
        twin = await module.get_twin()
    finally:
        await module.shutdown()
    assert patches == [{**good, "$version": 2}]  # the refused patches reached nobody
    assert twin["desired"] == {**good, "$version": 2}
    assert twin["reported"] == {"sources": {"rejected": {"bad_reason": 1}}, "$version": 2}


async def test_direct_methods_reach_the_module(local_hub: Hub, sdk_gateway: AzureIoTHubGateway) -> None:  # noqa: F811
    h, seen = local_hub, list[MethodRequest]()
    module = module_client(h, "car-edge-3")
    await module.connect()

    async def on_method(request: MethodRequest) -> None:
        seen.append(request)
        await module.send_method_response(MethodResponse.create_from_method_request(request, 200, {"ok": True}))

    try:
        # the setter blocks until SUBACK, and the hub answers on this loop: set it from another thread
        await asyncio.to_thread(setattr, module, "on_method_request_received", on_method)
        registry = sdk_gateway._registry()
        from azure.iot.hub.models import CloudToDeviceMethod  # type: ignore[import-untyped]

        call = CloudToDeviceMethod(method_name="policy.flush", payload={"n": 1}, response_timeout_in_seconds=10)
        result = await asyncio.to_thread(registry.invoke_device_module_method, "car-edge-3", MODULE, call)
        assert (result.status, result.payload) == (200, {"ok": True})
        # the device itself has no connection: a method to the device is not the module's
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{h.service_url}/twins/car-edge-3/methods", data=b'{"methodName":"m"}') as resp,
        ):
            assert (resp.status, resp.headers["iothub-errorcode"]) == (404, "DeviceNotOnline")
    finally:
        await module.shutdown()
    assert [(r.name, r.payload) for r in seen] == [("policy.flush", {"n": 1})]


async def test_no_cloud_to_device_messages_for_modules(local_hub: Hub) -> None:  # noqa: F811
    """IoT Hub delivers none to a module; the SDK's input subscription is refused and the module keeps working."""
    h, inputs = local_hub, list[Message]()
    module = module_client(h, "car-edge-4")
    await module.connect()
    try:
        await asyncio.to_thread(setattr, module, "on_message_received", inputs.append)
        input_topic = input_filter("car-edge-4", MODULE).replace("#", "input1")
        assert not h.hub.endpoint.subscribed("car-edge-4/telematics", input_topic)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{h.service_url}/devices/car-edge-4/modules/{MODULE}/messages/deviceBound", data=b"{}") as r,
        ):
            assert (r.status, r.headers["iothub-errorcode"]) == (400, "ArgumentInvalid")
        # a device C2D message is the device's, never the module's
        await h.gateway.send_c2d("car-edge-4", b"{}", {"type": "agenda"})
        assert len(h.hub.pending("car-edge-4")) == 1
        await module.patch_twin_reported_properties({"alive": True})  # the connection survived the refusal
        assert h.hub.connected("car-edge-4/telematics")
    finally:
        await module.shutdown()
    assert inputs == []


async def test_module_identity_crud_through_the_sdk(local_hub: Hub, sdk_gateway: AzureIoTHubGateway) -> None:  # noqa: F811
    h = local_hub
    registry = sdk_gateway._registry()
    h.registry.provision("car-edge-5")
    key = "c2VjcmV0LWtleS1vZi10aGUtbW9kdWxlLTMyYnl0ZXM="
    created = await asyncio.to_thread(registry.create_module_with_sas, "car-edge-5", "m1", "iotEdge", key, key)
    assert (created.module_id, created.managed_by, created.authentication.symmetric_key.primary_key) == (
        "m1",
        "iotEdge",
        key,
    )
    # the connection string built from what IoT Hub returns connects; a wrong key is refused
    good = f"HostName={h.address};DeviceId=car-edge-5;ModuleId=m1;SharedAccessKey={key}"
    module = module_client(h, "car-edge-5", good)
    await module.connect()
    assert h.hub.connected("car-edge-5/m1")
    assert [m.module_id for m in await asyncio.to_thread(registry.get_modules, "car-edge-5")] == ["m1"]

    with pytest.raises(Exception) as exists:
        await asyncio.to_thread(registry.create_module_with_sas, "car-edge-5", "m1", "iotEdge", key, key)
    assert exists.value.response.status_code == 409  # type: ignore[attr-defined]

    await asyncio.to_thread(registry.delete_module, "car-edge-5", "m1")
    assert await wait_until(lambda: not h.hub.connected("car-edge-5/m1"))
    with pytest.raises(DeviceNotFoundError):
        await h.gateway.get_module_twin("car-edge-5", "m1")
    with pytest.raises(DeviceNotFoundError):
        await sdk_gateway.patch_module_desired("car-edge-5", "m1", {"x": 1})
    again = module_client(h, "car-edge-5", good)
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises CredentialError / ConnectionFailedError
        await asyncio.wait_for(again.connect(), 30)
    for client in (module, again):
        await asyncio.wait_for(client.shutdown(), 10)


async def test_a_process_outside_the_stack_gets_a_module_connection_string(local_hub: Hub) -> None:  # noqa: F811
    """What an Edge module under `make dev` does with the stack's LOCAL_IOTHUB_SERVICE_URL and IOTHUB_HOSTNAME."""
    h = local_hub
    with pytest.raises(LookupError):
        await module_connection_string(h.service_url, h.address, "car-edge-8", MODULE)
    h.registry.provision("car-edge-8")
    first = await module_connection_string(h.service_url, h.address, "car-edge-8", MODULE)
    assert first == await module_connection_string(h.service_url, h.address, "car-edge-8", MODULE)  # kept
    assert first == h.registry.module_connection_string("car-edge-8", MODULE)
    module = module_client(h, "car-edge-8", first)
    await module.connect()
    try:
        assert h.hub.connected("car-edge-8/telematics")
    finally:
        await module.shutdown()


async def test_a_wrong_key_and_the_devices_key_are_refused(local_hub: Hub) -> None:  # noqa: F811
    h = local_hub
    good = h.registry.provision_module("car-edge-6", MODULE)
    device_key = h.registry.device_key("car-edge-6")
    for connection_string in (
        good.replace(h.registry.module_key("car-edge-6", MODULE), "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk="),
        good.replace(h.registry.module_key("car-edge-6", MODULE), device_key),  # the device's key signs no module
        good.replace(f";ModuleId={MODULE}", ";ModuleId=other"),  # a module that does not exist
    ):
        client = module_client(h, "car-edge-6", connection_string)
        with pytest.raises(Exception):  # noqa: B017 - CredentialError / ConnectionFailedError
            await asyncio.wait_for(client.connect(), 30)
        await asyncio.wait_for(client.shutdown(), 10)
    assert not h.hub.connected("car-edge-6/telematics")
    assert not h.hub.connected("car-edge-6/other")


async def test_a_disabled_device_disables_its_module_and_deleting_it_deletes_the_module(local_hub: Hub) -> None:  # noqa: F811
    h = local_hub
    module = module_client(h, "car-edge-7")
    await module.connect()
    assert h.hub.connected("car-edge-7/telematics")

    assert await h.gateway.set_device_enabled("car-edge-7", False) is True
    assert await wait_until(lambda: not h.hub.connected("car-edge-7/telematics"))
    refused = module_client(h, "car-edge-7")
    with pytest.raises(Exception):  # noqa: B017 - CredentialError / ConnectionFailedError
        await asyncio.wait_for(refused.connect(), 30)

    assert await h.gateway.set_device_enabled("car-edge-7", True) is True
    back = module_client(h, "car-edge-7")
    await back.connect()
    assert h.hub.connected("car-edge-7/telematics")

    assert await h.gateway.delete_device("car-edge-7") is True
    assert await wait_until(lambda: not h.hub.connected("car-edge-7/telematics"))
    assert not h.registry.module_exists("car-edge-7", MODULE)
    with pytest.raises(DeviceNotFoundError):
        await h.gateway.patch_module_desired("car-edge-7", MODULE, {"x": 1})
    for client in (module, refused, back):
        await asyncio.wait_for(client.shutdown(), 10)
