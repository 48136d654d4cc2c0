"""Fixtures of the integration tests beyond the servers themselves (tests/conftest.py starts those)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.stores.blob_deadletters import BlobDeadLetterSink
from shared.stores.storage_account import blob_service_client


@pytest.fixture
async def dead_letters(
    storage_connection_string: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[BlobDeadLetterSink]:
    """The blob dead-letter sink on Azurite, resolved as the function app resolves it (AzureWebJobsStorage)."""
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection_string)
    sink = BlobDeadLetterSink(blob_service_client())
    yield sink
    await sink.close()
