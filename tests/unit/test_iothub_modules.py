"""Module identities in the local hub's registry, topics and twins, and the module twin calls of the in-memory and
multi-hub gateways (the real hub with the real SDK clients: tests/integration/test_local_iothub_modules.py)."""

from __future__ import annotations

import time

import pytest

from devstack.iothub.registry import DeviceRegistry, identity_key, sas_token, split_identity
from devstack.iothub.topics import allowed_filters, c2d_filter, input_filter, parse_event_topic
from devstack.iothub.twin import Twin, etag_matches
from shared.containers import partition_keys
from shared.errors import DeviceNotFoundError, IoTHubPreconditionFailedError
from shared.iothub.gateway import ModuleTwin
from shared.iothub.hubs import MultiHubGateway
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.stores.memory import MemoryDocumentStore
from tests.unit.test_iothub_hubs import put_vehicle

HOST = "hub.local"


def token(registry: DeviceRegistry, resource: str, key: str, ttl: int = 60) -> str:
    return sas_token(key, f"{HOST}{resource}", ttl)


def test_a_module_connection_string_is_iot_hubs_and_its_token_is_checked() -> None:
    registry = DeviceRegistry(HOST, secret=b"s" * 32)
    connection_string = registry.provision_module("car-1", "telematics")
    key = registry.module_key("car-1", "telematics")
    assert connection_string == f"HostName={HOST};DeviceId=car-1;ModuleId=telematics;SharedAccessKey={key}"
    assert registry.exists("car-1")  # the device was provisioned with it
    assert key != registry.device_key("car-1")
    assert registry.provision_module("car-1", "telematics") == connection_string  # idempotent

    module = identity_key("car-1", "telematics")
    assert module == "car-1/telematics"
    assert split_identity(module) == ("car-1", "telematics")
    assert split_identity("car-1") == ("car-1", None)
    assert registry.verify(module, token(registry, "/devices/car-1/modules/telematics", key))
    # the device's key signs no module, the module's key no device, and a token for another module is refused
    assert not registry.verify(
        module, token(registry, "/devices/car-1/modules/telematics", registry.device_key("car-1"))
    )
    assert not registry.verify("car-1", token(registry, "/devices/car-1", key))
    assert not registry.verify(module, token(registry, "/devices/car-1/modules/other", key))
    assert not registry.verify(module, token(registry, "/devices/car-1", key))
    assert not registry.verify(module, token(registry, "/devices/car-1/modules/telematics", key, ttl=-10))
    assert not registry.verify(module, None)
    assert not registry.verify(module, "SharedAccessSignature sr=x&sig=y&se=soon")
    assert not registry.verify("car-1/nope", token(registry, "/devices/car-1/modules/nope", key))
    # the device still authenticates as before
    assert registry.verify("car-1", token(registry, "/devices/car-1", registry.device_key("car-1")))


def test_modules_live_and_die_with_their_device() -> None:
    registry = DeviceRegistry(HOST)
    assert not registry.register_module("car-x", "m", "a2V5")  # no device, no module
    registry.provision("car-2")
    assert registry.register_module("car-2", "m", "a2V5")
    assert not registry.register_module("car-2", "m", "b3RoZXI=")  # exists: the key is kept
    assert registry.modules("car-2") == {"m": "a2V5"}
    module_token = token(registry, "/devices/car-2/modules/m", "a2V5")
    assert registry.verify("car-2/m", module_token)

    registry.set_enabled("car-2", False)
    assert not registry.verify("car-2/m", module_token)  # a disabled device's modules are refused
    registry.set_enabled("car-2", True)
    assert registry.verify("car-2/m", module_token)

    assert registry.set_module_key("car-2", "m", "bmV3")
    assert not registry.verify("car-2/m", module_token)
    assert registry.remove("car-2")
    assert not registry.module_exists("car-2", "m")
    registry.provision("car-2")  # created again: without its old modules
    assert registry.modules("car-2") == {}
    assert not registry.remove_module("car-2", "m")


