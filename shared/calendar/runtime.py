"""Process-wide wiring of the calendar, requests and driver capabilities: Azure clients from the settings.

Each object is created on first use, once per process (PerLoop), so a cold start imports no Graph or IoT Hub
SDK; the triggers call the functions below and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from shared.accounts.runtime import account_service_if_enabled
from shared.brands import BrandConfigs
from shared.calendar.config import CalendarSettings
from shared.calendar.documents import KIND_DRIVER
from shared.calendar.jobs import SyncJob, SyncQueue, sync_queue_from_env
from shared.calendar.notifications import NotificationReport, handle_notifications
from shared.calendar.subscriptions import subscriptions_due
from shared.calendar.sync import AgendaEnricher, CalendarSync, SyncReport, utcnow
from shared.collection.service import edge_module_id
from shared.commands.runtime import command_service
from shared.containers import CALENDARS
from shared.device_messages import EventHubEventLike, messages_from_events
from shared.drivers.link import DriverLinks
from shared.graph.access import GraphAccess
from shared.graph.runtime import graph_client_from_env
from shared.iothub.runtime import gateway
from shared.meetings.service import MeetingService
from shared.per_loop import PerLoop
from shared.requests.processor import RequestProcessor, RequestReport
from shared.settings import setting
from shared.stores.blob_deadletters import blob_dead_letters_from_env
from shared.stores.cosmos import cosmos_store_from_env

if TYPE_CHECKING:
    from shared.travel.car_requests import TravelRequests

settings = PerLoop(CalendarSettings.from_env)
sync_queue: PerLoop[SyncQueue] = sync_queue_from_env


def _graph_access() -> GraphAccess:
    """One Graph access for calendars and meetings: the app's permission for company drivers, each signed-in
    driver's own token for `acct-` accounts (shared/graph/access.py)."""
    from shared.accounts.runtime import LazyDelegatedTokens
    from shared.graph.runtime import delegated_client_from_env

    return GraphAccess(graph_client_from_env.get(), delegated_client_from_env(LazyDelegatedTokens()))


async def _reauth_required(user_id: str) -> None:
    """Graph refused a driver's token (401): their account says reauth_required (shared/accounts)."""
    from shared.accounts.runtime import account_service_if_enabled

    service = account_service_if_enabled()
    if service is not None:
        await service.mark_reauth_required(user_id)


def _travel() -> AgendaEnricher | None:
    """Calendar-aware driving (shared/travel): travel to each meeting from where each car is, when Azure Maps is
    configured (MAPS_BASE_URL or MAPS_CLIENT_ID); without it the agenda is as before."""
    if not (setting("MAPS_BASE_URL") or setting("MAPS_CLIENT_ID")):
        return None
    from shared.containers import TRAVEL
    from shared.maps.runtime import maps_client
    from shared.travel.config import TravelSettings
    from shared.travel.enricher import TravelEnricher
    from shared.travel.notices import NOTICE_PROPERTIES
    from shared.travel.stores import DocumentPlaceCache, DocumentTravelStateStore

    store = cosmos_store_from_env.get()

    async def notify(vehicle_id: str, payload: dict[str, Any]) -> None:
        if not await gateway.get().send_c2d_if_present(vehicle_id, orjson.dumps(payload), NOTICE_PROPERTIES):
            from shared.observability.metrics import C2D_UNDELIVERABLE, add

            add(C2D_UNDELIVERABLE, 1, {"kind": "notice", "reason": "device_not_found"})

    return TravelEnricher(
        store,
        maps_client.get,
        DocumentTravelStateStore(store, TRAVEL),
        DocumentPlaceCache(store),
        TravelSettings.from_env(),
        notify,
    )


travel: PerLoop[AgendaEnricher | None] = PerLoop(_travel)


async def _forget_travel(user_id: str, vehicle_id: str | None) -> int:
    """Travel's places, late-mail records and the car's routes go with the calendar (with or without Maps
    configured now: they may be from before)."""
    from shared.travel.stores import forget_travel

    return await forget_travel(cosmos_store_from_env.get(), user_id, vehicle_id)


def _travel_requests() -> TravelRequests | None:
    """navigate.to_meeting and meeting.late, when Azure Maps is configured."""
    if not (setting("MAPS_BASE_URL") or setting("MAPS_CLIENT_ID")):
        return None
    from shared.containers import TRAVEL
    from shared.maps.runtime import maps_client
    from shared.travel.car_requests import TravelRequests
    from shared.travel.config import TravelSettings
    from shared.travel.stores import DocumentPlaceCache, DocumentTravelStateStore

    store = cosmos_store_from_env.get()
    places, states = DocumentPlaceCache(store), DocumentTravelStateStore(store, TRAVEL)
    return TravelRequests(store, maps_client.get, places, states, graph_access.get(), TravelSettings.from_env())


graph_access: PerLoop[GraphAccess] = PerLoop(_graph_access)
calendar_sync = PerLoop(
    lambda: CalendarSync(
        cosmos_store_from_env.get(),
        graph_access.get(),
        gateway.get(),
        sync_queue.get(),
        settings.get(),
        on_reauth=_reauth_required,
        enrich=travel.get(),
        module_id=edge_module_id(),
        forget_derived=_forget_travel,
    )
)
request_processor = PerLoop(
    lambda: RequestProcessor(
        cosmos_store_from_env.get(),
        gateway.get(),
        blob_dead_letters_from_env.get(),
        MeetingService(cosmos_store_from_env.get(), graph_access.get(), utcnow),
        sync_queue.get(),
        settings.get().moving_speed_kmh,
        brands=BrandConfigs(cosmos_store_from_env.get()),
        commands=command_service.get(),
        accounts=account_service_if_enabled(),
        travel=_travel_requests(),
    )
)
driver_links = PerLoop(lambda: DriverLinks(cosmos_store_from_env.get(), sync_queue.get(), gateway=gateway.get()))


async def run_sync_job(raw: bytes) -> SyncReport:
    return await calendar_sync.get().run(SyncJob.from_json(raw))


async def enqueue_all_drivers() -> int:
    """The timer: one job per linked driver (a cross-partition query on the indexed `kind`)."""
    store = cosmos_store_from_env.get()
    docs = await store.query(CALENDARS, "SELECT c.userId FROM c WHERE c.kind = @kind", {"@kind": KIND_DRIVER})
    queue = sync_queue.get()
    for user in sorted({d["userId"] for d in docs}):
        await queue.enqueue(SyncJob(user, "timer"))
    return len(docs)


async def enqueue_due_renewals() -> int:
    """The renewal timer: one `renew` job per subscription that expires within GRAPH_SUBSCRIPTION_RENEW_BEFORE."""
    users = await subscriptions_due(cosmos_store_from_env.get(), utcnow() + settings.get().renew_before)
    queue = sync_queue.get()
    for user in users:
        await queue.enqueue(SyncJob(user, "renewal", subscription="renew"))
    return len(users)


async def receive_notifications(body: bytes) -> NotificationReport:
    return await handle_notifications(body, cosmos_store_from_env.get(), sync_queue.get())


async def handle_requests(events: Iterable[EventHubEventLike]) -> RequestReport:
    from shared.observability.metrics import observe_batch

    batch = events if isinstance(events, list) else list(events)
    try:
        report = await request_processor.get().process(messages_from_events(batch))
    except Exception:
        observe_batch("handle_requests", batch, committed=False)
        raise
    observe_batch("handle_requests", batch, committed=True)
    return report
