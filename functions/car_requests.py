"""Event Hubs trigger for requests from cars (IoT Hub message property `type = 'request'`)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.calendar.runtime import handle_requests
from shared.observability import tracing
from shared.observability.setup import ensure_configured
from shared.settings import CONSUMER_GROUP, EVENTHUB_CONNECTION

bp = func.Blueprint()


@bp.function_name("handle_requests")
# Only transient store or IoT Hub outages raise, after the rest of the batch was carried out; the retried batch
# skips replies already delivered for the same event and answers the rest from their records (no second side
# effect). What one car or request does never raises: bad requests get an error reply or a dead letter, a
# reply IoT Hub refuses for good (queue full, device gone, too large) is recorded undeliverable.
@bp.retry(
    strategy="exponential_backoff", max_retry_count="-1", minimum_interval="00:00:02", maximum_interval="00:05:00"
)
@bp.event_hub_message_trigger(
    arg_name="events",
    connection=EVENTHUB_CONNECTION,
    event_hub_name="%REQUESTS_EVENTHUB%",
    consumer_group=CONSUMER_GROUP,
    cardinality=func.Cardinality.MANY,
    data_type=func.DataType.BINARY,
)
async def handle_car_requests(events: list[func.EventHubEvent]) -> None:
    ensure_configured()
    with tracing.batch_span(tracing.REQUESTS_BATCH, events):
        report = await handle_requests(events)
    logging.info("requests batch %s", report.as_log())
