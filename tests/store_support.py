"""A DocumentStore that passes every call to another: tests override only what they change (count, slow down,
bloat) instead of restating the whole interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.stores.base import Document, DocumentStore, Stored


class DelegatingStore(DocumentStore):
    def __init__(self, inner: DocumentStore) -> None:
        self.inner = inner

    async def read(self, container: str, partition_key: str, item_id: str) -> Stored | None:
        return await self.inner.read(container, partition_key, item_id)

    async def create(self, container: str, document: Document) -> str:
        return await self.inner.create(container, document)

    async def replace(self, container: str, document: Document, etag: str) -> str:
        return await self.inner.replace(container, document, etag)

    async def upsert(self, container: str, document: Document) -> str:
        return await self.inner.upsert(container, document)

    async def delete(self, container: str, partition_key: str, item_id: str) -> bool:
        return await self.inner.delete(container, partition_key, item_id)

    async def query(
        self, container: str, query: str, parameters: Mapping[str, Any] | None = None, partition_key: str | None = None
    ) -> Sequence[Document]:
        return await self.inner.query(container, query, parameters, partition_key)
