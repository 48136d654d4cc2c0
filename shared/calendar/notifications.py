"""Graph change and lifecycle notifications → sync jobs, answered within Graph's 3-second budget.

The webhook is anonymous (Graph cannot present a function key), so every POST is attacker-controlled until a
notification's clientState matches the one stored for its subscription. What one POST may cost is therefore
bounded before any work is done, whatever arrives:

- **Size.** At most MAX_BODY_BYTES (1 MiB) and MAX_ITEMS (1,000) notifications per POST, else
  NotificationTooLargeError (413) before any read. Graph batches the notifications of many subscriptions into
  one POST's `value` array and documents no maximum; a basic Outlook event notification (no resource data) is
  about 0.5-1 KB, so 1,000 items fill about 1 MB. Real batches are far smaller (one item per changed event of
  the drivers whose calendars changed in the last moment); both caps leave an order of magnitude of room while
  a forged 20,000-item body is refused outright. clientState is at most 128 characters (Graph's own limit) and
  a subscription id at most 128 too; longer ones are rejected without a read.
- **One read per subscription.** Items are grouped by (subscriptionId, clientState) *before any read*: a
  subscription that appears a thousand times in a POST costs one point read, and yields one job per driver.
- **Concurrent, bounded reads.** The distinct subscriptions are checked READ_CONCURRENCY (8) at a time: 1,000
  point reads of ~5 ms take well under a second, and one POST can never hold more of the Cosmos client's
  connections (or RU/s) than that.
- **A deadline.** Verification stops after VERIFY_SECONDS (2.0 s), enqueueing after ENQUEUE_SECONDS (0.5 s)
  more; what did not finish is cancelled and counted. The answer is then 2xx if nothing verified was left
  undone, else the trigger answers 503 so that Graph redelivers the batch later (jobs are idempotent, so the
  part that was queued running twice is harmless). Either way it comes within the budget.
- **Bounded logs.** One line per POST with counts; attacker-chosen strings appear only as `repr(value[:64])`.

Why verify here rather than in the queue-triggered sync job: moving the check into the job would make the
webhook read nothing, but it would put one queue message per distinct forged subscription (up to 1,000 per
POST) onto `calendar-sync`, the queue that the timer, driver links and car requests share. A flood would then
delay every real driver's sync behind forged jobs and cost a function execution each, and the clientState (a
secret) would travel in queue and poison-queue messages. Checking here keeps the cost of a forged POST inside
the request that carried it (bounded reads, bounded time) and lets only verified work into the queue.

https://learn.microsoft.com/graph/change-notifications-delivery-webhooks
https://learn.microsoft.com/graph/change-notifications-lifecycle-events
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import orjson

from shared.calendar.documents import SUBSCRIPTION_ID
from shared.calendar.jobs import SubscriptionAction, SyncJob, SyncQueue
from shared.calendar.subscriptions import user_of_client_state
from shared.containers import CALENDARS
from shared.errors import FleetError
from shared.stores.base import DocumentStore

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1_048_576
MAX_ITEMS: Final = 1_000
MAX_CLIENT_STATE: Final = 128  # Graph refuses a longer clientState when the subscription is created
MAX_SUBSCRIPTION_ID: Final = 128  # Graph's are GUIDs (36 characters)
# Graph's validation tokens are a short sentence with a request id (about 100 characters); 1 KB is generous.
MAX_VALIDATION_TOKEN: Final = 1_024
READ_CONCURRENCY: Final = 8
VERIFY_SECONDS: Final = 2.0
ENQUEUE_SECONDS: Final = 0.5
SAMPLE_CHARS: Final = 64

# lifecycle event → (full resync?, subscription action)
LIFECYCLE: Final[dict[str, tuple[bool, SubscriptionAction | None]]] = {
    "reauthorizationRequired": (False, "reauthorize"),
    "subscriptionRemoved": (True, "recreate"),
    "missed": (True, None),
}
_ACTION_RANK: Final[dict[SubscriptionAction | None, int]] = {None: 0, "renew": 1, "reauthorize": 2, "recreate": 3}

T = TypeVar("T")


class InvalidNotificationError(FleetError):
    """The body is not a Graph notification collection, or a validation token is absurd (answered 400)."""


class NotificationTooLargeError(InvalidNotificationError):
    """More bytes or more notifications than one Graph POST ever carries (answered 413)."""


class Deadline:
    """When the webhook stops waiting for reads, then for enqueues. Tests end a phase deterministically by
    overriding the two awaitables instead of sleeping."""

    def __init__(self, verify_seconds: float = VERIFY_SECONDS, enqueue_seconds: float = ENQUEUE_SECONDS) -> None:
        self.verify_seconds = verify_seconds
        self.enqueue_seconds = enqueue_seconds

    async def verification_over(self) -> None:
        await asyncio.sleep(self.verify_seconds)

    async def enqueue_over(self) -> None:
        await asyncio.sleep(self.enqueue_seconds)


@dataclass(slots=True)
class NotificationReport:
    """What one POST did. Item counts: accepted + rejected + ignored + unverified = items."""

    items: int = 0
    subscriptions: int = 0  # distinct (subscriptionId, clientState) pairs worth a read
    reads: int = 0  # store reads started
    accepted: int = 0  # clientState matched
    rejected: int = 0  # malformed, or clientState / subscription mismatch
    ignored: int = 0  # unknown lifecycle event
    unverified: int = 0  # the read failed or did not finish before the deadline
    not_queued: int = 0  # verified jobs whose enqueue failed or did not finish before the deadline
    jobs: list[SyncJob] = field(default_factory=list)
    first_rejected: str | None = None  # repr of the first rejected subscriptionId, bounded
    first_ignored: str | None = None  # repr of the first unknown lifecycle event, bounded

    @property
    def complete(self) -> bool:
        """Nothing possibly genuine was left undone: a 2xx is right. Otherwise Graph should redeliver."""
        return self.unverified == 0 and self.not_queued == 0

    def as_log(self) -> str:
        text = (
            f"items={self.items} subscriptions={self.subscriptions} reads={self.reads} accepted={self.accepted} "
            f"rejected={self.rejected} ignored={self.ignored} unverified={self.unverified} "
            f"jobs={len(self.jobs)} not_queued={self.not_queued}"
        )
        if self.first_rejected is not None:
            text += f" first_rejected={self.first_rejected} (malformed or clientState mismatch)"
        if self.first_ignored is not None:
            text += f" first_unknown_lifecycle={self.first_ignored}"
        return text


def validation_reply(token: str) -> str:
    """The subscription handshake: the decoded token, echoed as text/plain. Bounded, so the endpoint cannot be
    used to reflect arbitrary documents under our host name."""
    if len(token) > MAX_VALIDATION_TOKEN:
        raise InvalidNotificationError(f"validationToken longer than {MAX_VALIDATION_TOKEN} characters")
    return token


@dataclass(slots=True)
class _Group:
    """All items of one (subscriptionId, clientState): one read decides them all."""

    user: str
    items: int = 0
    lifecycle: bool = False
    full: bool = False
    action: SubscriptionAction | None = None

    def add(self, lifecycle: str | None) -> None:
        self.items += 1
        if lifecycle is None:
            return
        full, action = LIFECYCLE[lifecycle]
        self.lifecycle, self.full = True, self.full or full
        if _ACTION_RANK[action] > _ACTION_RANK[self.action]:
            self.action = action


async def handle_notifications(
    body: bytes, store: DocumentStore, queue: SyncQueue, deadline: Deadline | None = None
) -> NotificationReport:
    """Verify the notifications' clientState (one read per distinct subscription, concurrently, until the
    deadline) and enqueue one job per affected driver: a lifecycle job also syncs, so it absorbs change jobs."""
    deadline = deadline or Deadline()
    items = _items(body)
    report = NotificationReport(items=len(items))
    groups: dict[tuple[str, str], _Group] = {}
    for item in items:
        _group(item, groups, report)
    report.subscriptions = len(groups)

    keys = list(groups)
    outcomes = await _bounded(
        [_reader(store, key, groups[key].user, report) for key in keys], READ_CONCURRENCY, deadline.verification_over
    )
    jobs: dict[str, SyncJob] = {}
    for index, key in enumerate(keys):
        group, outcome = groups[key], outcomes.get(index)
        if outcome is None or isinstance(outcome, BaseException):
            report.unverified += group.items
        elif outcome is False:
            report.rejected += group.items
            if report.first_rejected is None:
                report.first_rejected = _sample(key[0])
        else:
            report.accepted += group.items
            _merge(jobs, group)

    ordered = list(jobs.values())
    queued = await _bounded([_enqueuer(queue, job) for job in ordered], READ_CONCURRENCY, deadline.enqueue_over)
    report.jobs = [job for index, job in enumerate(ordered) if queued.get(index) is True]
    report.not_queued = len(ordered) - len(report.jobs)
    failures = [o for o in (*outcomes.values(), *queued.values()) if isinstance(o, BaseException)]
    level = logging.INFO if report.complete and not report.rejected else logging.WARNING
    log.log(
        level,
        "graph notifications: %s%s",
        report.as_log(),
        f" first_error={type(failures[0]).__name__}" if failures else "",
    )
    return report


def _items(body: bytes) -> list[Any]:
    if len(body) > MAX_BODY_BYTES:
        raise NotificationTooLargeError(f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidNotificationError("body is not JSON") from None
    items = parsed.get("value") if isinstance(parsed, dict) else None
    if not isinstance(items, list):
        raise InvalidNotificationError('expected {"value": [...]}')
    if len(items) > MAX_ITEMS:
        raise NotificationTooLargeError(f"{len(items)} notifications in one POST; at most {MAX_ITEMS}")
    return items


def _group(item: Any, groups: dict[tuple[str, str], _Group], report: NotificationReport) -> None:
    """Sort one item into its subscription's group, or count it rejected / ignored; no I/O."""
    client_state = item.get("clientState") if isinstance(item, dict) else None
    subscription_id = item.get("subscriptionId") if isinstance(item, dict) else None
    well_formed = (
        isinstance(client_state, str)
        and len(client_state) <= MAX_CLIENT_STATE
        and isinstance(subscription_id, str)
        and 0 < len(subscription_id) <= MAX_SUBSCRIPTION_ID
    )
    user = user_of_client_state(client_state) if well_formed and isinstance(client_state, str) else None
    if user is None or not isinstance(client_state, str) or not isinstance(subscription_id, str):
        report.rejected += 1
        if report.first_rejected is None:
            report.first_rejected = _sample(subscription_id)
        return
    lifecycle = item.get("lifecycleEvent")
    if lifecycle is not None and (not isinstance(lifecycle, str) or lifecycle not in LIFECYCLE):
        report.ignored += 1
        if report.first_ignored is None:
            report.first_ignored = _sample(lifecycle)
        return
    key = (subscription_id, client_state)
    group = groups.get(key)
    if group is None:
        group = groups[key] = _Group(user)
    group.add(lifecycle)


