"""MultiHubGateway: each call for a car goes to the hub its vehicle document names (`provisioning.hub`), the
default hub for a car without one; a car that moved hubs is followed after one DeviceNotFound; the hub is cached
for a short time; IOTHUB_STAMPS and the local hub map are validated with clear errors; the runtime picks the
multi-hub gateway only when there are several hubs."""

from __future__ import annotations

from typing import Any

import pytest

from shared.containers import VEHICLES, partition_keys
from shared.device_messages import safe_id
from shared.errors import ConfigurationError, DeviceNotFoundError, DeviceQueueFullError
from shared.iothub.gateway import MethodResult
from shared.iothub.hubs import MultiHubGateway, local_service_urls
from shared.iothub.memory_gateway import MemoryIoTHubGateway
from shared.stores.base import DocumentStore, Stored
from shared.stores.memory import MemoryDocumentStore

EU = "eu.azure-devices.net"
US = "us.azure-devices.net"


class CountingStore(MemoryDocumentStore):
    """The memory store, counting vehicle document reads (the cache's whole point)."""

    def __init__(self) -> None:
        super().__init__(partition_keys())
        self.reads = 0

    async def read(self, container: str, partition_key: str, item_id: str) -> Stored | None:
        if container == VEHICLES:
            self.reads += 1
        return await super().read(container, partition_key, item_id)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hubs() -> dict[str, MemoryIoTHubGateway]:
    return {EU: MemoryIoTHubGateway(hostname=EU), US: MemoryIoTHubGateway(hostname=US)}


@pytest.fixture
def gateway(hubs: dict[str, MemoryIoTHubGateway], store: CountingStore, clock: Clock) -> MultiHubGateway:
    return MultiHubGateway(dict(hubs), default_hub=EU, store=store, cache_seconds=30, clock=clock)


async def put_vehicle(store: DocumentStore, vehicle_id: str, hub: str | None, **extra: Any) -> None:
    provisioning: dict[str, Any] = {"status": "assigned", "hub": hub, **extra}
    await store.upsert(VEHICLES, {"id": safe_id(vehicle_id), "vehicleId": vehicle_id, "provisioning": provisioning})


# ---- routing ----


async def test_calls_go_to_the_hub_the_vehicle_document_names(
    gateway: MultiHubGateway, hubs: dict[str, MemoryIoTHubGateway], store: CountingStore
) -> None:
    # GIVEN a car DPS assigned to the US hub (its id needs escaping in Cosmos)
    car = "car/us-1"
    await put_vehicle(store, car, US.upper())
    hubs[US].on_method(car, lambda method, payload: MethodResult(200, {"ok": method}))
    # WHEN the backend sends a reply, patches the twin and invokes a method
    await gateway.send_c2d(car, b'{"r": 1}', {"type": "reply"})
    await gateway.patch_desired(car, {"agenda": []})
    result = await gateway.invoke_method(car, "lock", {})
    # THEN all of it reaches the US hub and nothing the EU hub
    assert [m.device_id for m in hubs[US].sent] == [car]
    assert hubs[US].desired[car] == {"agenda": []}
    assert result == MethodResult(200, {"ok": "lock"})
    assert not hubs[EU].sent
    assert not hubs[EU].patches
    assert not hubs[EU].invoked


@pytest.mark.parametrize("document", ["none", "no provisioning", "no hub"])
async def test_a_car_without_an_assigned_hub_lives_on_the_default_hub(
    gateway: MultiHubGateway, hubs: dict[str, MemoryIoTHubGateway], store: CountingStore, document: str
) -> None:
    # GIVEN a car registered directly (no DPS): no document yet, no provisioning field, or no hub in it
    if document == "no provisioning":
        await store.upsert(VEHICLES, {"id": "car-1", "vehicleId": "car-1"})
    elif document == "no hub":
        await put_vehicle(store, "car-1", None, status="preregistered")
    # WHEN a reply is sent THEN the default hub (IOTHUB_HOSTNAME) gets it
    await gateway.send_c2d("car-1", b"{}", {})
    assert [m.device_id for m in hubs[EU].sent] == ["car-1"]
    assert not hubs[US].sent


