"""The custom allocation webhook as the host calls it (func.HttpRequest): answers, refusals, no stack traces."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import azure.functions as func
import orjson
import pytest

from devstack.function_index import indexed_functions
from shared.containers import VEHICLES, partition_keys
from shared.errors import StoreError
from shared.per_loop import PerLoop
from shared.provisioning import runtime
from shared.provisioning.allocation import Allocator
from shared.stores.memory import MemoryDocumentStore
from tests.unit.test_provisioning_allocation import EU1, EU2, STAMPS, T0, request, vehicle

URL = "https://app.azurewebsites.net/api/provisioning/allocate?code=secret-function-key"


@pytest.fixture
async def store(monkeypatch: pytest.MonkeyPatch) -> MemoryDocumentStore:
    store = MemoryDocumentStore(partition_keys())
    await store.create(VEHICLES, vehicle())
    await store.create(VEHICLES, vehicle("car-002", status="revoked", revokedAt="2026-12-01T07:00:00.000Z"))
    monkeypatch.setattr(runtime, "allocator", PerLoop(lambda: Allocator(store, STAMPS, clock=lambda: T0)))
    return store


async def call(body: bytes) -> func.HttpResponse:
    fn: Any = indexed_functions()["provisioning_allocate"].get_user_function()
    response: func.HttpResponse = await fn(func.HttpRequest("POST", URL, headers={}, body=body, params={"code": "x"}))
    return response


def test_the_webhook_is_a_function_key_function_of_its_own() -> None:
    binding = json.loads(indexed_functions()["provisioning_allocate"].get_raw_bindings()[0])
    assert (binding["authLevel"], binding["route"], binding["methods"]) == (
        "FUNCTION",
        "provisioning/allocate",
        ["POST"],
    )


async def test_allocates_a_preregistered_car(store: MemoryDocumentStore) -> None:
    response = await call(orjson.dumps(request()))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    answer = orjson.loads(response.get_body())
    assert answer["iotHubHostName"] in (EU1, EU2)
    assert answer["initialTwin"]["tags"] == {"brandId": "contoso", "fleetId": "berlin"}
    assert set(answer["initialTwin"]["properties"]["desired"]) == {"brand", "consent"}
    again = await call(orjson.dumps(request()))
    assert orjson.loads(again.get_body()) == answer


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{", 400, "malformed"),
        (orjson.dumps({"deviceRuntimeContext": {}}), 400, "malformed"),
        (orjson.dumps(request("car-404")), 403, "unknown"),
        (orjson.dumps(request("car-002")), 403, "revoked"),
        (orjson.dumps(request(kind="x509")), 403, "attestation_mismatch"),
        (orjson.dumps(request(hubs=["hub-us-1.azure-devices.net"])), 403, "no_hub_in_region"),
        (b"x" * 70_000, 413, None),
    ],
)
async def test_refusals_are_problem_json(store: MemoryDocumentStore, body: bytes, status: int, reason: str) -> None:
    response = await call(body)
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    problem = orjson.loads(response.get_body())
    assert problem["status"] == status
    if reason is not None:
        assert problem["detail"].startswith(f"{reason}:")
    assert "Traceback" not in response.get_body().decode()
    assert "secret-function-key" not in response.get_body().decode()


async def test_an_unavailable_store_is_503_without_a_trace(
    store: MemoryDocumentStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any) -> Any:
        raise StoreError("cosmos down")

    monkeypatch.setattr(store, "read", broken)
    response = await call(orjson.dumps(request()))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "cosmos down" not in response.get_body().decode()
    assert "secret-function-key" not in caplog.text


async def test_a_slow_store_is_503_within_the_budget(
    store: MemoryDocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions import provisioning

    async def slow(*args: Any) -> Any:
        await asyncio.sleep(5)

    monkeypatch.setattr(store, "read", slow)
    monkeypatch.setattr(provisioning, "BUDGET_SECONDS", 0.05)
    response = await call(orjson.dumps(request()))
    assert response.status_code == 503
