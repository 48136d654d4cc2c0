"""Driver sign-in: the queue-driven poll of device-code flows (one token request per message, never a sleep)."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.accounts.service import SIGNIN_POLL_QUEUE

bp = func.Blueprint()


@bp.function_name("signin_poll")
# Each message is one poll of one flow, invisible for the flow's `interval`; the next poll is a new message.
# Failures raise (Cosmos, Key Vault or the identity provider's transport down): the host retries the message and
# then moves it to `signin-poll-poison`; the flow's expiry ends it regardless (auth.status says expired).
@bp.queue_trigger(arg_name="msg", queue_name=SIGNIN_POLL_QUEUE, connection="AzureWebJobsStorage")
async def signin_poll(msg: func.QueueMessage) -> None:
    from shared.accounts.runtime import run_poll

    outcome = await run_poll(msg.get_body())
    if outcome == "dropped":
        logging.error("sign-in poll: dropped message %s: not a poll message", msg.id)
    else:
        logging.info("sign-in poll: %s", outcome)