def _merge(jobs: dict[str, SyncJob], group: _Group) -> None:
    """One job per driver, the strongest of its groups (a driver has one subscription, but a stale one may still
    notify until it expires)."""
    current = jobs.get(group.user)
    lifecycle = group.lifecycle or (current is not None and current.reason == "lifecycle")
    full = group.full or (current is not None and current.full)
    action = group.action
    if current is not None and _ACTION_RANK[current.subscription] > _ACTION_RANK[action]:
        action = current.subscription
    reason = "lifecycle" if lifecycle else "notification"
    jobs[group.user] = SyncJob(group.user, reason, full=full, subscription=action)


def _reader(
    store: DocumentStore, key: tuple[str, str], user: str, report: NotificationReport
) -> Callable[[], Awaitable[bool]]:
    async def read() -> bool:
        subscription_id, client_state = key
        report.reads += 1
        stored = await store.read(CALENDARS, user, SUBSCRIPTION_ID)
        expected = stored.document.get("clientState") if stored else None
        # Compare even when nothing is stored, so timing does not tell whether a driver exists.
        reference = expected if isinstance(expected, str) and expected else "\x00"
        matches = hmac.compare_digest(client_state.encode(), reference.encode())
        return bool(matches and stored is not None and stored.document.get("subscriptionId") == subscription_id)

    return read


