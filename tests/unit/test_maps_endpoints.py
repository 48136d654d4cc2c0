"""MAPS_BASE_URL vetting and where the managed identity's token goes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.errors import ConfigurationError
from shared.maps.azure_client import AzureMapsClient
from shared.maps.base import calls_for_car
from shared.maps.endpoints import MAPS_SCOPE, maps_endpoint


@pytest.mark.parametrize(
    ("raw", "base"),
    [
        (None, "https://atlas.microsoft.com"),
        ("", "https://atlas.microsoft.com"),
        ("https://atlas.microsoft.com", "https://atlas.microsoft.com"),
        ("https://eu.atlas.microsoft.com/", "https://eu.atlas.microsoft.com"),
        ("https://US.atlas.microsoft.com:443", "https://us.atlas.microsoft.com"),
    ],
)
def test_azure_maps_hosts_get_the_maps_scope(raw: str | None, base: str) -> None:
    endpoint = maps_endpoint(raw)
    assert (endpoint.base_url, endpoint.scope) == (base, MAPS_SCOPE)


@pytest.mark.parametrize("raw", ["http://127.0.0.1:7076", "http://localhost:1234/", "http://[::1]:80"])
def test_loopback_gets_no_scope(raw: str) -> None:
    endpoint = maps_endpoint(raw)
    assert endpoint.scope is None
    assert endpoint.base_url == raw.rstrip("/")


@pytest.mark.parametrize(
    "raw",
    [
        "http://atlas.microsoft.com",  # plain http outside loopback
        "https://atlas.microsoft.com.evil.example",
        "https://evil.example/atlas.microsoft.com",
        "https://atlas.microsoft.com:8443",
        "https://user@atlas.microsoft.com",
        "https://atlas.microsoft.com/route",  # a path would change what the client calls
        "https://graph.microsoft.com",
        "http://10.0.0.1:7076",  # private, not loopback
        "http://127.0.0.1.evil.example",
    ],
)
def test_anything_else_is_refused_before_a_client_exists(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="MAPS_BASE_URL"):
        AzureMapsClient.create(raw, "account")


class FakeToken:
    def __init__(self, token: str) -> None:
        self.token, self.expires_on = token, int(time.time()) + 3600


class RecordingCredential:
    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str) -> Any:
        self.scopes.append(scopes)
        return FakeToken(f"token-{len(self.scopes)}")


async def test_the_vetted_host_gets_the_token_and_the_account_id_once_cached() -> None:
    credential = RecordingCredential()
    client = AzureMapsClient.create("https://eu.atlas.microsoft.com", "unique-id", "mi", credential=credential)
    with calls_for_car("car-1"):  # the car is for the sandbox's accounting only, never sent to Azure
        first = await client.auth_headers()
    second = await client.auth_headers()
    assert first == second == {"Authorization": "Bearer token-1", "x-ms-client-id": "unique-id"}
    assert credential.scopes == [(MAPS_SCOPE,)]


async def test_loopback_gets_no_token_only_the_car() -> None:
    credential = RecordingCredential()
    client = AzureMapsClient.create("http://127.0.0.1:7076", "unique-id", "mi", credential=credential)
    assert await client.auth_headers() == {}
    with calls_for_car("car-9"):
        assert await client.auth_headers() == {"x-fleet-caller": "car-9"}
    assert credential.scopes == []
    assert client.tokens_requested == 0


async def test_a_credential_failure_is_a_transient_maps_error() -> None:
    class Failing:
        async def get_token(self, *scopes: str) -> Any:
            raise RuntimeError("IMDS unreachable")

    client = AzureMapsClient.create("https://atlas.microsoft.com", "id", credential=Failing())
    from shared.maps.errors import MapsError

    with pytest.raises(MapsError) as caught:
        await client.auth_headers()
    assert caught.value.transient
    assert caught.value.code == "no_token"


@pytest.mark.parametrize(
    "raw",
    [
        "http://user@127.0.0.1:7076",
        "http://127.0.0.1:7076/?x=1",
        "http://127.0.0.1:7076#f",
        "ftp://127.0.0.1",
        "http://127.0.0.1:99999",
    ],
)
def test_loopback_with_extras_is_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError):
        maps_endpoint(raw)


async def test_the_runtime_client_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.maps.runtime import maps_client

    monkeypatch.setenv("MAPS_BASE_URL", "https://atlas.microsoft.com.evil.example")
    maps_client.reset()
    with pytest.raises(ConfigurationError):
        maps_client.get()
    monkeypatch.setenv("MAPS_BASE_URL", "http://127.0.0.1:7076")
    monkeypatch.setenv("MAPS_MAX_RETRIES", "4")
    maps_client.reset()
    client = maps_client.get()
    try:
        assert isinstance(client, AzureMapsClient)
        assert client.endpoint.scope is None
        assert client.max_retries == 4
        assert maps_client.get() is client  # one per process and loop
    finally:
        await client.close()
        maps_client.reset()
