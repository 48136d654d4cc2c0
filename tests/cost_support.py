"""A store that charges each call as Cosmos's response hook would, for the cost meter's tests."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.containers import partition_keys
from shared.cost import meter
from shared.cost.request_units import write_request_units
from shared.stores.base import Document, DocumentStore, Stored
from shared.stores.memory import MemoryDocumentStore


class ChargingStore(MemoryDocumentStore):
    """The memory store answering each call with a charge, as Cosmos's response hook reports one (estimated from
    the document's size, like the local server's hook), after yielding so that the batch's cars interleave."""

    def __init__(self, seed: int = 1) -> None:
        super().__init__(partition_keys())
        self.random = random.Random(seed)
        self.charged: defaultdict[str, list[float]] = defaultdict(list)  # vehicle id -> charges of its writes

    async def _yield(self) -> None:
        for _ in range(self.random.randrange(3)):
            await asyncio.sleep(0)

    def _charge(self, document: Document) -> None:
        ru = write_request_units(len(orjson.dumps(document)))
        self.charged[str(document.get("vehicleId"))].append(ru)
        meter.charge(ru, estimated=True)

    async def create(self, container: str, document: Document) -> str:
        await self._yield()
        etag = await super().create(container, document)
        self._charge(document)
        await self._yield()  # the SDK still awaits after its response hook ran
        return etag

    async def replace(self, container: str, document: Document, etag: str) -> str:
        await self._yield()
        new = await super().replace(container, document, etag)
        self._charge(document)
        await self._yield()
        return new

    async def upsert(self, container: str, document: Document) -> str:
        await self._yield()
        etag = await super().upsert(container, document)
        self._charge(document)
        await self._yield()
        return etag

    async def read(self, container: str, partition_key: str, item_id: str) -> Stored | None:
        await self._yield()
        return await super().read(container, partition_key, item_id)


@dataclass(frozen=True, slots=True)
class Call:
    operation: str  # read, query, upsert, create, replace, delete
    container: str
    key: str = ""  # the item read or written
    rows: int = 0  # documents a query answered
    parameters: Mapping[str, Any] = field(default_factory=dict)


class RecordingStore(DocumentStore):
    """Any store (the local Cosmos server's, the memory store), with every call it was asked recorded: what a route
    reads, and how much each query answered."""

    def __init__(self, inner: DocumentStore) -> None:
        self.inner = inner
        self.calls: list[Call] = []

    def of(self, operation: str, container: str) -> list[Call]:
        return [c for c in self.calls if (c.operation, c.container) == (operation, container)]

    async def read(self, container: str, partition_key: str, item_id: str) -> Stored | None:
        self.calls.append(Call("read", container, item_id))
        return await self.inner.read(container, partition_key, item_id)

    async def create(self, container: str, document: Document) -> str:
        self.calls.append(Call("create", container, str(document["id"])))
        return await self.inner.create(container, document)

    async def replace(self, container: str, document: Document, etag: str) -> str:
        self.calls.append(Call("replace", container, str(document["id"])))
        return await self.inner.replace(container, document, etag)

    async def upsert(self, container: str, document: Document) -> str:
        self.calls.append(Call("upsert", container, str(document["id"])))
        return await self.inner.upsert(container, document)

    async def delete(self, container: str, partition_key: str, item_id: str) -> bool:
        self.calls.append(Call("delete", container, item_id))
        return await self.inner.delete(container, partition_key, item_id)

    async def query(
        self,
        container: str,
        query: str,
        parameters: Mapping[str, Any] | None = None,
        partition_key: str | None = None,
    ) -> Sequence[Document]:
        rows = await self.inner.query(container, query, parameters, partition_key)
        self.calls.append(Call("query", container, rows=len(rows), parameters=dict(parameters or {})))
        return rows
