"""A store that charges each call as Cosmos's response hook would, for the cost meter's tests."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import orjson

from shared.containers import partition_keys
from shared.cost import meter
from shared.cost.request_units import write_request_units
from shared.stores.base import Document, Stored
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
