"""Calendar sync triggers: the per-driver sync job (queue), the timers that feed it, and the Graph webhook."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.api.problems import PROBLEM_JSON, Problem
from shared.calendar import runtime
from shared.calendar.config import CALENDAR_SYNC_QUEUE
from shared.calendar.jobs import InvalidJobError
from shared.calendar.notifications import InvalidNotificationError, NotificationTooLargeError, validation_reply

bp = func.Blueprint()
NOSNIFF = "nosniff"


@bp.function_name("calendar_sync")
# Failures raise: the host retries the message (maxDequeueCount, 5 by default) and then moves it to
# `calendar-sync-poison`. Jobs are idempotent, so a redelivery is harmless.
@bp.queue_trigger(arg_name="msg", queue_name=CALENDAR_SYNC_QUEUE, connection="AzureWebJobsStorage")
async def calendar_sync(msg: func.QueueMessage) -> None:
    try:
        report = await runtime.run_sync_job(msg.get_body())
    except InvalidJobError as exc:  # retrying cannot fix it: log and drop instead of poisoning five times
        logging.error("calendar sync: dropped message %s: %s", msg.id, exc)
        return
    logging.info("calendar sync %s", report.as_log())


@bp.function_name("calendar_sync_timer")
@bp.timer_trigger(arg_name="timer", schedule="%CALENDAR_SYNC_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def calendar_sync_timer(timer: func.TimerRequest) -> None:
    count = await runtime.enqueue_all_drivers()
    logging.info("calendar sync timer: %d jobs queued", count)


@bp.function_name("graph_subscription_renewal")
@bp.timer_trigger(
    arg_name="timer", schedule="%GRAPH_SUBSCRIPTION_RENEW_SCHEDULE%", run_on_startup=False, use_monitor=True
)
async def graph_subscription_renewal(timer: func.TimerRequest) -> None:
    count = await runtime.enqueue_due_renewals()
    logging.info("subscription renewal timer: %d renewals queued", count)


@bp.function_name("graph_notifications")
# Anonymous: Graph cannot present a function key in a header; every notification is checked by its
# clientState instead (constant-time comparison), and nothing else is trusted from the body. The domain bounds
# what one POST may cost and answers within Graph's 3-second budget (shared/calendar/notifications.py).
@bp.route(route="graph/notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    try:
        token = req.params.get("validationToken")
        if token is not None:  # subscription handshake: echo the decoded token as plain text within 10 s
            return func.HttpResponse(
                validation_reply(token),
                status_code=200,
                mimetype="text/plain",
                headers={"X-Content-Type-Options": NOSNIFF},
            )
        report = await runtime.receive_notifications(req.get_body())
    except NotificationTooLargeError as exc:
        return _problem(Problem(413, "Notification batch too large", str(exc)))
    except InvalidNotificationError as exc:
        return _problem(Problem(400, "Invalid notification", str(exc)))
    if not report.complete:
        # Some possibly genuine notifications were not verified or queued in time (slow or failing store or
        # queue): ask Graph to redeliver the batch; jobs are idempotent, so the part already queued is harmless.
        problem = Problem(503, "Notifications not processed", "try again later")
        return func.HttpResponse(
            problem.to_json(), status_code=503, mimetype=PROBLEM_JSON, headers={"Retry-After": "60"}
        )
    return func.HttpResponse(status_code=202)


def _problem(problem: Problem) -> func.HttpResponse:
    logging.warning("graph notifications: %d %s", problem.status, problem.detail)  # our own text, no body content
    return func.HttpResponse(problem.to_json(), status_code=problem.status, mimetype=PROBLEM_JSON)
