"""One driver's calendar sync job: Graph calendarView delta into the `calendars` container, then the agenda.

A round starts with `GET /users/{id}/calendarView/delta?startDateTime&endDateTime` for the window
(now - CALENDAR_WINDOW_PAST_MINUTES .. now + CALENDAR_WINDOW_DAYS) and follows `@odata.nextLink` pages to an
`@odata.deltaLink`; the deltaLink is stored whole and the next job resumes from it, so a sync with no changes
costs one Graph request. A delta round's window is fixed at its start, so once it has drifted by
CALENDAR_REBASELINE_MINUTES a new round (a re-baseline) starts; so does a `410 Gone` / `syncStateNotFound`.
A full round deletes the stored events it did not see again (out of the window, or deleted meanwhile).

Every write is idempotent (deterministic ids, upserts), and the state is written last with an etag condition:
a job that crashes half-way is simply run again. Two concurrent jobs for one driver start from the same deltaLink
and may interleave their event writes and twin patches (one may push an agenda the other already knew to be out
of date); only one state write wins. The loser (`superseded`), if it wrote events or patched an agenda, therefore
queues a follow-up job (`full`): a new delta round that rewrites the stored calendar from Graph and re-sends every
car's agenda whatever the stored hashes say, so the store and the cars converge on Graph's truth (a superseded
agenda-only job queues a full agenda-only job, which needs no Graph). Throttled and follow-up jobs are delayed
with jitter, so a driver's jobs do not collide again.

See https://learn.microsoft.com/graph/delta-query-events
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from shared.calendar.agenda import agenda_events, build_agenda
from shared.calendar.config import CalendarSettings
from shared.calendar.documents import (
    ACCOUNT_DOC_ID,
    DRIVER_ID,
    KIND_EVENT,
    KIND_SYNC_STATE,
    SYNC_STATE_ID,
    event_doc_id,
    event_document,
)
from shared.calendar.jobs import SyncJob, SyncQueue
from shared.calendar.subscriptions import SubscriptionManager
from shared.containers import CALENDARS
from shared.cost import graph_calls
from shared.device_messages import canonical_time
from shared.drivers.driven import drives
from shared.errors import ConflictError, DeviceNotFoundError, NotFoundError, PreconditionFailedError
from shared.graph.access import is_delegated_user
from shared.graph.base import GraphClient
from shared.graph.exceptions import GraphError, ReauthRequiredError, SyncStateGoneError, ThrottledError
from shared.iothub.gateway import IoTHubGateway
from shared.observability.metrics import add
from shared.stores.base import Document, DocumentStore, strip_system_properties

log = logging.getLogger(__name__)

MAX_PAGES: Final = 500  # a runaway nextLink chain must end; 500 pages of 50 is far beyond any real week


NO_MODULE_SECONDS: Final = 600.0
NO_MODULE_KEPT: Final = 100_000
AGENDA_PUSHES: Final = "carlink.calendar.agenda_pushes"
TRAVEL_REASON: Final = "travel"  # a job that only rebuilds the agenda (shared/telemetry/travel_ping.py)
SUPERSEDED_REASON: Final = "superseded"  # the follow-up of a job that lost its state write to a concurrent one
FOLLOW_UP_SECONDS: Final = 5  # a superseded job's follow-up waits this long (plus jitter): the other job is done
MAX_REQUEUE_SECONDS: Final = 3600
JITTER_MAX_SECONDS: Final = 30
# (user id, the car or None) → deletes what other features derived from the driver's calendar (the travel planner's
# geocoded meeting places, late-mail records, the car's meeting routes) when the calendar goes; the count deleted.
ForgetDerived = Callable[[str, str | None], Awaitable[int]]
# (vehicle id, user id, agenda items, now) → the items that car gets (a new list; the input is shared by the cars).
AgendaEnricher = Callable[[str, str, list[dict[str, Any]], dt.datetime], Awaitable[list[dict[str, Any]]]]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class SyncReport:
    user_id: str
    outcome: str = "synced"  # synced | not_linked | throttled | superseded
    full: bool = False
    graph_requests: int = 0
    upserted: int = 0
    removed: int = 0
    agenda_patched: bool = False
    subscription: str | None = None

    def as_log(self) -> str:
        return (
            f"user={self.user_id} outcome={self.outcome} full={self.full} requests={self.graph_requests} "
            f"upserted={self.upserted} removed={self.removed} agenda={self.agenda_patched} "
            f"subscription={self.subscription}"
        )


def jittered(delay: int) -> int:
    """`delay` plus up to half of it (at least 5 s, at most JITTER_MAX_SECONDS) at random, capped at
    MAX_REQUEUE_SECONDS: a driver's jobs throttled by the same `Retry-After` must not all come back at once."""
    spread = min(JITTER_MAX_SECONDS, max(5, delay // 2))
    return min(delay + random.randint(0, spread), MAX_REQUEUE_SECONDS)


def agenda_cars(driver: Document) -> list[str]:
    """The cars the driver's agenda goes to: a driver account's active cars, or a company driver's one car."""
    return sorted(driver.get("vehicleIds") or ([driver["vehicleId"]] if driver.get("vehicleId") else []))


class CalendarSync:
    def __init__(
        self,
        store: DocumentStore,
        graph: GraphClient,
        gateway: IoTHubGateway,
        queue: SyncQueue,
        settings: CalendarSettings,
        clock: Callable[[], dt.datetime] = utcnow,
        on_reauth: Callable[[str], Awaitable[None]] | None = None,
        enrich: AgendaEnricher | None = None,
        module_id: str | None = None,
        forget_derived: ForgetDerived | None = None,
    ) -> None:
        self.enrich = enrich  # per-car additions to the agenda items (travel to each meeting: shared/travel)
        self.forget_derived = forget_derived  # what others kept of the calendar (shared/travel: places, routes)
        # A car with the in-car Edge module (edge/) gets its agenda on the module twin too, so the driver sees it
        # offline (the module keeps it); cars without one are remembered for a while (IoT Hub answers 404).
        self.module_id = module_id
        self._no_module: dict[str, float] = {}
        self.on_reauth = on_reauth  # a driver account Graph refused (401): shared/accounts marks reauth_required
        self.store = store
        self.graph = graph
        self.gateway = gateway
        self.queue = queue
        self.settings = settings
        self.clock = clock
        self.subscriptions = SubscriptionManager(store, graph, settings.notification_url, settings.renew_before, clock)

    async def run(self, job: SyncJob) -> SyncReport:
        """Run one job. Raises StoreError and transient GraphError so the queue redelivers it; on throttling
        the job is re-queued after `Retry-After` instead (a redelivery at once would only be throttled again)."""
        with graph_calls.counting() as counted:  # the job's Graph requests, carried by the sync state it writes
            try:
                return await self._run(job)
            finally:
                if counted.calls and not counted.recorded:  # throttled, superseded, reauth, failed: still sent
                    await self._record_calls(job.user_id, counted)

    async def _record_calls(self, user: str, counted: graph_calls.GraphCalls) -> None:
        """Add a job's Graph calls to the driver's sync state when the job wrote no state of its own (it was
        throttled, superseded, needed a new sign-in or failed), so the meter shows the calls that throttling
        counts. Best effort, and never creates the state: a driver never synced (or forgotten) has none to carry
        them, and a store error here must not replace the job's own outcome or error."""
        calls = counted.calls
        try:
            driver = await self.store.read(CALENDARS, user, DRIVER_ID)
            cars = agenda_cars(driver.document) if driver is not None else []
            for _ in range(3):
                stored = await self.store.read(CALENDARS, user, SYNC_STATE_ID)
                if stored is None or stored.document.get(graph_calls.GRAPH_CALLS_BY) == counted.run:
                    return  # no state to carry them, or this run's own write did carry them (its answer was lost)
                state = strip_system_properties(stored.document)
                state["graphCalls"] = graph_calls.record(state.get("graphCalls"), self.clock(), calls, cars)
                state[graph_calls.GRAPH_CALLS_BY] = counted.run
                try:
                    await self.store.replace(CALENDARS, state, stored.etag)
                    return
                except PreconditionFailedError:
                    continue  # a sync wrote meanwhile: add to what it wrote
                except NotFoundError:
                    return
        except Exception as exc:  # the meter is best effort; the job's outcome stands
            log.warning("user %s: %d Graph calls not recorded: %s", user, calls, type(exc).__name__)

    async def _run(self, job: SyncJob) -> SyncReport:
        report = SyncReport(job.user_id)
        driver = await self.store.read(CALENDARS, job.user_id, DRIVER_ID)
        if driver is None or not driver.document.get("consent", {}).get("calendar"):
            vehicle_id = job.vehicle_id or (driver.document.get("vehicleId") if driver else None)
            await self._forget(job.user_id, vehicle_id, report)
            return report
        if driver.document.get("reauthRequired"):  # a driver account whose sign-in stopped working: wait for them
            report.outcome = "reauth_required"
            return report
        if job.reason == TRAVEL_REASON:  # the car moved or started: the stored calendar, travel again, no Graph
            await self._agenda_only(job, driver.document, report)
            return report
        try:
            report.subscription = await self.subscriptions.maintain(job.user_id, job.subscription)
        except ReauthRequiredError:
            await self._reauth(report)
            return report
        except GraphError as exc:
            # Notifications only make sync faster; the timer still syncs. Never let them block the sync.
            log.warning("user %s: subscription upkeep failed: %s", job.user_id, exc)
            report.subscription = "failed"
        try:
            await self._sync(job, driver.document, report)
        except ReauthRequiredError:  # marked on the account (shared/accounts); no retry, no loop
            await self._reauth(report)
        except ThrottledError as exc:
            delay = jittered(max(1, min(int(exc.retry_after_seconds + 0.999), MAX_REQUEUE_SECONDS)))
            log.warning("user %s: Graph throttled (%s); job re-queued in %ss", job.user_id, exc.status, delay)
            if report.subscription != "failed":  # its subscription action is done: a retry must not repeat it
                job = dataclasses.replace(job, subscription=None)
            await self.queue.enqueue(job, delay_seconds=delay)
            report.outcome = "throttled"
        return report

    async def _follow_up(self, job: SyncJob) -> None:
        """This job lost its state write to a concurrent one after both wrote events and patched twins, in an
        order nobody knows: the stored agenda hashes may not be what the cars have, and the stored calendar may
        hold an event the winner saw deleted. A `full` job puts both right (see the module docstring)."""
        reason = TRAVEL_REASON if job.reason == TRAVEL_REASON else SUPERSEDED_REASON
        await self.queue.enqueue(SyncJob(job.user_id, reason, full=True), delay_seconds=jittered(FOLLOW_UP_SECONDS))

    async def _agenda_only(self, job: SyncJob, driver: Document, report: SyncReport) -> None:
        """The agenda from the stored calendar (travel recomputed as the enricher decides); the sync state gets
        only the hashes of what each car was sent. A `full` job sends every car its agenda, changed or not."""
        user = job.user_id
        report.outcome = "agenda"
        stored = await self.store.read(CALENDARS, user, SYNC_STATE_ID)
        if stored is None:  # never synced: the next sync sends the agenda
            return
        state = strip_system_properties(stored.document)
        events = await self._events(user)
        await self._push_agenda(user, driver, events, state, self.clock(), report, force=job.full)
        if report.agenda_patched:
            try:
                await self.store.replace(CALENDARS, state, stored.etag)
            except (PreconditionFailedError, ConflictError, NotFoundError):
                log.info("user %s: another job wrote the sync state meanwhile; agenda follow-up queued", user)
                report.outcome = "superseded"
                await self._follow_up(job)

    async def _reauth(self, report: SyncReport) -> None:
        report.outcome = "reauth_required"
        if self.on_reauth is not None:
            await self.on_reauth(report.user_id)

    async def _sync(self, job: SyncJob, driver: Document, report: SyncReport) -> None:
        user = job.user_id
        now = self.clock()
        stored = await self.store.read(CALENDARS, user, SYNC_STATE_ID)
        state: Document = stored.document if stored else {"id": SYNC_STATE_ID, "userId": user, "kind": KIND_SYNC_STATE}
        full = job.full or not state.get("deltaLink") or self._drifted(state, now)
        try:
            events = await self._round(user, state, full, now, report)
        except SyncStateGoneError as exc:
            if full:
                raise
            log.info("user %s: delta token no longer valid (%s); full resync", user, exc.status)
            events = await self._round(user, state, True, now, report)
        report.full = full or report.full

        state["lastSyncAt"] = canonical_time(now)
        state["lastCounts"] = {
            "requests": report.graph_requests,
            "upserted": report.upserted,
            "removed": report.removed,
            "full": report.full,
        }
        counted = graph_calls.current()
        if counted is not None:  # the cost meter's Graph calls of the driver's cars (docs/cost.md)
            state["graphCalls"] = graph_calls.record(state.get("graphCalls"), now, counted.calls, agenda_cars(driver))
            state[graph_calls.GRAPH_CALLS_BY] = counted.run
        # The twin first, the state (with the agenda hash) last: if the state write fails, the next job
        # patches again, which is harmless; the other order could lose an agenda update for good.
        if events is None:
            events = await self._events(user)
        await self._push_agenda(user, driver, events, state, now, report, force=job.full)
        try:
            if stored is None:
                await self.store.create(CALENDARS, state)
            else:
                await self.store.replace(CALENDARS, state, stored.etag)
            if counted is not None:
                counted.recorded = True
        except (PreconditionFailedError, ConflictError, NotFoundError):
            report.outcome = "superseded"
            if report.upserted or report.removed or report.agenda_patched:  # else it changed nothing to put right
                log.info("user %s: another job synced at the same time; its state stands, follow-up queued", user)
                await self._follow_up(job)

    async def _push_agenda(
        self,
        user: str,
        driver: Document,
        events: list[Document],
        state: Document,
        now: dt.datetime,
        report: SyncReport,
        *,
        force: bool = False,
    ) -> None:
        """A company driver's agenda goes to their one car; a driver account's to every car where it is the
        active profile (`vehicleIds`). Each car's agenda may differ (travel to each meeting from where that car
        is: `enrich`), so each car's hash is kept (`state["agendaHashes"]`) and a car gets its agenda only when its
        own changed, or with `force` (a `full` job) whatever the stored hash says."""
        # only cars this person drives now: a handover a failure cut short leaves their link naming a car another
        # driver took (shared/drivers/handover.py), whose twin must not get their agenda meanwhile
        targets = [v for v in agenda_cars(driver) if await drives(self.store, v, user)]
        items = agenda_events(events, now, self.settings.agenda_horizon)
        sent: dict[str, str] = dict(state.get("agendaHashes") or {})
        for vehicle_id in targets:
            mine = await self.enrich(vehicle_id, user, items, now) if self.enrich is not None else items
            agenda, agenda_hash = build_agenda(mine, canonical_time(now), self.settings.agenda_max_bytes)
            if not force and sent.get(vehicle_id) == agenda_hash:
                continue
            try:
                pushed = await self.gateway.patch_desired_if_present(vehicle_id, {"agenda": agenda})
            except Exception:
                add(AGENDA_PUSHES, 1, {"target": "twin", "outcome": "failed"})
                raise
            add(AGENDA_PUSHES, 1, {"target": "twin", "outcome": "pushed" if pushed else "device_not_found"})
            if pushed:
                sent[vehicle_id] = agenda_hash
                report.agenda_patched = True
                await self._to_module(vehicle_id, agenda)
        state["agendaHashes"] = {v: h for v, h in sent.items() if v in targets}

    async def _to_module(self, vehicle_id: str, agenda: dict[str, Any] | None) -> None:
        if self.module_id is None or self._no_module.get(vehicle_id, 0.0) > time.monotonic():
            return
        try:
            await self.gateway.patch_module_desired(vehicle_id, self.module_id, {"agenda": agenda})
            add(AGENDA_PUSHES, 1, {"target": "module", "outcome": "pushed"})
        except DeviceNotFoundError:  # no Edge module in this car: ask again in a while
            add(AGENDA_PUSHES, 1, {"target": "module", "outcome": "device_not_found"})
            if len(self._no_module) > NO_MODULE_KEPT:
                self._no_module.clear()
            self._no_module[vehicle_id] = time.monotonic() + NO_MODULE_SECONDS

    def _drifted(self, state: Document, now: dt.datetime) -> bool:
        window = state.get("window") or {}
        try:
            start = dt.datetime.fromisoformat(window["start"])
        except (KeyError, TypeError, ValueError):
            return True
        expected_start = now - self.settings.window_past
        return expected_start - start >= self.settings.rebaseline_after

    async def _round(
        self, user: str, state: Document, full: bool, now: dt.datetime, report: SyncReport
    ) -> list[Document] | None:
        """Run one delta round to its deltaLink; updates `state` in place. Returns the stored events after a
        full round (it had to read them anyway), None after an incremental one."""
        synced_at = canonical_time(now)
        existing: dict[str, Document] = {}
        link: str | None
        if full:
            report.full = True
            window = {
                "start": canonical_time(now - self.settings.window_past),
                "end": canonical_time(now + self.settings.window_future),
            }
            existing = {d["id"]: d for d in await self._events(user)}
            link = None
        else:
            window = state["window"]
            link = state["deltaLink"]
        seen: dict[str, Document] = {}
        for _ in range(MAX_PAGES):
            page = await self.graph.calendar_delta(
                user, start=window["start"], end=window["end"], link=link, page_size=self.settings.page_size
            )
            report.graph_requests += 1
            for event in page.events:
                doc = event_document(user, event, synced_at)
                seen[doc["id"]] = doc
                old = existing.get(doc["id"])
                if old is not None and old.get("hash") == doc["hash"]:
                    continue
                await self.store.upsert(CALENDARS, doc)
                report.upserted += 1
            for event_id in page.removed:
                doc_id = event_doc_id(event_id)
                seen.pop(doc_id, None)
                existing.pop(doc_id, None)
                if await self.store.delete(CALENDARS, user, doc_id):
                    report.removed += 1
            if page.next_link:
                link = page.next_link
                continue
            if page.delta_link:
                state["deltaLink"] = page.delta_link
                break
            raise GraphError("calendarView delta page with neither nextLink nor deltaLink")
        else:
            raise GraphError(f"calendarView delta did not end within {MAX_PAGES} pages")
        state["window"] = window
        if not full:
            return None
        state["baselineAt"] = synced_at
        for doc_id in existing.keys() - seen.keys():  # not in the new round: deleted, or out of the window
            if await self.store.delete(CALENDARS, user, doc_id):
                report.removed += 1
        kept = {k: v for k, v in existing.items() if k in seen}
        kept.update(seen)
        return list(kept.values())

    async def _events(self, user: str) -> list[Document]:
        # The partition key is in the query text too: the local Cosmos server requires it there.
        query = "SELECT * FROM c WHERE c.userId = @user AND c.kind = @kind"
        return list(await self.store.query(CALENDARS, query, {"@user": user, "@kind": KIND_EVENT}, partition_key=user))

    async def _forget(self, user: str, vehicle_id: str | None, report: SyncReport) -> None:
        """The driver is unlinked (or withdrew calendar consent): stop notifications, clear the car's agenda,
        drop the stored calendar. Idempotent: a second run finds nothing left to do."""
        report.outcome = "not_linked"
        try:
            if await self.subscriptions.remove(user):
                report.subscription = "deleted"
        except GraphError as exc:  # (a signed-out account whose token no longer works: it expires within 3 days)
            log.warning("user %s: could not delete the subscription: %s", user, exc)
        state = await self.store.read(CALENDARS, user, SYNC_STATE_ID)
        if vehicle_id and (state is None or state.document.get("agendaHashes")):
            report.agenda_patched = await self.gateway.patch_desired_if_present(vehicle_id, {"agenda": None})
            await self._to_module(vehicle_id, None)  # the Edge module's copy too
        for doc in await self._events(user):
            await self.store.delete(CALENDARS, user, doc["id"])
            report.removed += 1
        if self.forget_derived is not None:  # the meetings' places and routes go with the meetings
            report.removed += await self.forget_derived(user, vehicle_id)
        await self.store.delete(CALENDARS, user, SYNC_STATE_ID)
        if is_delegated_user(user):  # a driver account signed out of its last car: its tokens go last
            account = await self.store.read(CALENDARS, user, ACCOUNT_DOC_ID)
            if account is not None and account.document.get("state") == "signed_out":
                await self.store.delete(CALENDARS, user, ACCOUNT_DOC_ID)
                await self.store.delete(CALENDARS, user, DRIVER_ID)
