"""Process-wide wiring of telemetry ingestion for the function app: Azure clients from the settings."""

from __future__ import annotations

from collections.abc import Iterable

from shared.brands import BrandConfigs
from shared.cost.meter import CostMeter
from shared.device_messages import EventHubEventLike, messages_from_events
from shared.geofences.store import CachedGeofenceSource
from shared.observability.metrics import observe_batch
from shared.per_loop import PerLoop
from shared.settings import IngestionSettings, setting
from shared.stores.blob_deadletters import blob_dead_letters_from_env
from shared.stores.cosmos import cosmos_store_from_env
from shared.telemetry.ingest import BatchReport, TelemetryIngestor, TravelTrigger, carried_cars_for
from shared.telemetry.tuning import tune_for_ingestion
from shared.telemetry.vehicle_cache import vehicle_cache_from_env, working_set_from_env


def _travel_trigger() -> TravelTrigger | None:
    """With Azure Maps configured (calendar-aware driving), a car that started or moved asks for its driver's
    agenda job (reason "travel": no Graph call; the planner decides on Maps calls within its budget)."""
    if not (setting("MAPS_BASE_URL") or setting("MAPS_CLIENT_ID")):
        return None
    from shared.calendar.jobs import SyncJob, sync_queue_from_env
    from shared.calendar.sync import TRAVEL_REASON
    from shared.travel.config import TravelSettings

    async def enqueue(user_id: str) -> None:
        await sync_queue_from_env.get().enqueue(SyncJob(user_id, TRAVEL_REASON))

    return TravelTrigger(enqueue, TravelSettings.from_env().recompute_km)


def _create_ingestor() -> TelemetryIngestor:
    store = cosmos_store_from_env.get()
    created = TelemetryIngestor(
        store,
        blob_dead_letters_from_env.get(),
        IngestionSettings.from_env(),
        brands=BrandConfigs(store),
        geofences=CachedGeofenceSource(store),
        travel=_travel_trigger(),
        cost=CostMeter(),
        cache=vehicle_cache_from_env(),  # sized for the instance's memory and partitions (docs/performance.md)
        carried_cars=carried_cars_for(working_set_from_env()),  # the cost meter's carried charges (docs/cost.md)
    )
    tune_for_ingestion()  # once per process, now that the clients and the catalogue are loaded
    return created


ingestor = PerLoop(_create_ingestor)
FUNCTION = "ingest_telemetry"  # the trigger's function name, the metrics' `function` attribute


async def ingest_events(events: Iterable[EventHubEventLike]) -> BatchReport:
    """Ingest one Event Hubs batch with the process's ingestor (its vehicle cache lives across batches), and
    record its metrics (lag and batch count by partition, messages by outcome)."""
    batch = events if isinstance(events, list) else list(events)
    try:
        report = await ingestor.get().ingest(messages_from_events(batch))
    except Exception:
        observe_batch(FUNCTION, batch, committed=False)
        raise
    report.record_metrics()
    observe_batch(FUNCTION, batch, committed=True)
    return report
