"""The analytics lake's feed: a timer exports what changed in Cosmos DB to Parquet (shared/lake/export.py)."""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()


@bp.function_name("lake_export")
@bp.timer_trigger(arg_name="timer", schedule="%LAKE_EXPORT_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def lake_export(timer: func.TimerRequest) -> None:
    """Export the documents Cosmos changed since the last run (and once an hour check every file); a run that
    fails is finished by the next."""
    from shared.lake.runtime import exporter  # pyarrow and the blob SDK: loaded when the timer fires

    report = await exporter().run()
    logging.info("lake export: %s", report.as_log())
