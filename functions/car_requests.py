"""Event Hubs trigger for requests from cars (IoT Hub message property `type = 'request'`)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.calendar.runtime import handle_requests
from shared.settings import CONSUMER_GROUP, EVENTHUB_CONNECTION

bp = func.Blueprint()


@bp.function_name("handle_requests")
# Store or IoT Hub outages raise and the batch is retried: a request already answered is answered again from
# its stored record (same reply, no second side effect). Bad requests never raise: error reply or dead letter.
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
    report = await handle_requests(events)
    logging.info("requests batch %s", report.as_log())