def test_module_topics() -> None:
    parsed = parse_event_topic("devices/car-1/modules/tele%2Dm/messages/events/%24.ct=a&type=t")
    assert parsed is not None
    identity, properties = parsed
    assert identity == "car-1/tele-m"
    assert (properties.system, properties.application) == ({"content-type": "a"}, {"type": "t"})
    device = parse_event_topic("devices/car-1/messages/events/")
    assert device is not None
    assert device[0] == "car-1"
    assert parse_event_topic("devices/car-1/modules/m/inputs/x") is None
    # a module gets twin and method topics but no C2D and no edgeHub inputs; a device keeps its C2D topic
    module_filters = allowed_filters("car-1/m")
    assert c2d_filter("car-1") not in module_filters
    assert input_filter("car-1", "m") not in module_filters
    assert "$iothub/methods/POST/#" in module_filters
    assert allowed_filters("car-1") == module_filters | {c2d_filter("car-1")}


def test_twin_version_and_etag_change_with_every_patch() -> None:
    twin = Twin()
    first = twin.etag
    assert first == "AAAAAAAAAAE="
    twin.patch_desired({"a": 1})
    twin.patch_reported({"b": 2})
    assert (twin.version, twin.desired_version, twin.reported_version) == (3, 2, 2)
    assert twin.etag != first
    assert etag_matches(None, twin.etag)
    assert etag_matches('"*"', twin.etag)
    assert etag_matches(f'"{twin.etag}"', twin.etag)
    assert not etag_matches(f'"{first}"', twin.etag)


def test_module_twin_from_iot_hubs_json() -> None:
    document = {
        "deviceId": "car-1",
        "moduleId": "m",
        "etag": "AAAAAAAAAAM=",
        "version": 3,
        "properties": {
            "desired": {"policy": {"hz": 1}, "$version": 2, "$metadata": {"$lastUpdated": "x"}},
            "reported": {"applied": 2, "$version": 2},
        },
    }
    assert ModuleTwin.from_json(document) == ModuleTwin(
        "car-1", "m", {"policy": {"hz": 1}}, {"applied": 2}, 2, 2, "AAAAAAAAAAM=", 3
    )


async def test_memory_and_multi_hub_gateways_keep_module_twins_per_hub() -> None:
    eu, us = MemoryIoTHubGateway(hostname="eu"), MemoryIoTHubGateway(hostname="us")
    store = MemoryDocumentStore(partition_keys())
    multi = MultiHubGateway({"eu": eu, "us": us}, default_hub="eu", store=store)
    await put_vehicle(store, "car-us", "us")
    await multi.patch_module_desired("car-us", "m", {"policy": {"hz": 2}})
    assert us.module_patches == [("car-us", "m", {"policy": {"hz": 2}})]
    assert (await multi.get_module_twin("car-us", "m")).desired == {"policy": {"hz": 2}}
    await multi.patch_module_desired("car-1", "m", {"policy": {"hz": 1, "rpm": 5}})
    await multi.patch_module_desired("car-1", "m", {"policy": {"rpm": None}})
    eu.module_reported[("car-1", "m")] = {"applied": 3}
    twin = await multi.get_module_twin("car-1", "m")
    assert twin == ModuleTwin("car-1", "m", {"policy": {"hz": 1}}, {"applied": 3}, 3, 1, "AAAAAAAAAAM=", 3)
    assert [d for d, _, _ in us.module_patches] == ["car-us"]  # car-1 has no document: the default hub
    assert (await eu.get_module_twin("car-1", "other")).desired == {}  # module twins are per module
    # an etag-conditional patch goes to the car's hub with its etag: a stale one is refused there (412)
    with pytest.raises(IoTHubPreconditionFailedError):
        await multi.patch_module_desired("car-us", "m", {"x": 1}, twin.etag)
    await multi.patch_module_desired("car-us", "m", {"x": 1}, (await multi.get_module_twin("car-us", "m")).etag)
    assert us.module_desired[("car-us", "m")] == {"policy": {"hz": 2}, "x": 1}

    await eu.delete_device("car-1")
    with pytest.raises(DeviceNotFoundError):
        await eu.patch_module_desired("car-1", "m", {"x": 1})
    with pytest.raises(DeviceNotFoundError):
        await eu.get_module_twin("car-1", "m")


def test_tokens_expire_by_the_clock_given() -> None:
    registry = DeviceRegistry(HOST)
    registry.provision_module("car-3", "m")
    password = token(registry, "/devices/car-3/modules/m", registry.module_key("car-3", "m"), ttl=60)
    assert registry.verify("car-3/m", password, now=time.time())
    assert not registry.verify("car-3/m", password, now=time.time() + 120)
