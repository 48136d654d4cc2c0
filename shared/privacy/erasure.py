"""Right to erasure of a car or a driver: everything, in an order that leaves no gap for concurrent writers.

A car, in this order:
1. its vehicle document becomes a **tombstone**, with an etag-conditional write (`update_vehicle`). Ingestion
   commits every batch with an etag-conditional write of the same document, so from this moment no batch can
   commit for the car: its write fails with 412, it reads the tombstone again and drops the messages
   (`shared/telemetry/vehicle.py`, `is_erased`). Before, the tombstone came last and a batch in flight could
   commit trips and history between the deletes and the tombstone;
2. its IoT Hub identity, so the car cannot send any more;
3. its driver's link, calendar (subscription included) and meetings (in Graph too), every document of the car
   in every container, its dead letters and parked messages (blob names start with the car, so by prefix), its
   rows in the analytics lake (shared/lake/erasure.py);
4. a **settle pass** after `settle_seconds`: the side documents (trips, alerts, history chunks) of a batch that
   committed just before the tombstone are written right after its commit, so they may land after step 3;
   the pass deletes them. What arrives later still (a stalled instance, a dead letter of a message that was in
   Event Hubs) is caught by the **sweep** once Event Hubs' retention has passed (`sweep_erased`, a timer).

Every step is idempotent: an erasure that failed half-way is run again. Each returns an `ErasureReceipt`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from shared.calendar.agenda import clear_module_agenda
from shared.calendar.documents import DRIVER_ID, SUBSCRIPTION_ID
from shared.calendar.jobs import SyncJob
from shared.containers import (
    CALENDARS,
    COMMANDS,
    MEETINGS,
    MEMBERSHIPS,
    REQUESTS,
    TENANCY,
    TRAVEL,
    VEHICLES,
    partition_keys,
)
from shared.device_messages import canonical_time, safe_id
from shared.drivers import handover
from shared.drivers.driven import cars_driven
from shared.drivers.link import DriverLinks
from shared.drivers.places import forget_places
from shared.geofences.store import KIND_VEHICLE_GEOFENCE
from shared.graph.base import GraphClient
from shared.iothub.gateway import IoTHubGateway
from shared.lake.store import LakeStore
from shared.stores.base import DeadLetterSink, Document, DocumentStore, strip_system_properties
from shared.stores.conditional import update_document
from shared.telemetry.documents import to_store
from shared.telemetry.vehicle import ERASED, is_erased, tombstone
from shared.travel.stores import TRAVEL_DOC_ID
from shared.vehicle_updates import update_vehicle

# A car's own geofences in tenancy (partition brandId): by kind and car, both indexed.
OWN_GEOFENCES: Final = "SELECT c.id, c.brandId, c.vehicleId FROM c WHERE c.kind = @k AND c.vehicleId = @v"
log = logging.getLogger(__name__)

REQUESTS_STREAM: Final = "requests"  # shared/requests/processor.py: the car's requests, with the driver's text
# Request records that name the driver or hold their words: meetings, profile choices and sign-ins at the car.
PERSONAL_REQUESTS: Final = ("meeting.", "profile.", "auth.")
# Event Hubs keeps every event at most this long (infra: eventHubsRetentionInDays); after it no message of an
# erased car can still arrive, so the sweep runs once this has passed since the erasure.
IN_FLIGHT_WINDOW: Final = dt.timedelta(days=7)
RECHECK_DRIVER_SECONDS: Final = 600  # after a driver's erasure, longer than a calendar sync job runs
DEFAULT_SETTLE_SECONDS: Final = 2.0
SWEPT_AT: Final = "sweptAt"

# Erase a driver's calendar now (Graph subscription, stored calendar, the car's agenda): CalendarSync.run of a
# job for a driver who is no longer linked does exactly that (shared/calendar/sync.py, `_forget`).
ForgetCalendar = Callable[[str, str | None], Awaitable[None]]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class ErasureReceipt:
    """What an erasure deleted where: documents per container, blobs, Graph objects, audit entries anonymised."""

    subject: str  # "vehicle" | "driver"
    subject_id: str
    erased_at: str
    device_identity_deleted: bool = False
    documents: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    graph: Counter[str] = field(default_factory=Counter)  # onlineMeetings, subscriptions
    audit_entries_anonymised: int = 0
    lake_rows: int = 0  # rows removed from the analytics lake (shared/lake/erasure.py)
    commands_anonymised: int = 0  # commands the driver sent, their sender id replaced

    def add(self, other: ErasureReceipt) -> None:
        self.documents.update(other.documents)
        self.dead_letters += other.dead_letters
        self.lake_rows += other.lake_rows
        self.graph.update(other.graph)
        self.audit_entries_anonymised += other.audit_entries_anonymised
        self.commands_anonymised += other.commands_anonymised

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "id": self.subject_id,
            "erasedAt": self.erased_at,
            "deviceIdentityDeleted": self.device_identity_deleted,
            "documents": {name: count for name, count in sorted(self.documents.items()) if count},
            "deadLetters": self.dead_letters,
            "graph": {"onlineMeetings": self.graph["onlineMeetings"], "subscriptions": self.graph["subscriptions"]},
            "auditEntriesAnonymised": self.audit_entries_anonymised,
            "lakeRows": self.lake_rows,
            "commandsAnonymised": self.commands_anonymised,
        }


@dataclass
class Eraser:
    """Erasure on the store, IoT Hub, the dead-letter sink and Graph. `dead_letters` and `graph` are providers
    (called only when there is something to delete there), so an erasure of a car without meetings loads no
    Graph SDK; None means that place is not wired (unit tests), and it is skipped."""

    store: DocumentStore
    gateway: IoTHubGateway
    links: DriverLinks
    forget_calendar: ForgetCalendar
    dead_letters: Callable[[], DeadLetterSink] | None = None
    graph: Callable[[], GraphClient] | None = None
    clock: Callable[[], dt.datetime] = utcnow
    settle_seconds: float = 0.0
    lake: Callable[[], LakeStore] | None = None  # the analytics lake; None: not wired (unit tests)

    # --- a car ----------------------------------------------------------------------------------------------

    async def erase_vehicle(self, vehicle_id: str) -> ErasureReceipt:
        """Tombstone first, then identity, driver, documents, blobs, Graph; then the settle pass."""
        now = canonical_time(self.clock())
        previous: Document | None = None

        def to_tombstone(stored: Document | None) -> Document:
            nonlocal previous
            previous = stored
            # Erased before: the first erasure's time stands.
            erased_at = stored.get("erasedAt") if stored is not None and is_erased(stored) else None
            return to_store(tombstone(vehicle_id, str(erased_at or now)))

        written = await update_vehicle(self.store, vehicle_id, to_tombstone)
        receipt = ErasureReceipt("vehicle", vehicle_id, str(written["erasedAt"]))
        if previous is not None and not is_erased(previous):
            receipt.documents[VEHICLES] += 1
        receipt.device_identity_deleted = await self.gateway.delete_device(vehicle_id)
        # its driver, and former ones whose handover was cut short before their link went (shared/drivers/handover.py)
        drivers = [u for u in (_driver_of(previous), *handover.departed(previous)) if u]
        await self._unlink_drivers(vehicle_id, drivers, receipt)
        from shared.accounts.erasure import forget_car

        # signed-in driver accounts no longer list the car; one left with no car signs out (its signout job)
        await forget_car(self.store, vehicle_id, self.links.queue)
        receipt.add(await self.sweep_vehicle(vehicle_id))
        if self.settle_seconds > 0:
            await asyncio.sleep(self.settle_seconds)
            receipt.add(await self.sweep_vehicle(vehicle_id))
        log.info("vehicle %s erased: %s", safe_id(vehicle_id)[:64], receipt.as_dict()["documents"])
        return receipt

    async def _unlink_drivers(self, vehicle_id: str, users: list[str], receipt: ErasureReceipt) -> None:
        """Everyone whose link names the car: those the replaced document names, and (on a retry, which finds only
        the tombstone) those whose driver document does. Each loses link, calendar and the meetings the app
        created for them from this car."""
        query = "SELECT c.id, c.userId, c.vehicleId FROM c WHERE c.vehicleId = @v"
        found = await self.store.query(CALENDARS, query, {"@v": vehicle_id})
        named = [str(d["userId"]) for d in found if d.get("id") == DRIVER_ID and d.get("vehicleId") == vehicle_id]
        for user in dict.fromkeys([*users, *named]):
            await self._unlink_driver(vehicle_id, user, receipt)

    async def _unlink_driver(self, vehicle_id: str, user: str, receipt: ErasureReceipt) -> None:
        driver = await self.store.read(CALENDARS, user, DRIVER_ID)
        if driver is not None and driver.document.get("vehicleId") == vehicle_id:
            # Nothing else links the driver: their calendar goes now (subscription included), and the job queued
            # first repeats that should this call be cut short once the link is gone (a retry could no longer
            # find the driver; no vehicle id: the twin went with the identity).
            await self.links.queue.enqueue(SyncJob(user, "unlink"))
            if await self.store.delete(CALENDARS, user, DRIVER_ID):
                receipt.documents[CALENDARS] += 1
            await self._forget(user, None, receipt)
            # Every meeting of theirs was created at this car's request (the app creates meetings for no one else).
            await self._erase_meetings(user, receipt)

    async def sweep_vehicle(self, vehicle_id: str) -> ErasureReceipt:
        """Delete every document and blob of the car but its tombstone. Run by the erasure (twice) and by the
        sweep after the in-flight window; finds nothing the second time."""
        receipt = ErasureReceipt("vehicle", vehicle_id, "")
        keys = partition_keys()
        for container in (c for c, path in keys.items() if path == "/vehicleId" and c != VEHICLES):
            query = "SELECT c.id FROM c WHERE c.vehicleId = @v"
            for d in await self.store.query(container, query, {"@v": vehicle_id}, partition_key=vehicle_id):
                if await self.store.delete(container, vehicle_id, d["id"]):
                    receipt.documents[container] += 1
        for container in (c for c, path in keys.items() if path == "/userId"):
            for d in await documents_of_vehicle(self.store, container, vehicle_id):
                if container == MEETINGS:
                    await self._erase_meeting(d, receipt)
                elif await self.store.delete(container, d["userId"], d["id"]):
                    receipt.documents[container] += 1
        # The car's own geofences (a driver's home and work: positions), kept with its brand's in tenancy.
        for d in await self.store.query(TENANCY, OWN_GEOFENCES, {"@k": KIND_VEHICLE_GEOFENCE, "@v": vehicle_id}):
            if d.get("vehicleId") == vehicle_id and await self.store.delete(TENANCY, str(d["brandId"]), d["id"]):
                receipt.documents[TENANCY] += 1
        # Driver memberships and pending invitations for the car (the audit log keeps its record of them).
        query = "SELECT c.id, c.principalId, c.vehicleId FROM c WHERE c.vehicleId = @v"
        for d in await self.store.query(MEMBERSHIPS, query, {"@v": vehicle_id}):
            if d.get("vehicleId") == vehicle_id and await self.store.delete(MEMBERSHIPS, d["principalId"], d["id"]):
                receipt.documents[MEMBERSHIPS] += 1
        if self.dead_letters is not None:
            receipt.dead_letters += await self.dead_letters().erase_device(vehicle_id)
        if self.lake is not None:
            from shared.lake.erasure import erase_vehicle  # pyarrow: loaded only when an erasure runs

            receipt.lake_rows += await erase_vehicle(self.lake(), vehicle_id)
        return receipt

    # --- a driver -------------------------------------------------------------------------------------------

    async def _driven_by_another(self, vehicle_id: str, user_id: str) -> bool:
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        driver = _driver_of(stored.document) if stored is not None else None
        return driver is not None and driver != user_id

    async def erase_driver(self, user_id: str) -> ErasureReceipt:
        """The driver's calendar data, meetings (in Graph too) and Graph subscription, their memberships, their
        cars' meeting request records and their object id in the audit log; unlinked from every car."""
        receipt = ErasureReceipt("driver", user_id, canonical_time(self.clock()))
        # The cars' places set in their time (their home, their work: shared/drivers/places.py), first: what dates
        # that time (their link, their memberships) goes below, so a retry after a failure could not find them.
        for period in await cars_driven(self.store, user_id):
            receipt.documents[TENANCY] += await forget_places(self.store, period)
        from shared.accounts.erasure import forget_account

        # A driver signed in from cars: their name and username leave those cars' profiles (and twins) first.
        await forget_account(self.store, self.gateway, user_id, receipt.erased_at)
        query = "SELECT c.id, c.vehicleId, c.driver FROM c WHERE c.driver.userId = @u"
        linked = [
            d["vehicleId"]
            for d in await self.store.query(VEHICLES, query, {"@u": user_id})
            if (d.get("driver") or {}).get("userId") == user_id
        ]
        driver_doc = await self.store.read(CALENDARS, user_id, DRIVER_ID)
        if driver_doc is not None:
            car = driver_doc.document.get("vehicleId")
            if isinstance(car, str) and car not in linked:
                linked.append(car)
            if await self.store.delete(CALENDARS, user_id, DRIVER_ID):
                receipt.documents[CALENDARS] += 1
        for vehicle_id in list(linked):
            # only from them: a car their driver document still names may have another driver now (a handover
            # cut short before their link went), who stays, and whose agenda stays
            if not await self.links.unlink(vehicle_id, user_id) and await self._driven_by_another(vehicle_id, user_id):
                linked.remove(vehicle_id)
        # Now that no link is left: subscription, stored calendar and the car's agenda, at once.
        await self._forget(user_id, linked[0] if linked else None, receipt)
        for vehicle_id in linked[1:]:
            await self.gateway.patch_desired_if_present(vehicle_id, {"agenda": None})
            await clear_module_agenda(self.gateway, vehicle_id)
        await self._erase_meetings(user_id, receipt)
        query = "SELECT c.id FROM c WHERE c.userId = @u"
        for d in await self.store.query(CALENDARS, query, {"@u": user_id}, partition_key=user_id):
            if await self.store.delete(CALENDARS, user_id, d["id"]):
                receipt.documents[CALENDARS] += 1
        # What names them in the cars' partitions (their consent records): cross-partition, rare.
        for container in (c for c, path in partition_keys().items() if path == "/vehicleId" and c != VEHICLES):
            query = "SELECT c.id, c.vehicleId, c.userId FROM c WHERE c.userId = @u"
            for d in await self.store.query(container, query, {"@u": user_id}):
                if d.get("userId") == user_id and await self.store.delete(container, str(d["vehicleId"]), d["id"]):
                    receipt.documents[container] += 1
        # Their memberships (they drive no car any more) and their object id in the audit log.
        # Cars whose handover away from them is unfinished, or that keep their dated time, name them
        # (shared/drivers/handover.py): rare, indexed.
        await handover.forget_everywhere(self.store, user_id)
        query = "SELECT c.id FROM c WHERE c.principalId = @u"
        for d in await self.store.query(MEMBERSHIPS, query, {"@u": user_id}, partition_key=user_id):
            if await self.store.delete(MEMBERSHIPS, user_id, d["id"]):
                receipt.documents[MEMBERSHIPS] += 1
        from shared.audit.log import AuditLog  # the auth policy behind it is the API's, not ingestion's

        receipt.audit_entries_anonymised = await AuditLog(self.store).forget_driver(user_id)
        # A calendar sync job that read the link before it went may still write events (or a subscription) after
        # the deletes above: a job for the driver runs again once any such job is over, finds no link, and forgets
        # what it wrote (shared/calendar/sync.py `_forget`).
        await self.links.queue.enqueue(SyncJob(user_id, "unlink"), delay_seconds=RECHECK_DRIVER_SECONDS)
        for vehicle_id in linked:
            # the cars' request records (and contained requests) hold their meeting texts, their name and username
            # (profile and sign-in replies)
            query = "SELECT c.id, c.action FROM c WHERE c.vehicleId = @v"
            for d in await self.store.query(REQUESTS, query, {"@v": vehicle_id}, partition_key=vehicle_id):
                if str(d.get("action", "")).startswith(PERSONAL_REQUESTS) and await self.store.delete(
                    REQUESTS, vehicle_id, d["id"]
                ):
                    receipt.documents[REQUESTS] += 1
            if self.dead_letters is not None:
                receipt.dead_letters += await self.dead_letters().erase_device(vehicle_id, (REQUESTS_STREAM,))
            # their travel planning at the car: route origins (where the car was), destinations (their meetings)
            if await self.store.delete(TRAVEL, vehicle_id, TRAVEL_DOC_ID):
                receipt.documents[TRAVEL] += 1
        receipt.commands_anonymised = await self._anonymise_commands(user_id)
        return receipt

    async def _anonymise_commands(self, user_id: str) -> int:
        """The commands they sent keep the record (what was done to which car, when) but not who: their object id
        becomes `erased`, as in the audit log."""
        from shared.audit.log import ERASED_ID  # as the audit log's (the API's policy behind it: imported late)

        query = "SELECT c.id, c.vehicleId FROM c WHERE c.kind = @k AND c.issuedBy.id = @u"
        changed = 0
        for d in await self.store.query(COMMANDS, query, {"@k": "command", "@u": user_id}):

            def anonymise(doc: Document | None) -> Document:
                issued = doc.get("issuedBy") if doc is not None else None
                if doc is None or not isinstance(issued, dict) or issued.get("id") != user_id:
                    raise _GoneError  # gone, or not theirs (any more): nothing to write
                return {**strip_system_properties(doc), "issuedBy": {**issued, "id": ERASED_ID}}

            try:
                await update_document(self.store, COMMANDS, str(d["vehicleId"]), str(d["id"]), anonymise)
            except _GoneError:
                continue
            changed += 1
        return changed

    # --- shared steps ---------------------------------------------------------------------------------------

    async def _forget(self, user_id: str, vehicle_id: str | None, receipt: ErasureReceipt) -> None:
        """The calendar clean-up, counting the Graph subscription it deletes."""
        had = await self.store.read(CALENDARS, user_id, SUBSCRIPTION_ID)
        await self.forget_calendar(user_id, vehicle_id)
        if had is not None and await self.store.read(CALENDARS, user_id, SUBSCRIPTION_ID) is None:
            receipt.graph["subscriptions"] += 1
            receipt.documents[CALENDARS] += 1

    async def _erase_meetings(self, user_id: str, receipt: ErasureReceipt) -> None:
        """Every online meeting the app created for the driver (in Graph, then its document)."""
        query = "SELECT * FROM c WHERE c.userId = @u"
        for d in await self.store.query(MEETINGS, query, {"@u": user_id}, partition_key=user_id):
            await self._erase_meeting(d, receipt)

    async def _erase_meeting(self, doc: Document, receipt: ErasureReceipt) -> None:
        """The online meeting in Graph first, its document after: if Graph fails, the document (with the
        meeting's id) stays for the retry, and the error goes to the caller."""
        meeting_id = doc.get("meetingId")
        graph = self.graph
        if isinstance(meeting_id, str) and meeting_id and graph is not None:
            receipt.graph["onlineMeetings"] += await graph().delete_meeting(str(doc["userId"]), meeting_id)
        if await self.store.delete(MEETINGS, str(doc["userId"]), str(doc["id"])):
            receipt.documents[MEETINGS] += 1

    # --- the sweep after the in-flight window ---------------------------------------------------------------

    async def sweep_erased(self, window: dt.timedelta = IN_FLIGHT_WINDOW) -> dict[str, ErasureReceipt]:
        """For every tombstone whose erasure is older than `window` and not swept yet: sweep the car again, then
        mark the tombstone swept (conditional write: a car registered again meanwhile is left alone). A timer
        runs it; running it twice sweeps nothing twice."""
        due = canonical_time(self.clock() - window)
        query = "SELECT * FROM c WHERE c.type = @t"
        out: dict[str, ErasureReceipt] = {}
        for doc in await self.store.query(VEHICLES, query, {"@t": ERASED}):
            vehicle_id = doc.get("vehicleId")
            if not isinstance(vehicle_id, str) or not is_erased(doc) or doc.get(SWEPT_AT):
                continue
            if str(doc.get("erasedAt", "")) > due:
                continue
            receipt = await self.sweep_vehicle(vehicle_id)
            swept = canonical_time(self.clock())

            def mark(stored: Document | None, swept: str = swept) -> Document:
                if stored is None or not is_erased(stored):
                    raise _NotATombstoneError
                return {**{k: v for k, v in stored.items() if not k.startswith("_")}, SWEPT_AT: swept}

            try:
                await update_vehicle(self.store, vehicle_id, mark)
            except _NotATombstoneError:
                continue
            receipt.erased_at = str(doc.get("erasedAt", ""))
            out[vehicle_id] = receipt
            log.info("erased vehicle %s swept: %s", safe_id(vehicle_id)[:64], receipt.as_dict()["documents"])
        return out


class _GoneError(Exception):
    """Nothing to update: the document went between the query and the update (expired, erased with its car), or
    is not the driver's (any more)."""


class _NotATombstoneError(Exception):
    """The car was registered again (or its tombstone expired) between the query and the mark."""


def _driver_of(doc: Document | None) -> str | None:
    driver = doc.get("driver") if doc is not None and not is_erased(doc) else None
    user = driver.get("userId") if isinstance(driver, dict) else None
    return user if isinstance(user, str) and user else None


async def documents_of_vehicle(store: DocumentStore, container: str, vehicle_id: str) -> list[Document]:
    """Documents in a driver-partitioned container that belong to the car (cross-partition, rare)."""
    out: dict[tuple[str, str], Document] = {}
    for path in ("vehicleId", "origin.vehicleId"):
        query = f"SELECT * FROM c WHERE c.{path} = @v"  # noqa: S608 - fixed paths
        for d in await store.query(container, query, {"@v": vehicle_id}):
            origin = d.get("origin")
            origin = origin if isinstance(origin, dict) else {}
            if d.get("vehicleId") == vehicle_id or origin.get("vehicleId") == vehicle_id:
                out[d["userId"], d["id"]] = d
    return list(out.values())
