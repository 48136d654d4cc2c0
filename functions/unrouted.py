"""Event Hubs trigger for device messages no other route takes (no `type`, or one nothing handles)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.settings import CONSUMER_GROUP, EVENTHUB_CONNECTION
from shared.unrouted import dead_letter_unrouted

bp = func.Blueprint()


@bp.function_name("dead_letter_unrouted")
# A storage outage must not lose these messages either: retry until the dead-letter container answers (record
# names are deterministic, so a retried batch overwrites what it already wrote).
@bp.retry(
    strategy="exponential_backoff", max_retry_count="-1", minimum_interval="00:00:04", maximum_interval="00:15:00"
)
@bp.event_hub_message_trigger(
    arg_name="events",
    connection=EVENTHUB_CONNECTION,
    event_hub_name="%UNROUTED_EVENTHUB%",
    consumer_group=CONSUMER_GROUP,
    cardinality=func.Cardinality.MANY,
    data_type=func.DataType.BINARY,  # kept byte for byte, whatever the car sent
)
async def dead_letter_unrouted_messages(events: list[func.EventHubEvent]) -> None:
    from shared.telemetry.runtime import ingestor

    report = await dead_letter_unrouted(events, private=ingestor.get().private_letter)
    logging.warning("unrouted device messages %s", report.as_log())
