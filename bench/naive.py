"""The naive pattern the design is measured against: two writes per message, awaited one after another.

For each message: decode and validate it exactly as ours does (so the comparison is about storage, not
parsing), create one telemetry document, then upsert the vehicle document with the message's signals as the
current state. It is generous to the naive side: no read-modify-write of the vehicle, no trips, no alerts,
no replay protection; just the two writes every per-message design needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.containers import TELEMETRY, VEHICLES
from shared.device_messages import DeadLetter, DeviceMessage, compact_time, safe_id
from shared.stores.base import DeadLetterSink, DocumentStore
from shared.telemetry.catalogue import default_catalogue
from shared.telemetry.contract import decode


class NaiveIngestor:
    """Per message: `create` the telemetry document, then `upsert` the vehicle document."""

    def __init__(self, store: DocumentStore, dead_letters: DeadLetterSink) -> None:
        self.store = store
        self.dead_letters = dead_letters
        self.catalogue = default_catalogue()

    async def ingest(self, messages: Sequence[DeviceMessage]) -> int:
        """Ingest in arrival order; returns how many messages were accepted."""
        accepted = 0
        for message in messages:
            decoded = decode(message, catalogue=self.catalogue)
            if isinstance(decoded, DeadLetter):
                await self.dead_letters.put(decoded)
                continue
            vehicle_id = decoded.device_id
            history = decoded.to_history()
            telemetry: dict[str, Any] = {
                "id": f"{safe_id(vehicle_id)}:{compact_time(decoded.enqueued_time)}:{decoded.seq}",
                "vehicleId": vehicle_id,
                "type": "telemetry",
                **history,
            }
            await self.store.create(TELEMETRY, telemetry)
            signals = {
                path: {"value": value, "ts": sample.ts}
                for sample in decoded.samples
                for path, value in sample.signals.items()
            }
            vehicle = {
                "id": safe_id(vehicle_id),
                "vehicleId": vehicle_id,
                "type": "vehicle",
                "state": {"signals": signals, "ts": decoded.newest_ts, "seq": decoded.seq},
                "lastSeen": decoded.enqueued_time,
            }
            await self.store.upsert(VEHICLES, vehicle)
            accepted += 1
        return accepted
