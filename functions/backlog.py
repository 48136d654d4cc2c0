"""The ingestion backlog: a timer measures each Event Hubs consumer's distance behind its partitions
(shared/observability/backlog.py), which the Functions host does not hand a Python trigger."""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()


@bp.function_name("ingest_backlog")
@bp.timer_trigger(arg_name="timer", schedule="%INGEST_BACKLOG_SCHEDULE%", run_on_startup=False, use_monitor=False)
async def ingest_backlog(timer: func.TimerRequest) -> None:
    """Record `carlink.ingest.backlog` per hub and partition; a missed run is simply the next minute's."""
    from shared.observability.backlog import run  # azure-eventhub and the blob SDK: loaded when the timer fires

    found = await run()
    behind = {f"{b.hub}/{b.partition}": b.events for b in found if b.events}
    logging.info("ingestion backlog: %d partitions, behind %s", len(found), behind or "none")
