"""Device registration through each IoT Hub gateway, and the fleet triggers as the host indexes and calls them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import azure.functions as func
import orjson
import pytest

from devstack.eventhubs import EventHubsNamespace
from devstack.function_index import indexed_functions
from devstack.host.http_trigger import LocalContext
from devstack.iothub.hub import LocalIoTHub
from devstack.iothub.registry import DeviceRegistry, sas_token
from devstack.iothub.service_api import ServiceApi
from shared.api import runtime
from shared.errors import IoTHubError
from shared.iothub.azure_gateway import AzureIoTHubGateway
from shared.iothub.gateway import DeviceExistsError
from shared.iothub.local_gateway import LocalIoTHubGateway
from tests.fleet_support import Fleet, OpenGatekeeper


@pytest.fixture
async def local() -> AsyncIterator[tuple[LocalIoTHub, LocalIoTHubGateway]]:
    hub = LocalIoTHub(DeviceRegistry("localhost", secret=b"s" * 32), EventHubsNamespace())
    api = ServiceApi(hub)
    url = await api.start()
    gateway = LocalIoTHubGateway.from_env({"LOCAL_IOTHUB_SERVICE_URL": url, "IOTHUB_HOSTNAME": "localhost"})
    yield hub, gateway
    await gateway.close()
    await api.stop()


async def test_the_local_hub_accepts_a_registered_device_only_with_its_key(
    local: tuple[LocalIoTHub, LocalIoTHubGateway],
) -> None:
    hub, gateway = local
    registry = hub.registry
    derived = registry.device_key("car-777")
    # WHEN the car is registered through the gateway
    identity = await gateway.create_device("car-777")
    # THEN its own key signs valid tokens, the key it would have had unregistered no longer does
    resource = "localhost/devices/car-777"
    assert identity.connection_string.startswith("HostName=localhost;DeviceId=car-777;SharedAccessKey=")
    assert registry.verify("car-777", sas_token(identity.primary_key, resource))
    assert not registry.verify("car-777", sas_token(derived, resource))
    with pytest.raises(DeviceExistsError):
        await gateway.create_device("car-777")
    # WHEN it is deleted (twice) THEN it is refused whatever key it presents
    assert await gateway.delete_device("car-777") is True
    assert await gateway.delete_device("car-777") is False
    assert not registry.verify("car-777", sas_token(identity.primary_key, resource))
    assert not registry.verify("car-777", sas_token(derived, resource))
    # AND it can be registered again, with a new key
    again = await gateway.create_device("car-777")
    assert again.primary_key != identity.primary_key
    assert registry.verify("car-777", sas_token(again.primary_key, resource))


class HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.response = type("Response", (), {"status_code": status})()


class FakeRegistryManager:
    def __init__(self) -> None:
        self.devices: dict[str, tuple[str, str, str]] = {}

    def create_device_with_sas(self, device_id: str, primary: str, secondary: str, status: str) -> None:
        if device_id in self.devices:
            raise HttpError(409)
        self.devices[device_id] = (primary, secondary, status)

    def delete_device(self, device_id: str, etag: str | None = None) -> None:
        if device_id == "broken":
            raise HttpError(500)
        if self.devices.pop(device_id, None) is None:
            raise HttpError(404)


async def test_the_azure_gateway_maps_the_registry_managers_answers() -> None:
    gateway = AzureIoTHubGateway("hub.azure-devices.net")
    manager = gateway._manager = FakeRegistryManager()
    identity = await gateway.create_device("car-001")
    assert manager.devices["car-001"][0] == identity.primary_key
    assert manager.devices["car-001"][2] == "enabled"
    assert identity.hostname == "hub.azure-devices.net"
    with pytest.raises(DeviceExistsError):
        await gateway.create_device("car-001")
    assert await gateway.delete_device("car-001") is True
    assert await gateway.delete_device("car-001") is False
    with pytest.raises(IoTHubError):
        await gateway.delete_device("broken")


def test_the_api_is_one_anonymous_function_on_the_catch_all_route_beside_the_webhook() -> None:
    http = {
        name: json.loads(fn.get_raw_bindings()[0])
        for name, fn in indexed_functions().items()
        if json.loads(fn.get_raw_bindings()[0])["type"] == "httpTrigger"
    }
    assert {name: (b["route"], b["authLevel"]) for name, b in http.items()} == {
        "http_app_func": ("/{*route}", "ANONYMOUS"),  # the API checks bearer tokens per route itself
        "graph_notifications": ("graph/notifications", "ANONYMOUS"),
        "provisioning_allocate": ("provisioning/allocate", "FUNCTION"),  # DPS authenticates with the function key
    }
    assert set(http["http_app_func"]["methods"]) >= {"GET", "POST", "PUT", "PATCH", "DELETE"}


async def test_the_function_hands_the_request_to_the_api_and_maps_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the process's runtime with an open gatekeeper and in-memory stores
    fleet = Fleet()
    await fleet.drive("car-001", range(2), speed=12.0)
    monkeypatch.setattr(runtime.providers, "fleet_service", lambda: fleet.service)
    monkeypatch.setattr(runtime.providers, "gatekeeper", lambda: OpenGatekeeper())
    fn: Any = indexed_functions()["http_app_func"].get_user_function()
    context = LocalContext("http_app_func")

    def request(path: str, token: str | None = "Bearer t") -> func.HttpRequest:
        headers = {"Authorization": token} if token else {}
        return func.HttpRequest("GET", f"http://localhost:7071{path}", headers=headers, body=b"")

    # WHEN the host calls the function THEN the API answers through it
    response = await fn(request("/api/vehicles/car-001"), context)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert orjson.loads(response.get_body())["speedKmh"] == 12.0
    bad = await fn(request("/api/vehicles/car%20001"), context)
    assert bad.status_code == 400
    assert bad.mimetype == "application/problem+json"
    anonymous = await fn(request("/api/vehicles/car-001", token=None), context)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="fleet-api"'
