"""Every writer of a vehicle document other than ingestion goes through `update_vehicle`.

Telemetry ingestion replaces the same document concurrently (shared/telemetry/ingest.py), so a driver link, a
consent change or a registration reads the document, builds the new one from it and writes it back with an etag
condition; on a race it reads again and applies the change again. Fields the change does not own are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from shared.containers import VEHICLES
from shared.device_messages import safe_id
from shared.errors import ConflictError, NotFoundError, PreconditionFailedError, StoreError
from shared.stores.base import Document, DocumentStore

MAX_RETRIES: Final = 10


async def update_vehicle(
    store: DocumentStore, vehicle_id: str, change: Callable[[Document | None], Document]
) -> Document:
    """Apply `change` (given the stored document, or None when there is none; it may raise to refuse) and write
    its result: create when there was none, else an etag-conditional replace. Returns what was written."""
    for _ in range(MAX_RETRIES):
        stored = await store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        doc = change(stored.document if stored else None)
        try:
            if stored is None:
                await store.create(VEHICLES, doc)
            else:
                await store.replace(VEHICLES, doc, stored.etag)
        except (PreconditionFailedError, ConflictError, NotFoundError):
            continue  # ingestion (or another writer) wrote in between: read again, apply again
        return doc
    raise StoreError(f"vehicle {vehicle_id}: document kept changing; gave up after {MAX_RETRIES} tries")
