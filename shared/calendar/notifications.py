"""Graph change and lifecycle notifications → sync jobs. Runs inside the webhook's 3-second budget: it only
reads one small document per driver and enqueues; the Graph work happens in the queue-triggered job.

https://learn.microsoft.com/graph/change-notifications-delivery-webhooks
https://learn.microsoft.com/graph/change-notifications-lifecycle-events
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from shared.calendar.documents import SUBSCRIPTION_ID
from shared.calendar.jobs import SyncJob, SyncQueue
from shared.calendar.subscriptions import user_of_client_state
from shared.containers import CALENDARS
from shared.errors import FleetError
from shared.stores.base import DocumentStore

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1_048_576
# lifecycle event → (full resync?, subscription action)
LIFECYCLE: Final[dict[str, tuple[bool, Any]]] = {
    "reauthorizationRequired": (False, "reauthorize"),
    "subscriptionRemoved": (True, "recreate"),
    "missed": (True, None),
}


class InvalidNotificationError(FleetError):
    """The body is not a Graph notification collection (answered 400)."""


@dataclass(slots=True)
class NotificationReport:
    accepted: int = 0
    rejected: int = 0
    ignored: int = 0
    jobs: list[SyncJob] = field(default_factory=list)


async def handle_notifications(body: bytes, store: DocumentStore, queue: SyncQueue) -> NotificationReport:
    """Verify each notification's clientState and enqueue one job per affected driver (several changes of one
    driver in a batch make one job). A mismatch is logged and enqueues nothing."""
    if len(body) > MAX_BODY_BYTES:
        raise InvalidNotificationError("body too large")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidNotificationError("body is not JSON") from None
    items = parsed.get("value") if isinstance(parsed, dict) else None
    if not isinstance(items, list):
        raise InvalidNotificationError('expected {"value": [...]}')
    report = NotificationReport()
    jobs: dict[str, SyncJob] = {}
    for item in items:
        user = await _verified_user(item, store)
        if user is None:
            report.rejected += 1
            continue
        report.accepted += 1
        lifecycle = item.get("lifecycleEvent")
        if lifecycle is not None:
            if lifecycle not in LIFECYCLE:
                log.info("unknown lifecycle event %r for %s ignored", lifecycle, user)
                report.ignored += 1
                continue
            full, action = LIFECYCLE[lifecycle]
            job = SyncJob(user, "lifecycle", full=full, subscription=action)
        else:
            job = SyncJob(user, "notification")
        current = jobs.get(user)
        # Keep the strongest job per driver: a lifecycle job also syncs, a change job is covered by it.
        if current is None or (current.reason == "notification" and job.reason == "lifecycle"):
            jobs[user] = job
    for job in jobs.values():
        await queue.enqueue(job)
    report.jobs = list(jobs.values())
    return report


async def _verified_user(item: Any, store: DocumentStore) -> str | None:
    if not isinstance(item, dict):
        log.warning("notification rejected: not an object")
        return None
    client_state, subscription_id = item.get("clientState"), item.get("subscriptionId")
    if not isinstance(client_state, str) or not isinstance(subscription_id, str) or len(client_state) > 256:
        log.warning("notification rejected: clientState or subscriptionId missing")
        return None
    user = user_of_client_state(client_state)
    stored = await store.read(CALENDARS, user, SUBSCRIPTION_ID) if user else None
    expected = stored.document.get("clientState", "") if stored else ""
    # Compare even when nothing is stored, so timing does not tell whether a driver exists.
    matches = hmac.compare_digest(client_state.encode(), str(expected or "\x00").encode())
    if not matches or stored is None or stored.document.get("subscriptionId") != subscription_id:
        log.warning("notification rejected: clientState mismatch for subscription %s", subscription_id[:64])
        return None
    return user
