"""Every writer of a vehicle document other than ingestion goes through `update_vehicle`.

Telemetry ingestion replaces the same document concurrently (shared/telemetry/ingest.py), so a driver link, a
consent change or a registration reads the document, builds the new one from it and writes it back with an etag
condition; on a race it reads again and applies the change again. Fields the change does not own are kept.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.containers import VEHICLES
from shared.device_messages import safe_id
from shared.stores.base import Document, DocumentStore
from shared.stores.conditional import update_document


async def update_vehicle(
    store: DocumentStore, vehicle_id: str, change: Callable[[Document | None], Document]
) -> Document:
    """Apply `change` (given the stored document, or None when there is none; it may raise to refuse) and write
    its result: create when there was none, else an etag-conditional replace. Returns what was written."""
    return await update_document(store, VEHICLES, vehicle_id, safe_id(vehicle_id), change)
