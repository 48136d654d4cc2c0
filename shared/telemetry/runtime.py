"""Process-wide wiring of telemetry ingestion for the function app: Azure clients from the settings."""

from __future__ import annotations

from collections.abc import Iterable

from shared.brands import BrandConfigs
from shared.device_messages import EventHubEventLike, messages_from_events
from shared.geofences.store import CachedGeofenceSource
from shared.per_loop import PerLoop
from shared.settings import IngestionSettings
from shared.stores.blob_deadletters import blob_dead_letters_from_env
from shared.stores.cosmos import cosmos_store_from_env
from shared.telemetry.ingest import BatchReport, TelemetryIngestor
from shared.telemetry.tuning import tune_for_ingestion


def _create_ingestor() -> TelemetryIngestor:
    store = cosmos_store_from_env.get()
    created = TelemetryIngestor(
        store,
        blob_dead_letters_from_env.get(),
        IngestionSettings.from_env(),
        brands=BrandConfigs(store),
        geofences=CachedGeofenceSource(store),
    )
    tune_for_ingestion()  # once per process, now that the clients and the catalogue are loaded
    return created


ingestor = PerLoop(_create_ingestor)


async def ingest_events(events: Iterable[EventHubEventLike]) -> BatchReport:
    """Ingest one Event Hubs batch with the process's ingestor (its vehicle cache lives across batches)."""
    return await ingestor.get().ingest(messages_from_events(events))
