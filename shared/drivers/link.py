"""Link and unlink a vehicle's driver.

The vehicle document is the source of truth (`driver = {userId, upn, timeZone}`, `consent = {calendar,
location}`). Telemetry ingestion replaces the same document concurrently, so the update here is a read →
change two keys → etag-conditional replace, retried on 412, keeping every other field as read. A copy of the
link goes to the driver's partition of `calendars` (id "driver") for the sync jobs, and a full sync job is
queued: it creates the Graph subscription and the first agenda.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.calendar.agenda import clear_module_agenda
from shared.calendar.documents import DRIVER_ID, KIND_DRIVER
from shared.calendar.jobs import SyncJob, SyncQueue
from shared.containers import CALENDARS, VEHICLES
from shared.device_messages import canonical_time, safe_id
from shared.drivers import handover
from shared.drivers.driven import named_before_since
from shared.errors import InvalidRequestError, IoTHubError, UnknownResourceError
from shared.iothub.gateway import IoTHubGateway
from shared.stores.base import Document, DocumentStore, strip_system_properties
from shared.stores.conditional import update_document
from shared.telemetry.vehicle import is_erased
from shared.vehicle_updates import update_vehicle

log = logging.getLogger(__name__)
MAX_BODY_BYTES: Final = 4096
# IoT Hub device ids: up to 128 of these characters (https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-identity-registry)
DEVICE_ID: Final = re.compile(r"^[A-Za-z0-9\-.%_*?!(),:=@$']{1,128}$")
UPN: Final = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9.-]{1,255}\.[A-Za-z]{2,63}$")
FIELDS: Final = frozenset({"userId", "upn", "timeZone", "consent"})


@dataclass(frozen=True, slots=True)
class DriverLink:
    user_id: str
    upn: str
    time_zone: str
    calendar: bool
    location: bool

    def driver(self) -> dict[str, Any]:
        return {"userId": self.user_id, "upn": self.upn, "timeZone": self.time_zone}

    def consent(self) -> dict[str, bool]:
        return {"calendar": self.calendar, "location": self.location}


def validate_vehicle_id(vehicle_id: str | None) -> str:
    if not vehicle_id or not DEVICE_ID.match(vehicle_id):
        raise InvalidRequestError("vehicleId must be an IoT Hub device id (1-128 characters)")
    return vehicle_id


def parse_link(body: bytes) -> DriverLink:
    """Validate a PUT body; every problem found is listed at once."""
    if len(body) > MAX_BODY_BYTES:
        raise InvalidRequestError(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the body must be a JSON object")
    errors: list[dict[str, str]] = []

    def fail(name: str, why: str) -> None:
        errors.append({"field": name, "message": why})

    for name in sorted(set(data) - FIELDS):
        fail(name, "unknown field")
    user_id, upn, zone, consent = data.get("userId"), data.get("upn"), data.get("timeZone"), data.get("consent")
    try:
        user_id = str(uuid.UUID(user_id)) if isinstance(user_id, str) and len(user_id) <= 64 else None
    except ValueError:
        user_id = None
    if user_id is None:
        fail("userId", "required: the driver's Entra object id (a GUID)")
    if not isinstance(upn, str) or not UPN.match(upn):
        fail("upn", "required: the driver's user principal name, e.g. driver@contoso.com")
    if not isinstance(zone, str) or not _is_zone(zone):
        fail("timeZone", "required: an IANA time zone, e.g. Europe/Berlin")
    calendar = location = False
    if not isinstance(consent, dict) or set(consent) - {"calendar", "location"}:
        fail("consent", 'required: {"calendar": bool, "location": bool}')
    else:
        calendar, location = consent.get("calendar", False), consent.get("location", False)
        if not isinstance(calendar, bool) or not isinstance(location, bool):
            fail("consent", "calendar and location must be booleans")
    if errors:
        raise InvalidRequestError("the driver link is invalid", errors)
    assert isinstance(user_id, str)
    assert isinstance(upn, str)
    assert isinstance(zone, str)
    return DriverLink(user_id, upn, zone, bool(calendar), bool(location))


def check_time_zone(name: str) -> str:
    """An IANA time zone name, or InvalidRequestError."""
    if not _is_zone(name):
        raise InvalidRequestError(
            "timeZone must be an IANA time zone", [{"field": "timeZone", "message": "e.g. Europe/Berlin"}]
        )
    return name


def _is_zone(name: str) -> bool:
    if not 0 < len(name) <= 64 or ".." in name or name.startswith("/"):
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


class DriverLinks:
    def __init__(
        self,
        store: DocumentStore,
        queue: SyncQueue,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        gateway: IoTHubGateway | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.clock = clock
        self.gateway = gateway  # given: the car's twin `consent` follows a new or departed driver

    async def link(self, vehicle_id: str, link: DriverLink) -> Document:
        """Link (or re-link) the driver; idempotent: the same PUT twice leaves the same state. A driver it
        replaces loses the car: their link, and their Driver membership for it (else they would still read it,
        link themselves back and find its new driver's data in their export); the time they drove it is recorded
        first, while those still date it (their export keeps the car for that time, shared/drivers/periods.py), and
        the membership goes last. The write that names the new driver records the former one as a handover
        (shared/drivers/handover.py): a failure after it is finished by a retry, or by the car's next link."""
        await self.finish_handovers(vehicle_id)  # one a failure left goes first: it may be this driver's own
        now = canonical_time(self.clock())

        def change(doc: Document) -> None:
            previous = doc.get("driver")
            handover.mark(doc, previous, link.user_id, now)
            _set(doc, link, handover.driving_since(previous, link.user_id, now))

        # Their link first, the car's naming them next: a handover racing this one that names its driver after
        # us finds our link there and removes it with the rest of our leaving, instead of our writing it after.
        # Linked again to a car that named them before `since` was recorded: the link keeps its date, which dates
        # their time (shared/drivers/periods.py `began`). Should a handover race this, the write names them anew
        # and `since` (now) dates them instead.
        linked_at = await self._legacy_linked_at(vehicle_id, link.user_id) or now
        await self.store.upsert(
            CALENDARS,
            {
                "id": DRIVER_ID,
                "userId": link.user_id,
                "kind": KIND_DRIVER,
                "vehicleId": vehicle_id,
                "upn": link.upn,
                "timeZone": link.time_zone,
                "consent": link.consent(),
                "linkedAt": linked_at,
            },
        )
        try:
            await self._update(vehicle_id, change)
        except UnknownResourceError:  # the car went (erased) meanwhile: no link to it is left behind
            stored = await self.store.read(CALENDARS, link.user_id, DRIVER_ID)
            if stored is not None and stored.document.get("linkedAt") == linked_at:
                await self.store.delete(CALENDARS, link.user_id, DRIVER_ID)
            raise
        await self.finish_handovers(vehicle_id)
        # Calendar consent withdrawn: the job clears the stored calendar and the car's agenda instead.
        await self.queue.enqueue(SyncJob(link.user_id, "link", full=True))
        await self._consent_changed(vehicle_id)
        return {"vehicleId": vehicle_id, "driver": link.driver(), "consent": link.consent()}

    async def _legacy_linked_at(self, vehicle_id: str, user_id: str) -> str | None:
        """The date of the user's link to a car that names them without `since`; None otherwise."""
        if not await named_before_since(self.store, vehicle_id, user_id):
            return None
        before = await self.store.read(CALENDARS, user_id, DRIVER_ID)
        kept = before.document.get("linkedAt") if before is not None else None
        same_car = before is not None and before.document.get("vehicleId") == vehicle_id
        return kept if isinstance(kept, str) and same_car else None

    async def finish_handovers(self, vehicle_id: str) -> None:
        """Finish what a failure left of the car's earlier handovers (shared/drivers/handover.py): before anything
        else names or drops one of its drivers, so a former driver's time ends when it did, not then."""
        await handover.finish(self.store, vehicle_id, lambda entry: self._leave(entry, vehicle_id))

    async def unlink(self, vehicle_id: str, user_id: str | None = None) -> bool:
        """False when the vehicle had no driver (answered 404), or `user_id` is given and is not its driver (the
        check is part of the conditional write: a driver who linked meanwhile stays). The write records their
        leaving, which the handover finishes: their time recorded, the car's places set in it deleted, their link
        and Driver membership gone (shared/drivers/handover.py)."""
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        driver = stored.document.get("driver") if stored is not None else None
        if not isinstance(driver, dict) or not driver or (user_id is not None and driver.get("userId") != user_id):
            return False

        now = canonical_time(self.clock())

        def unset(doc: Document) -> None:
            current = doc.get("driver")
            if user_id is None or (isinstance(current, dict) and current.get("userId") == user_id):
                handover.mark(doc, current, None, now)  # their leaving, finished below or by whoever comes next
                _unset(doc)

        previous = await self._update(vehicle_id, unset)
        if previous and previous.get("userId") and (user_id is None or previous["userId"] == user_id):
            await self.finish_handovers(vehicle_id)
        elif user_id is not None:
            return False  # another driver linked between the read and the write: theirs stands
        await self._consent_changed(vehicle_id)
        return previous is not None

    async def _consent_changed(self, vehicle_id: str) -> None:
        """A new driver's choices become consent records and the car's twin shows them; without a driver the
        twin shows the brand's bases (shared/privacy/consent.py). Best effort: the link stands if IoT Hub is down
        (the car can still ask with `consent.get`, and the next decision pushes again); an erased car is skipped."""
        if self.gateway is None:
            return
        from shared.privacy.consent import ConsentService

        try:
            await ConsentService(self.store, self.gateway, self, self.clock).push(vehicle_id)
        except UnknownResourceError:
            return
        except IoTHubError as exc:
            log.warning("consent twin not updated after a driver link change: %s", exc)

    async def _leave(self, previous: Mapping[str, Any], vehicle_id: str) -> None:
        """The car's previous driver no longer drives it. A company driver's link goes, and its job forgets the
        calendar and clears the car's agenda. A driver account signed in at the car (`profile`) stays signed in on
        its profile, but its agenda no longer goes to the car (its driver document's `vehicleIds`), the profile is
        no longer the car's active one, and the car's agenda is cleared now (the account's sync job would not:
        its calendar consent stands)."""
        user, profile = str(previous["userId"]), previous.get("profile")
        if not profile:
            await self._drop_driver_doc(user, vehicle_id)
            await self.queue.enqueue(SyncJob(user, "unlink", vehicle_id=vehicle_id))
            return
        await exclude_car(self.store, user, vehicle_id)
        await self._deselect(vehicle_id, str(profile), user)

    async def _deselect(self, vehicle_id: str, profile: str, account_id: str) -> None:
        """The profile holding the account is no longer the car's active one; the twin's `agenda` and `account`
        follow (best effort, as `_consent_changed`: the car can ask again)."""
        from shared.accounts import profiles as P  # a leaf module (it imports nothing of shared/drivers)

        patch: dict[str, Any] = {"agenda": None}
        if (await P.read(self.store, vehicle_id)).get("active") == profile:

            def deselect(doc: Document) -> None:
                entry = doc["profiles"].get(profile) or {}
                if doc.get("active") == profile and entry.get("accountId") == account_id:
                    doc["active"] = None

            doc = await P.update(self.store, vehicle_id, deselect)
            patch[P.TWIN_PROPERTY] = P.twin_view(doc, canonical_time(self.clock()))
        if self.gateway is None:
            return
        try:
            await self.gateway.patch_desired_if_present(vehicle_id, patch)
            await clear_module_agenda(self.gateway, vehicle_id)  # the Edge module's copy of the agenda too
        except IoTHubError as exc:
            log.warning("agenda and profiles not updated on the twin after a driver link change: %s", exc)

    async def _drop_driver_doc(self, user: str, vehicle_id: str) -> None:
        doc = await self.store.read(CALENDARS, user, DRIVER_ID)
        if doc is not None and doc.document.get("vehicleId") == vehicle_id:
            await self.store.delete(CALENDARS, user, DRIVER_ID)

    async def _update(self, vehicle_id: str, change: Callable[[Document], None]) -> dict[str, Any] | None:
        """Apply `change` to the vehicle document (created when absent); returns the previous driver."""
        previous: list[Any] = [None]

        def apply(stored: Document | None) -> Document:
            if stored is None or is_erased(stored):
                raise UnknownResourceError(f"vehicle {vehicle_id} is not registered")
            doc = stored
            previous[0] = doc.get("driver")
            change(doc)
            return doc

        await update_vehicle(self.store, vehicle_id, apply)
        return dict(previous[0]) if isinstance(previous[0], dict) else None


async def exclude_car(store: DocumentStore, account_id: str, vehicle_id: str) -> None:
    """A driver account (a driver document listing several cars, `vehicleIds`) no longer sends its agenda to the
    car, and the car's travel state (derived from that agenda) goes; the account stays signed in there
    (shared/accounts)."""
    stored = await store.read(CALENDARS, account_id, DRIVER_ID)
    if stored is None or vehicle_id not in (stored.document.get("vehicleIds") or []):
        return

    def drop(doc: Document | None) -> Document:
        if doc is None:
            raise UnknownResourceError("driver document gone")
        doc = strip_system_properties(doc)
        doc["vehicleIds"] = [v for v in doc.get("vehicleIds") or [] if v != vehicle_id]
        return doc

    from shared.travel.stores import forget_car_travel

    # first: the routes to this account's meetings, from the car's positions (a retry after a failure here finds
    # the car still listed and deletes them again; done last, a retry would return above with them left)
    await forget_car_travel(store, vehicle_id)
    try:
        await update_document(store, CALENDARS, account_id, DRIVER_ID, drop)
    except UnknownResourceError:
        return


def _set(doc: Document, link: DriverLink, since: str | None) -> None:
    doc["driver"] = link.driver() if since is None else {**link.driver(), handover.SINCE: since}
    doc["consent"] = link.consent()


def _unset(doc: Document) -> None:
    doc.pop("driver", None)
    doc.pop("consent", None)
