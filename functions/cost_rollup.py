"""The cost meter's brand history: once a day a timer keeps each brand's day just closed (shared/cost/rollup.py,
docs/cost.md "Per brand")."""

from __future__ import annotations

import datetime as dt
import logging

import azure.functions as func

bp = func.Blueprint()


@bp.function_name("cost_rollup")
# The host never re-runs a failed timer by itself, and a day missed today is gone tomorrow (the cars' blocks keep
# only yesterday): retry within the hour. Safe: each brand's day is an upsert under a fixed id.
@bp.retry(strategy="fixed_delay", max_retry_count="5", delay_interval="00:05:00")
@bp.timer_trigger(arg_name="timer", schedule="%COST_ROLLUP_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def cost_rollup(timer: func.TimerRequest) -> None:
    """Write yesterday's cost document per brand (idempotent: a replay writes the same documents), each brand's
    cars summed page by page (memory one page per brand in flight, whatever its size). Raises when a brand failed,
    so the host records the run as failed; the others are written."""
    from shared.cost.rollup import roll_up
    from shared.stores.cosmos import cosmos_store_from_env

    report = await roll_up(cosmos_store_from_env.get(), dt.datetime.now(dt.UTC))
    logging.info("cost rollup: %s", report.as_log())
    if report.failed:
        raise RuntimeError(f"cost rollup failed for brands {report.failed}")