async def test_a_hub_missing_from_the_stamps_falls_back_to_the_default_hub(
    gateway: MultiHubGateway, hubs: dict[str, MemoryIoTHubGateway], store: CountingStore
) -> None:
    # GIVEN a document naming a hub this process does not know (IOTHUB_STAMPS out of date)
    await put_vehicle(store, "car-1", "asia.azure-devices.net")
    # WHEN a patch is sent THEN the default hub is tried (and answers for itself)
    await gateway.patch_desired("car-1", {"x": 1})
    assert hubs[EU].patches == [("car-1", {"x": 1})]


# ---- a car that moved hubs ----


async def test_a_moved_car_is_followed_after_device_not_found_on_the_old_hub(
    gateway: MultiHubGateway, hubs: dict[str, MemoryIoTHubGateway], store: CountingStore
) -> None:
    # GIVEN a car on the EU hub, whose hub the gateway has cached
    await put_vehicle(store, "car-1", EU)
    await gateway.send_c2d("car-1", b"1", {})
    # WHEN it is re-provisioned to the US hub (the old identity gone) within the cache's lifetime
    await put_vehicle(store, "car-1", US)
    await hubs[EU].delete_device("car-1")
    await gateway.send_c2d("car-1", b"2", {})
    # THEN the old hub's DeviceNotFound made the gateway read the document again and send to the new hub, once
    assert [m.body for m in hubs[EU].sent] == [b"1"]
    assert [m.body for m in hubs[US].sent] == [b"2"]
    assert await gateway.hub_of("car-1") == US


async def test_device_not_found_on_the_cars_current_hub_is_raised_after_one_reread(
    gateway: MultiHubGateway, hubs: dict[str, MemoryIoTHubGateway], store: CountingStore
) -> None:
    # GIVEN a car erased from its hub, its document unchanged
    await put_vehicle(store, "car-1", US)
    await hubs[US].delete_device("car-1")
    # WHEN a twin patch is sent THEN DeviceNotFound reaches the caller after a single re-read, no other hub tried
    with pytest.raises(DeviceNotFoundError):
        await gateway.patch_desired("car-1", {"x": 1})
    assert store.reads == 2
    assert not hubs[EU].patches
    assert await gateway.patch_desired_if_present("car-1", {"x": 1}) is False


async def test_other_permanent_errors_are_not_retried_elsewhere(
    gateway: MultiHubGateway, hubs: dict[str, MemoryIoTHubGateway], store: CountingStore
) -> None:
    # GIVEN a car on the US hub whose C2D queue is full
    await put_vehicle(store, "car-1", US)
    hubs[US].answers["car-1"] = (403, "DeviceMaximumQueueDepthExceeded")
    # WHEN a reply is sent THEN the hub's answer stands: no re-read, no other hub
    with pytest.raises(DeviceQueueFullError):
        await gateway.send_c2d("car-1", b"{}", {})
    assert store.reads == 1
    assert not hubs[EU].sent


# ---- the cache ----


async def test_the_hub_is_read_once_per_car_until_the_cache_expires(
    gateway: MultiHubGateway, hubs: dict[str, MemoryIoTHubGateway], store: CountingStore, clock: Clock
) -> None:
    # GIVEN a car on the US hub
    await put_vehicle(store, "car-1", US)
    # WHEN three calls follow each other within 30 s THEN its document is read once
    for _ in range(3):
        await gateway.send_c2d("car-1", b"{}", {})
    assert store.reads == 1
    # WHEN the document changes and the cache expires THEN the next call reads it again and follows it
    await put_vehicle(store, "car-1", EU)
    clock.now += 31
    await gateway.send_c2d("car-1", b"{}", {})
    assert store.reads == 2
    assert len(hubs[US].sent) == 3
    assert len(hubs[EU].sent) == 1


