"""Privacy timers: the second sweep of erased cars, once Event Hubs can hold none of their messages any more."""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()

# Hourly: a tombstone lives 14 days after its last write and is due 7 days after the erasure, so a week of hours
# to sweep it even if runs fail or the app is down for days. A literal, not a setting: nothing to tune per deployment.
ERASURE_SWEEP_SCHEDULE = "0 17 * * * *"


@bp.function_name("erasure_sweep")
@bp.timer_trigger(arg_name="timer", schedule=ERASURE_SWEEP_SCHEDULE, run_on_startup=False, use_monitor=True)
async def erasure_sweep(timer: func.TimerRequest) -> None:
    """Delete what of an erased car arrived after its erasure (shared/privacy/erasure.py, `sweep_erased`)."""
    from shared.fleet.runtime import fleet_service  # the API's wiring: loaded only when the timer fires

    swept = await fleet_service.get().eraser.sweep_erased()
    logging.info("erasure sweep: %d erased cars swept", len(swept))