def _enqueuer(queue: SyncQueue, job: SyncJob) -> Callable[[], Awaitable[bool]]:
    async def enqueue() -> bool:
        await queue.enqueue(job)
        return True

    return enqueue


async def _bounded(
    calls: Sequence[Callable[[], Awaitable[T]]], limit: int, over: Callable[[], Awaitable[None]]
) -> dict[int, T | Exception]:
    """Run `calls` at most `limit` at a time until all are done or `over()` completes, whichever is first; the
    unfinished ones are cancelled and absent from the result. An exception is a result, not a raise."""
    results: dict[int, T | Exception] = {}
    if not calls:
        return results
    pending = iter(enumerate(calls))

    async def worker() -> None:
        for index, call in pending:
            try:
                results[index] = await call()
            except Exception as exc:  # counted by the caller: one bad read must not end the others
                results[index] = exc

    workers = [asyncio.create_task(worker()) for _ in range(min(limit, len(calls)))]
    timer = asyncio.ensure_future(over())
    try:
        running: set[asyncio.Future[Any]] = set(workers)
        while running and not timer.done():  # wakes once per finished worker: at most `limit` + 1 times
            await asyncio.wait({*running, timer}, return_when=asyncio.FIRST_COMPLETED)
            running = {w for w in running if not w.done()}
    finally:
        timer.cancel()
        for task in workers:
            task.cancel()  # a cancelled task reports nothing: no "exception was never retrieved" later
    return dict(results)


def _sample(value: object) -> str:
    """An attacker-chosen value as it may appear in a log line: escaped and bounded."""
    if isinstance(value, str):
        return repr(value[:SAMPLE_CHARS])
    return f"<{type(value).__name__}>"
