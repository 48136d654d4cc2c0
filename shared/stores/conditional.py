"""Read → change → etag-conditional write, retried on a race: how every shared document is updated.

A change function gets the stored document (or None) and returns the new one, or raises to refuse; on a
concurrent write it is applied again to what is stored then, so fields it does not own are never lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from shared.errors import ConflictError, NotFoundError, PreconditionFailedError, StoreError
from shared.stores.base import Document, DocumentStore

MAX_RETRIES: Final = 10


async def update_document(
    store: DocumentStore,
    container: str,
    partition_key: str,
    item_id: str,
    change: Callable[[Document | None], Document],
) -> Document:
    """Apply `change` and write its result: create when there was none, else replace with the read's etag.
    Returns what was written."""
    for _ in range(MAX_RETRIES):
        stored = await store.read(container, partition_key, item_id)
        doc = change(stored.document if stored else None)
        try:
            if stored is None:
                await store.create(container, doc)
            else:
                await store.replace(container, doc, stored.etag)
        except (PreconditionFailedError, ConflictError, NotFoundError):
            continue  # another writer came first: read again, apply again
        return doc
    raise StoreError(f"{container}/{item_id}: document kept changing; gave up after {MAX_RETRIES} tries")
