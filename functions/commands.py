"""Remote command triggers: dispatch (queue) and the sweep that ends what waits for ever (timer)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.commands.config import COMMAND_DISPATCH_QUEUE

bp = func.Blueprint()


@bp.function_name("command_dispatch")
# Failures raise (IoT Hub unavailable): the host retries the message (maxDequeueCount 5) and then moves it to
# `command-dispatch-poison`; the sweep ends the command meanwhile (a `sent` one unanswered fails, an `accepted`
# one is dispatched again). A redelivered dispatch is harmless: it calls the car only once an earlier call of the
# command is surely over (shared/commands/service.py `dispatch`), and the car answers a known command id from memory.
@bp.queue_trigger(arg_name="msg", queue_name=COMMAND_DISPATCH_QUEUE, connection="AzureWebJobsStorage")
async def command_dispatch(msg: func.QueueMessage) -> None:
    from shared.commands.runtime import command_service
    from shared.commands.service import parse_dispatch_message

    target = parse_dispatch_message(msg.get_body())
    if target is None:  # not ours: retrying cannot fix it
        logging.error("command dispatch: dropped message %s: not a dispatch message", msg.id)
        return
    status = await command_service.get().dispatch(*target)
    logging.info("command dispatch: %s -> %s", target[1], status)


@bp.function_name("command_sweep")
@bp.timer_trigger(arg_name="timer", schedule="%COMMAND_SWEEP_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def command_sweep(timer: func.TimerRequest) -> None:
    from shared.commands.runtime import command_service

    counts = await command_service.get().sweep()
    logging.info("command sweep: %s", counts or "nothing to end")
