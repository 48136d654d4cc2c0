"""Stores for the CPU benchmark that keep nothing, so the figures are the pipeline's and not the fake's.

`MemoryDocumentStore` serialises every write (as the real SDK does) and keeps every document, which is right
for counting writes and bytes but grows without bound over a million messages. `NullDocumentStore` counts
writes per container and keeps nothing: a read always misses, exactly like a process whose Cosmos account is
remote and whose only in-process state is the vehicle cache, which is what peak RSS should show.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from shared.device_messages import DeadLetter
from shared.stores.base import ContainedEntry, DeadLetterSink, Document, DocumentStore, Stored


class NullDocumentStore(DocumentStore):
    """Accepts every write, counts it, keeps nothing; reads miss."""

    def __init__(self) -> None:
        self.writes: Counter[str] = Counter()
        self._etag = 0

    def _put(self, container: str) -> str:
        self.writes[container] += 1
        self._etag += 1
        return f'"{self._etag}"'

    async def read(self, container: str, partition_key: str, item_id: str) -> Stored | None:
        return None

    async def create(self, container: str, document: Document) -> str:
        return self._put(container)

    async def replace(self, container: str, document: Document, etag: str) -> str:
        return self._put(container)

    async def upsert(self, container: str, document: Document) -> str:
        return self._put(container)

    async def delete(self, container: str, partition_key: str, item_id: str) -> bool:
        return False

    async def query(
        self,
        container: str,
        query: str,
        parameters: Mapping[str, Any] | None = None,
        partition_key: str | None = None,
    ) -> Sequence[Document]:
        return []


class NullDeadLetterSink(DeadLetterSink):
    """Counts dead letters; keeps none."""

    def __init__(self) -> None:
        self.count = 0

    async def put(self, letter: DeadLetter) -> None:
        self.count += 1

    async def list(
        self, stream: str, device_id: str | None = None, reason: str | None = None, limit: int = 100
    ) -> list[ContainedEntry]:
        return []

    async def get(self, name: str) -> DeadLetter | None:
        return None

    async def delete(self, name: str) -> bool:
        return False