async def test_the_cache_holds_a_bounded_number_of_cars(
    hubs: dict[str, MemoryIoTHubGateway], store: CountingStore
) -> None:
    # GIVEN a gateway remembering at most two cars
    gateway = MultiHubGateway(dict(hubs), EU, store, cache_entries=2)
    # WHEN three cars are served, then the first again THEN the first was forgotten and is read again
    for car in ("a", "b", "c", "a"):
        await gateway.send_c2d(car, b"{}", {})
    assert store.reads == 4


# ---- registry ----


async def test_create_device_goes_to_the_cars_hub_or_the_default_hub(
    gateway: MultiHubGateway, hubs: dict[str, MemoryIoTHubGateway], store: CountingStore
) -> None:
    # GIVEN a car allocated to the US hub and one registered directly
    await put_vehicle(store, "car-us", US)
    # WHEN both identities are created THEN each lands on its own hub, with that hub's host name
    assert (await gateway.create_device("car-us")).hostname == US
    assert (await gateway.create_device("car-direct")).hostname == EU
    assert set(hubs[US].devices) == {"car-us"}
    assert set(hubs[EU].devices) == {"car-direct"}


async def test_delete_device_removes_the_identity_from_every_hub(
    gateway: MultiHubGateway, hubs: dict[str, MemoryIoTHubGateway], store: CountingStore
) -> None:
    # GIVEN a car that moved from the EU hub to the US hub, its old identity still on the EU hub
    await hubs[EU].create_device("car-1")
    await hubs[US].create_device("car-1")
    await put_vehicle(store, "car-1", US)
    # WHEN it is deleted (erasure, scrapped car) THEN neither hub keeps an identity that could connect
    assert await gateway.delete_device("car-1") is True
    assert not hubs[EU].devices
    assert not hubs[US].devices
    assert await gateway.delete_device("car-1") is False


async def test_revocation_disables_the_identity_on_every_hub_and_enabling_restores_only_the_cars_hub(
    gateway: MultiHubGateway, hubs: dict[str, MemoryIoTHubGateway], store: CountingStore
) -> None:
    # GIVEN a car that moved from the EU hub to the US hub, its old identity still on the EU hub
    await hubs[EU].create_device("car-1")
    await hubs[US].create_device("car-1")
    await put_vehicle(store, "car-1", US)
    # WHEN it is revoked (stolen car) THEN no hub lets it connect
    assert await gateway.set_device_enabled("car-1", False) is True
    assert hubs[EU].disabled == {"car-1"}
    assert hubs[US].disabled == {"car-1"}
    # WHEN the revocation is undone THEN only the hub it lives on takes it back
    assert await gateway.set_device_enabled("car-1", True) is True
    assert hubs[US].disabled == set()
    assert hubs[EU].disabled == {"car-1"}
    assert await gateway.set_device_enabled("unknown", False) is False


async def test_close_closes_every_hub(gateway: MultiHubGateway) -> None:
    await gateway.close()  # the memory gateways have nothing to release: it must simply reach each


def test_the_default_hub_must_be_one_of_the_hubs(store: CountingStore) -> None:
    with pytest.raises(ConfigurationError, match="default hub"):
        MultiHubGateway({US: MemoryIoTHubGateway()}, EU, store)


# ---- settings ----


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("eu.azure-devices.net", "IOTHUB_STAMPS is not JSON"),
        ('{"hostName": "a", "region": "eu"}', "must be a JSON array"),
        ('[{"hostName": "a"}]', "needs a hostName and a region"),
        ('[{"hostName": "", "region": "eu"}]', "needs a hostName"),
        ('[{"hostName": 1, "region": "eu"}]', "needs a hostName"),
        ('["a"]', "needs a hostName"),
    ],
)
def test_a_malformed_iothub_stamps_is_a_clear_configuration_error_at_first_use(
    clean_env: pytest.MonkeyPatch, raw: str, message: str
) -> None:
    from shared.iothub.runtime import _gateway_from_env

    clean_env.setenv("IOTHUB_HOSTNAME", EU)
    clean_env.setenv("IOTHUB_STAMPS", raw)
    with pytest.raises(ConfigurationError, match=message):
        _gateway_from_env()


