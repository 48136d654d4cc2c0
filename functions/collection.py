"""Collection policy rollout: the next page of a policy's push to its cars' module twins (queue), and the sweep
that restarts a rollout whose message was lost (timer)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.collection.rollout import COLLECTION_ROLLOUT_QUEUE, SWEEP_SCHEDULE

bp = func.Blueprint()


@bp.function_name("collection_rollout")
# Failures raise (Cosmos DB or IoT Hub unavailable, a message ahead of the rollout's progress): the host retries the
# message (maxDequeueCount 5), then `collection-rollout-poison`, where the sweep below finds the rollout stalled and
# sends its message again. A duplicate or a replaced version's message is recognised by the progress and changes
# nothing.
@bp.queue_trigger(arg_name="msg", queue_name=COLLECTION_ROLLOUT_QUEUE, connection="AzureWebJobsStorage")
async def collection_rollout(msg: func.QueueMessage) -> None:
    from shared.collection.rollout import Continuation
    from shared.collection.runtime import collection_service

    step = Continuation.decode(msg.get_body())
    if step is None:  # not ours: retrying cannot fix it
        logging.error("collection rollout: dropped message %s: not a rollout message", msg.id)
        return
    outcome = await collection_service.get().continue_rollout(step)
    logging.info("collection rollout: %s v%d after %r -> %s", step.brand_id, step.version, step.after, outcome)


@bp.function_name("collection_rollout_sweep")
@bp.timer_trigger(arg_name="timer", schedule=SWEEP_SCHEDULE, run_on_startup=False, use_monitor=True)
async def collection_rollout_sweep(timer: func.TimerRequest) -> None:
    """Rollouts no page moved for 20 minutes: their message sent again, or after six times `failed` (stalled)."""
    from shared.collection.runtime import collection_service

    counts = await collection_service.get().sweep()
    logging.info("collection rollout sweep: %s", counts or "nothing stalled")
