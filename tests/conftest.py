"""Fixtures shared by every test: the real local servers, started once per session and always stopped.

The local Cosmos-compatible server is reached through devstack/cosmos_proxy.py, which refuses what Cosmos DB
refuses (item size, depth, id length), as the whole local stack does. Set COSMOS_ENDPOINT (and COSMOS_KEY) to
run the same integration tests against the official emulator or an Azure account instead; each run then uses
its own database and drops it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from devstack.cosmos_bootstrap import bootstrap, drop_database
from devstack.cosmos_proxy import CosmosProxy, proxied_cosmos_server
from devstack.servers import COSMOS_EMULATOR_KEY, azurite
from shared.stores.cosmos import CosmosDocumentStore


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `interpreted` reach inside the fold's modules; while the fold runs compiled
    (shared/native.py) they are skipped here, and `make test` runs them again with TELEMETRY_COMPILED=false."""
    import shared.telemetry.vehicle  # noqa: F401 - whichever fold this process runs
    from shared import native

    if not native.active():
        return
    skip = pytest.mark.skip(reason="the fold runs compiled; `make test` runs this with TELEMETRY_COMPILED=false")
    for item in items:
        if "interpreted" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def storage_connection_string() -> Iterator[str]:
    with azurite() as endpoints:
        yield endpoints.connection_string


@pytest.fixture(scope="session")
def local_cosmos_proxy() -> Iterator[CosmosProxy | None]:
    """The proxy in front of the local server (None when COSMOS_ENDPOINT names another Cosmos)."""
    if os.environ.get("COSMOS_ENDPOINT"):
        yield None
        return
    with proxied_cosmos_server() as proxy:
        yield proxy


@pytest.fixture(scope="session")
def cosmos_account(local_cosmos_proxy: CosmosProxy | None) -> Iterator[tuple[str, str]]:
    endpoint = os.environ.get("COSMOS_ENDPOINT")
    if endpoint:
        yield endpoint, os.environ.get("COSMOS_KEY", COSMOS_EMULATOR_KEY)
        return
    assert local_cosmos_proxy is not None
    yield local_cosmos_proxy.endpoint, COSMOS_EMULATOR_KEY


@pytest.fixture(scope="session")
async def cosmos_database(cosmos_account: tuple[str, str]) -> AsyncIterator[str]:
    endpoint, key = cosmos_account
    name = f"test-{uuid.uuid4().hex[:12]}"
    await bootstrap(endpoint, key, name)
    yield name
    await drop_database(endpoint, key, name)


@pytest.fixture
async def cosmos_store(cosmos_account: tuple[str, str], cosmos_database: str) -> AsyncIterator[CosmosDocumentStore]:
    endpoint, key = cosmos_account
    store = CosmosDocumentStore.from_settings(endpoint, cosmos_database, key=key)
    yield store
    await store.close()
