"""Event Hubs trigger for device telemetry routed from IoT Hub (message property `type = 'telemetry'`)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.observability import tracing
from shared.observability.setup import ensure_configured
from shared.settings import CONSUMER_GROUP, EVENTHUB_CONNECTION
from shared.telemetry.runtime import ingest_events

bp = func.Blueprint()


@bp.function_name("ingest_telemetry")
# Store outages must not drop telemetry: retry until the store answers (every write is idempotent, so a
# redelivered batch changes nothing that was already written). Bad messages never raise: they are dead-lettered.
@bp.retry(
    strategy="exponential_backoff", max_retry_count="-1", minimum_interval="00:00:04", maximum_interval="00:15:00"
)
@bp.event_hub_message_trigger(
    arg_name="events",
    connection=EVENTHUB_CONNECTION,
    event_hub_name="%TELEMETRY_EVENTHUB%",
    consumer_group=CONSUMER_GROUP,
    cardinality=func.Cardinality.MANY,
    data_type=func.DataType.BINARY,  # the exact bytes each car sent, not a re-serialised copy
)
async def ingest_telemetry(events: list[func.EventHubEvent]) -> None:
    ensure_configured()
    with tracing.batch_span(tracing.INGEST_BATCH, events):
        report = await ingest_events(events)
    logging.info("telemetry batch %s", report.as_log())