def test_the_local_service_url_is_one_url_or_a_map_of_hubs() -> None:
    assert local_service_urls("http://127.0.0.1:9000/", "localhost") is None
    urls = local_service_urls(
        '{"Hub-A.local": "http://127.0.0.1:1", "hub-b.local": "http://127.0.0.1:2"}', "hub-a.local"
    )
    assert urls == {"hub-a.local": "http://127.0.0.1:1", "hub-b.local": "http://127.0.0.1:2"}
    with pytest.raises(ConfigurationError, match="IOTHUB_HOSTNAME"):
        local_service_urls('{"hub-a.local": "http://127.0.0.1:1"}', "other.local")
    with pytest.raises(ConfigurationError, match="map hub host names"):
        local_service_urls('{"hub-a.local": ""}', None)
    with pytest.raises(ConfigurationError, match="neither a URL nor JSON"):
        local_service_urls("{oops", None)


# ---- the runtime's choice ----


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("LOCAL_IOTHUB_SERVICE_URL", "IOTHUB_STAMPS", "IOTHUB_HOSTNAME", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_runtime_uses_one_gateway_per_local_hub(clean_env: pytest.MonkeyPatch) -> None:
    from shared.iothub.local_gateway import LocalIoTHubGateway
    from shared.iothub.runtime import _gateway_from_env

    clean_env.setenv("IOTHUB_HOSTNAME", "hub-a.local")
    clean_env.setenv(
        "LOCAL_IOTHUB_SERVICE_URL", '{"hub-a.local": "http://127.0.0.1:1", "hub-b.local": "http://127.0.0.1:2"}'
    )
    multi = _gateway_from_env()
    assert isinstance(multi, MultiHubGateway)
    assert multi.hubs == ("hub-a.local", "hub-b.local")
    assert all(isinstance(multi.gateway_of(h), LocalIoTHubGateway) for h in multi.hubs)
    # one local hub, as a single URL or a map of one: exactly today's single gateway
    clean_env.setenv("LOCAL_IOTHUB_SERVICE_URL", '{"hub-a.local": "http://127.0.0.1:1"}')
    assert isinstance(_gateway_from_env(), LocalIoTHubGateway)
    clean_env.setenv("LOCAL_IOTHUB_SERVICE_URL", "http://127.0.0.1:1")
    assert isinstance(_gateway_from_env(), LocalIoTHubGateway)


def test_the_runtime_uses_one_gateway_per_stamp_in_azure(clean_env: pytest.MonkeyPatch) -> None:
    from shared.iothub.azure_gateway import AzureIoTHubGateway
    from shared.iothub.runtime import _gateway_from_env

    clean_env.setenv("IOTHUB_HOSTNAME", EU)
    # unset: today's single gateway
    assert isinstance(_gateway_from_env(), AzureIoTHubGateway)
    # one stamp that is the default hub: the same
    clean_env.setenv("IOTHUB_STAMPS", f'[{{"hostName": "{EU}", "region": "eu"}}]')
    assert isinstance(_gateway_from_env(), AzureIoTHubGateway)
    # two stamps (host names in any case, the default hub listed or not): one SDK gateway per hub (the SDK loads
    # on the first call, not here)
    clean_env.setenv("IOTHUB_STAMPS", f'[{{"hostName": "{US.upper()}", "region": "us"}}]')
    multi = _gateway_from_env()
    assert isinstance(multi, MultiHubGateway)
    assert multi.hubs == (EU, US)
    assert all(isinstance(multi.gateway_of(h), AzureIoTHubGateway) for h in multi.hubs)
    # malformed: a clear error at first use
    clean_env.setenv("IOTHUB_STAMPS", "eu")
    with pytest.raises(ConfigurationError, match="IOTHUB_STAMPS is not JSON"):
        _gateway_from_env()
    clean_env.delenv("IOTHUB_HOSTNAME")
    clean_env.setenv("IOTHUB_STAMPS", f'[{{"hostName": "{US}", "region": "us"}}]')
    with pytest.raises(ConfigurationError, match="IOTHUB_HOSTNAME is not set"):
        _gateway_from_env()
