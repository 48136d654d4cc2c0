"""The fleet API's behaviour, one method per operation, on the store and IoT Hub interfaces (no HTTP here).

Every method returns plain JSON-ready data shaped like its response model (api.py validates it on the way
out) or raises a RequestError (shared/errors.py). Reads never return the vehicle document's `ingest` bookkeeping.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from shared.auth.access import Visibility
from shared.brands import BrandConfigs
from shared.calendar.agenda import agenda_events
from shared.calendar.documents import KIND_EVENT, SYNC_STATE_ID
from shared.containers import (
    ALERTS,
    CALENDARS,
    GAPS,
    MEETINGS,
    TELEMETRY,
    TENANCY,
    TRAVEL,
    TRIPS,
    VEHICLES,
)
from shared.cost import graph_calls, rollup
from shared.cost.view import vehicle_cost
from shared.device_messages import canonical_time, safe_id
from shared.drivers.driven import driver_of
from shared.drivers.link import DriverLinks
from shared.errors import (
    AlreadyExistsError,
    ConflictError,
    FleetError,
    InvalidRequestError,
    IoTHubError,
    StateConflictError,
    UnknownResourceError,
)
from shared.geofences.store import Times, names_one_of, others_places
from shared.graph.base import GraphClient
from shared.iothub.gateway import DeviceExistsError, DeviceIdentity, IoTHubGateway
from shared.lake.store import LakeStore
from shared.privacy.consent import Actor, ConsentService, decision
from shared.privacy.erasure import Eraser, ForgetCalendar
from shared.provisioning.enrollment import EnrollmentKeys, enrollment_keys_from_env
from shared.provisioning.model import hub_in_region
from shared.provisioning.preregistration import (
    ProvisioningConfig,
    check_region,
    check_registration_id,
    new_provisioning,
)
from shared.provisioning.preregistration import answer as preregistration_answer
from shared.settings import moving_speed_kmh, number_setting
from shared.stores.base import DeadLetterSink, Document, DocumentStore
from shared.stores.paging import AlsoBefore, keyset_page
from shared.telemetry import signals as S
from shared.telemetry.alerts import CONDITION_KINDS, is_condition_in
from shared.telemetry.documents import (
    AlertDocument,
    DriverRef,
    PendingRegistration,
    Provisioning,
    SignalEntry,
    SignalValue,
    VehicleDocument,
    alerts_of,
    as_vehicle,
    signals_of,
    to_store,
)
from shared.telemetry.gaps import DATED_FROM_QUERY, dated, gaps_of, summary_of_reports
from shared.telemetry.history import stored_entries
from shared.telemetry.motion import motion
from shared.telemetry.privacy import POSITION, TRIP_POSITION_FIELDS, Policy, policy_for, scrub_entry
from shared.telemetry.vehicle import ERASED, is_erased, location_allowed, new_vehicle_document
from shared.tenancy.documents import fleet_doc_id
from shared.travel.stores import TRAVEL_DOC_ID
from shared.vehicle_updates import update_vehicle

ACK_STATUS: Final = "ack"  # alert acknowledgements live in `alerts` as `ack:{alertId}` with this status
DEFAULT_WINDOW: Final = dt.timedelta(hours=1)
ALLOCATION_SETTLE_SECONDS: Final = 300  # after an allocation, DPS has made the car's identity (or failed to)
# A direct registration's claim on its car (`pendingRegistration`) holds this long: no other registration of the car
# starts meanwhile (one that is still running is never raced), after it the claim has lapsed (a retry takes it over,
# the sweep removes what it left). Far longer than a registration takes (three calls); a crashed one blocks its car
# this long at most.
REGISTRATION_LEASE_SECONDS: Final = 300
# The attempt holding a claim stops acting on the identity (creating, deleting it) with this much of its lease left,
# and nobody takes a lapsed claim over (a retry, the sweep) before this long after the lease: an IoT Hub call of the
# attempt may outlast its lease by margin + grace (create_device takes no timeout) before it can race a takeover.
REGISTRATION_MARGIN_SECONDS: Final = 60
REGISTRATION_GRACE_SECONDS: Final = 60
# The sweep's query: it filters only on indexed paths of `vehicles` (shared/cosmos_containers.json).
SWEEP_QUERY: Final = "SELECT * FROM c WHERE IS_DEFINED(c.pendingRegistration.attempt)"
# What a document created by a claim holds besides it (no record worth keeping once the claim goes).
_BARE_KEYS: Final = frozenset({"id", "vehicleId", "type"})

log = logging.getLogger(__name__)


def ack_id(alert_id: str) -> str:
    return f"ack:{alert_id}"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class FleetService:
    store: DocumentStore
    gateway: IoTHubGateway
    links: DriverLinks
    forget_calendar: ForgetCalendar
    clock: Callable[[], dt.datetime] = utcnow
    agenda_horizon: dt.timedelta = dt.timedelta(hours=24)
    moving_speed_kmh: float = field(default_factory=moving_speed_kmh)
    dead_letters: Callable[[], DeadLetterSink] | None = None  # erasure deletes the car's contained messages
    graph: Callable[[], GraphClient] | None = None  # erasure deletes the driver's online meetings
    erasure_settle_seconds: float = 0.0  # see shared/privacy/erasure.py, the settle pass
    lake: Callable[[], LakeStore] | None = None  # erasure removes the car's rows from the analytics lake
    brands: BrandConfigs | None = None  # each brand's legal bases per data category (None: the app's)
    # Pre-registration for DPS (shared/provisioning): DPS endpoint, ID scope, stamps, development keys; read lazily.
    provisioning_config: Callable[[], ProvisioningConfig] = ProvisioningConfig.from_env
    enrollment_keys: Callable[[], EnrollmentKeys | None] = enrollment_keys_from_env

    # --- registration ---------------------------------------------------------------------------------------

    async def register(
        self,
        brand_id: str,
        fleet_id: str,
        vehicle_id: str,
        label: str | None,
        provisioning: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Direct mode (no `provisioning`, for development): the car is claimed (`pendingRegistration`), the claim
        marked `creating`, its device identity created, then its document completed in the write that removes the
        claim, and the key answered once. Any failure once the claim is marked (an IoT Hub timeout included: the
        create may have been applied) deletes the identity and removes the claim, restoring what it replaced (an
        erased car's tombstone; nothing for a car that had no document); if IoT Hub fails too, the claim stays,
        released, still naming the identity, and a retry takes it over at once. An identity that existed before the
        claim (made outside the API) is none of ours: 409, left alone. An attempt that died without cleaning up
        holds the car until its lease and a grace period have passed (409 meanwhile), then a retry takes over or
        `sweep_abandoned_registrations` deletes what it left.
        With `provisioning` ({attestation, region}): pre-registration for DPS, no identity (DPS creates it at first
        boot) and no secret (shared/provisioning/preregistration.py).
        The car belongs to the fleet from now on: every read and write of it is scoped by its brand and fleet."""
        if await self.store.read(TENANCY, brand_id, fleet_doc_id(fleet_id)) is None:
            raise UnknownResourceError(f"no fleet {fleet_id} in brand {brand_id}")
        if provisioning is not None:
            return await self._preregister(brand_id, fleet_id, vehicle_id, label, provisioning)
        # The car is claimed first (a car registered already, pre-registered for DPS perhaps in another brand, is
        # refused before an identity is made for it), so every identity this makes has a record naming it.
        attempt, earlier = await self._claim_registration(vehicle_id)
        ours = earlier  # whether an identity of this registration may exist (an earlier attempt's, if taken over)
        try:
            await self._mark_creating(vehicle_id, attempt)
            ours = True  # from here on the identity may exist whatever create_device answers (a timeout included)
            identity = await self._create_identity(vehicle_id, attempt, earlier)
            await self._complete_registration(vehicle_id, attempt, brand_id, fleet_id, label)
        except _Superseded as superseded:
            if ours and superseded.orphaned:  # erased (or swept) meanwhile: no record names the identity
                await self._delete_identity(vehicle_id)
            elif not superseded.orphaned:  # still ours but too close to its lapse to act on: released, for a retry
                await self._release_quietly(vehicle_id, attempt, identity_kept=ours)
            raise StateConflictError(
                f"the registration of {vehicle_id} was interrupted (the car was erased, or another registration "
                "took it over): register it again"
            ) from None
        except _Foreign:
            await self._disown(vehicle_id, attempt)
            await self._release_quietly(vehicle_id, attempt, identity_kept=False)
            raise AlreadyExistsError(
                f"{vehicle_id} is registered; its key is shown only once (DELETE to re-register)"
            ) from None
        except Exception:
            await self._abandon_registration(vehicle_id, attempt, ours)
            raise
        try:
            await self._collection_policy(brand_id, fleet_id, vehicle_id)
        except FleetError as exc:  # registered: the key must still be answered (a retry would be 409)
            log.warning(
                "vehicle %s registered; its collection policy was not pushed (%s): the fleet's next policy reaches it",
                safe_id(vehicle_id)[:64],
                type(exc).__name__,
            )
        return {
            "vehicleId": vehicle_id,
            "brandId": brand_id,
            "fleetId": fleet_id,
            "deviceId": identity.device_id,
            "hostName": identity.hostname,
            "primaryKey": identity.primary_key,
            "connectionString": identity.connection_string,
        }

    # A direct registration: claim → mark `creating` → identity → completion, each step recoverable
    # (docs/provisioning.md, "Direct mode"). The claim is `pendingRegistration` on the vehicle document, written
    # conditionally like every other write of it; the completion is conditional on the claim still being this
    # attempt's. The claim keeps what it replaced (`replaced`: an erased car's tombstone) so that removing it without
    # a registration restores that; a document holding nothing but the claim is deleted instead.

    async def _claim_registration(self, vehicle_id: str, sweep: bool = False) -> tuple[str, bool]:
        """Claim the car for one registration attempt: (its attempt id, whether it took over a claim whose attempt
        was creating an identity, so an identity found on the hub is that attempt's; the new claim keeps `creating`
        and `replaced`). A registered car is 409 (AlreadyExistsError); a claim still held by an attempt that may be
        running is 409 (StateConflictError). `sweep`: only an abandoned claim is taken (_NothingToSweep otherwise)."""
        now = self.clock()
        attempt = f"{'sweep-' if sweep else ''}{uuid.uuid4().hex}"
        creating: list[bool] = []

        def apply(stored: Document | None) -> Document:
            creating.clear()
            vehicle = as_vehicle(stored) if stored is not None else None
            replaced: Document | None = None
            if vehicle is not None and is_erased(vehicle):  # registering an erased car again starts afresh ...
                if sweep:
                    raise _NothingToSweep
                replaced = {k: v for k, v in vehicle.items() if not k.startswith("_")}  # ... its tombstone kept
                doc = new_vehicle_document(vehicle_id)
                doc["notBefore"] = canonical_time(now)  # ... taking none of the erased car's messages in flight
            else:
                doc = vehicle if vehicle is not None else new_vehicle_document(vehicle_id)
            pending = doc.get("pendingRegistration")
            if sweep and (pending is None or _registered(doc) or not _abandoned(pending, now)):
                raise _NothingToSweep
            if _registered(doc):
                raise AlreadyExistsError(f"{vehicle_id} is registered (DELETE to register it again)")
            if pending is not None and not _abandoned(pending, now):
                raise StateConflictError(
                    f"a registration of {vehicle_id} is under way; if it failed, retry after "
                    f"{_lease_left(pending, now)} s"
                )
            claim: dict[str, Any] = {"attempt": attempt, "startedAt": canonical_time(now)}
            if pending is not None and _claim_field(pending, "creating") is True:
                claim["creating"] = True
            if pending is not None and isinstance(_claim_field(pending, "replaced"), dict):
                replaced = _claim_field(pending, "replaced")
            if replaced is not None:
                claim["replaced"] = replaced
            creating.append("creating" in claim)
            doc["pendingRegistration"] = cast(PendingRegistration, claim)
            return to_store(doc)

        await update_vehicle(self.store, vehicle_id, apply)
        return attempt, creating[-1]

    async def _mark_creating(self, vehicle_id: str, attempt: str) -> None:
        """Before create_device: the claim records that this attempt is creating an identity (conditional on the
        claim being this attempt's with REGISTRATION_MARGIN_SECONDS of its lease left, _Superseded otherwise). Only
        a claim so marked lets a takeover or the sweep delete the car's identity."""
        now = self.clock()

        def apply(stored: Document | None) -> Document:
            vehicle = as_vehicle(stored) if stored is not None else None
            pending = vehicle.get("pendingRegistration") if vehicle is not None else None
            if vehicle is None or pending is None or pending.get("attempt") != attempt or not _acting(pending, now):
                raise _Superseded(orphaned=False)
            vehicle["pendingRegistration"] = cast(PendingRegistration, {**pending, "creating": True})
            return to_store(vehicle)

        await update_vehicle(self.store, vehicle_id, apply)

    async def _create_identity(self, vehicle_id: str, attempt: str, earlier: bool) -> DeviceIdentity:
        """The car's SAS identity. One that exists already is an earlier attempt's when this one took over a claim
        marked `creating` (that attempt never completed, so nobody saw its key): deleted and made again. Otherwise it
        existed before the claim, none of ours: _Foreign (409, left alone)."""
        try:
            return await self.gateway.create_device(vehicle_id)
        except DeviceExistsError:
            if not earlier:
                raise _Foreign from None
        await self._holding(vehicle_id, attempt)  # never delete an identity a newer attempt may have made
        await self.gateway.delete_device(vehicle_id)
        try:
            return await self.gateway.create_device(vehicle_id)
        except DeviceExistsError:
            raise StateConflictError(f"another registration of {vehicle_id} is under way") from None

    async def _holding(self, vehicle_id: str, attempt: str) -> None:
        """_Superseded unless the car's claim is still this attempt's with REGISTRATION_MARGIN_SECONDS of its lease
        left (nobody takes it over before the lease and REGISTRATION_GRACE_SECONDS have passed, so what this
        attempt does to the identity now races nobody, unless an IoT Hub call outlasts margin and grace)."""
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        pending = as_vehicle(stored.document).get("pendingRegistration") if stored is not None else None
        if pending is None or pending.get("attempt") != attempt or not _acting(pending, self.clock()):
            raise _Superseded(orphaned=False)

    async def _complete_registration(
        self, vehicle_id: str, attempt: str, brand_id: str, fleet_id: str, label: str | None
    ) -> None:
        """The registered car's document, in the write that removes this attempt's claim (_Superseded when the claim
        is no longer this attempt's: erased, swept or taken over meanwhile)."""
        now = canonical_time(self.clock())

        def change(doc: VehicleDocument) -> None:
            pending = doc.get("pendingRegistration")
            if pending is None or pending.get("attempt") != attempt:
                raise _Superseded(orphaned=pending is None and not _registered(doc))
            del doc["pendingRegistration"]  # and with it the tombstone it replaced: the car is registered again
            doc["registeredAt"] = now
            doc["brandId"] = brand_id
            doc["fleetId"] = fleet_id
            if label is not None:
                doc["label"] = label

        try:
            await self._update(vehicle_id, change, create=True)
        except FleetError:
            # A write that timed out may have been applied: then the car is registered (by this attempt: nobody
            # else can complete it while it holds the claim) and the key must be answered, not deleted.
            if not await self._completed(vehicle_id, now, brand_id, fleet_id):
                raise

    async def _completed(self, vehicle_id: str, registered_at: str, brand_id: str, fleet_id: str) -> bool:
        try:
            stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        except FleetError:
            return False
        doc = as_vehicle(stored.document) if stored is not None else None
        return (
            doc is not None
            and "pendingRegistration" not in doc
            and (doc.get("registeredAt"), doc.get("brandId"), doc.get("fleetId")) == (registered_at, brand_id, fleet_id)
        )

    async def _abandon_registration(self, vehicle_id: str, attempt: str, ours: bool) -> None:
        """After a failure, while the claim is still this attempt's (with its margin left): the identity this
        registration may have made deleted, then the claim removed (what it replaced restored); if the identity
        could not be deleted, or the claim is too close to its lapse to delete it now, the claim stays, released
        (it names the identity; a retry takes it over at once, the sweep removes both). Best effort: when the claim
        cannot be read or written the claim's lease and the sweep finish it."""
        if ours:
            try:
                await self._holding(vehicle_id, attempt)
            except _Superseded:
                await self._release_quietly(vehicle_id, attempt, identity_kept=True)
                return
            except FleetError as exc:
                log.warning("registration of %s left to the sweep (%s)", safe_id(vehicle_id)[:64], type(exc).__name__)
                return
        deleted = not ours or await self._delete_identity(vehicle_id)
        await self._release_quietly(vehicle_id, attempt, identity_kept=not deleted)

    async def _disown(self, vehicle_id: str, attempt: str) -> None:
        """create_device found an identity this attempt did not make: the claim's `creating` mark removed first,
        so that if removing the claim fails too no takeover or sweep deletes that identity. Tried twice; if both
        writes fail the mark stays (docs/provisioning.md, "Direct mode": the residual cases)."""

        def apply(stored: Document | None) -> Document:
            vehicle = as_vehicle(stored) if stored is not None else None
            pending = vehicle.get("pendingRegistration") if vehicle is not None else None
            if vehicle is None or pending is None or pending.get("attempt") != attempt:
                raise _Superseded(orphaned=False)
            vehicle["pendingRegistration"] = cast(
                PendingRegistration, {k: v for k, v in pending.items() if k != "creating"}
            )
            return to_store(vehicle)

        for _ in range(2):
            try:
                await update_vehicle(self.store, vehicle_id, apply)
                return
            except _Superseded:
                return
            except FleetError as exc:
                log.warning("claim on %s not disowned (%s)", safe_id(vehicle_id)[:64], type(exc).__name__)

    async def _release_quietly(self, vehicle_id: str, attempt: str, identity_kept: bool) -> None:
        try:
            await self._release(vehicle_id, attempt, identity_kept)
        except (_Superseded, FleetError) as exc:
            log.warning("registration of %s not released (%s)", safe_id(vehicle_id)[:64], type(exc).__name__)

    async def _release(self, vehicle_id: str, attempt: str, identity_kept: bool) -> None:
        """Give up this attempt's claim (_Superseded when it is not this attempt's any more). `identity_kept` (an
        identity of the registration may still exist): the claim stays, released, naming it. Otherwise the claim
        goes: the tombstone it replaced is restored, a document holding nothing but the claim is deleted (only while
        the claim may still be acted on, so nobody else writes the car meanwhile; later it stays released for the
        sweep), and any other document keeps everything but the claim."""
        now = self.clock()
        only_claim: list[bool] = []

        def apply(stored: Document | None) -> Document:
            only_claim.clear()
            vehicle = as_vehicle(stored) if stored is not None else None
            pending = vehicle.get("pendingRegistration") if vehicle is not None else None
            if vehicle is None or pending is None or pending.get("attempt") != attempt:
                raise _Superseded(orphaned=False)  # another attempt's now (or erased): nothing of ours to release
            replaced = _claim_field(pending, "replaced")
            rest = {k: v for k, v in vehicle.items() if k != "pendingRegistration"}
            bare = replaced is None and set(rest) <= _BARE_KEYS
            if identity_kept or (bare and not _acting(pending, now)):
                vehicle["pendingRegistration"] = cast(PendingRegistration, {**pending, "released": True})
                return to_store(vehicle)
            if isinstance(replaced, dict):
                return cast(Document, copy.deepcopy(replaced))
            if bare:
                only_claim.append(True)
                raise _OnlyTheClaim
            return to_store(cast(VehicleDocument, rest))

        try:
            await update_vehicle(self.store, vehicle_id, apply)
        except _OnlyTheClaim:
            # The claim is this attempt's and live (no registration can take the car meanwhile): nothing else in it.
            await self.store.delete(VEHICLES, vehicle_id, safe_id(vehicle_id))

    async def _delete_identity(self, vehicle_id: str) -> bool:
        """delete_device; False when IoT Hub failed (logged), True when the identity is gone."""
        try:
            await self.gateway.delete_device(vehicle_id)
        except FleetError as exc:
            log.warning("identity of %s not deleted (%s)", safe_id(vehicle_id)[:64], type(exc).__name__)
            return False
        return True

    async def sweep_abandoned_registrations(self) -> list[str]:
        """Direct registrations abandoned (their claim released, or lapsed by the lease and the grace period): each
        claimed by the sweep, its identity deleted if the claim says an attempt was creating one, then the claim
        removed (what it replaced restored). The cars swept. A timer runs it (functions/provisioning.py); a car
        whose identity IoT Hub would not delete now keeps the sweep's claim, released (a retry of the registration
        takes it over at once), and the next run tries again."""
        # served by the index (/pendingRegistration/attempt/?): a few documents read, not every car's
        query = SWEEP_QUERY
        now = self.clock()
        swept: list[str] = []
        for doc in await self.store.query(VEHICLES, query):
            vehicle_id, pending = doc.get("vehicleId"), doc.get("pendingRegistration")
            if not isinstance(vehicle_id, str) or not isinstance(pending, dict) or is_erased(doc):
                continue
            if not _abandoned(cast(PendingRegistration, pending), now):
                continue
            try:
                attempt, creating = await self._claim_registration(vehicle_id, sweep=True)
            except (_NothingToSweep, FleetError):  # completed, taken over or erased since the query
                continue
            deleted = not creating or await self._delete_identity(vehicle_id)
            try:
                await self._release(vehicle_id, attempt, identity_kept=not deleted)
            except (_Superseded, FleetError) as exc:
                log.warning("registration of %s not released (%s)", safe_id(vehicle_id)[:64], type(exc).__name__)
                continue
            if deleted:
                swept.append(vehicle_id)
                log.info("abandoned registration of %s swept", safe_id(vehicle_id)[:64])
        return swept

    async def _preregister(
        self, brand_id: str, fleet_id: str, vehicle_id: str, label: str | None, choice: Mapping[str, str]
    ) -> dict[str, Any]:
        check_registration_id(vehicle_id)
        config = self.provisioning_config()
        check_region(config, choice["region"])
        keys = self.enrollment_keys() if choice["attestation"] == "symmetricKey" and config.development_keys else None
        device_key: str | None = None
        if keys is not None:  # before the write: DPS failing here leaves no registration whose key was never shown
            try:
                device_key = await keys.device_key(vehicle_id)
            finally:
                await keys.close()
        now = canonical_time(self.clock())
        written: list[dict[str, Any]] = []

        def change(doc: VehicleDocument) -> None:
            if _registered(doc):
                raise AlreadyExistsError(f"{vehicle_id} is registered (DELETE to register it again)")
            if "pendingRegistration" in doc:  # a direct registration may have made its identity: not both
                raise StateConflictError(
                    f"a direct registration of {vehicle_id} is under way or was interrupted: retry it, or erase the "
                    "car (DELETE) before pre-registering it"
                )
            provisioning = new_provisioning(choice["attestation"], choice["region"], now)
            written.append(provisioning)
            doc["registeredAt"] = now
            doc["brandId"] = brand_id
            doc["fleetId"] = fleet_id
            doc["provisioning"] = cast(Provisioning, provisioning)
            if label is not None:
                doc["label"] = label

        await self._update(vehicle_id, change, create=True)
        return preregistration_answer(config, device_key, vehicle_id, brand_id, fleet_id, written[-1])

    async def _collection_policy(self, brand_id: str, fleet_id: str, vehicle_id: str) -> None:
        """The car's Edge module gets its fleet's (or brand's) collection policy, if its module identity exists
        already; otherwise the next PUT of the policy reaches it (shared/collection/service.py)."""
        from shared.collection.service import CollectionService

        await CollectionService(self.store, self.gateway, self.clock).push_to_vehicle(brand_id, fleet_id, vehicle_id)

    # --- revocation -----------------------------------------------------------------------------------------

    async def revoke(self, vehicle_id: str) -> dict[str, Any]:
        """A stolen or scrapped car: `provisioning.status` revoked first (the allocation function refuses it from
        this write on, so it cannot re-provision in between), then its device disabled on its hub (its connection
        is closed and it cannot connect again). Idempotent: the first `revokedAt` stays; a retry after a failed
        hub call disables it then. Only for cars pre-registered for DPS (409 for a car registered directly: erase
        it instead)."""
        now = canonical_time(self.clock())
        states: list[dict[str, Any]] = []

        def change(doc: VehicleDocument) -> None:
            current = doc.get("provisioning")
            if not isinstance(current, dict):
                raise StateConflictError(f"{vehicle_id} was registered directly, not for DPS: erase it instead")
            updated = dict(current)
            if updated.get("status") != "revoked":
                updated.update({"status": "revoked", "revokedAt": now})
            doc["provisioning"] = cast(Provisioning, updated)
            states.append(updated)

        await self._update(vehicle_id, change)
        disabled = await self.gateway.set_device_enabled(vehicle_id, False)
        state = states[-1]
        if not disabled and _just_allocated(state, self.clock()):
            # Allocated moments ago, so DPS may be making its identity right now: one made after this call would
            # be enabled, and the car connected though revoked. Answered 503 (the revocation is recorded): the
            # caller's retry disables it. Long after (DPS failed, or the identity was deleted) there is none to wait
            # for: answered with deviceDisabled false.
            raise IoTHubError(f"{vehicle_id}: no device identity on its hub yet (DPS may be creating it); retry")
        return {
            "vehicleId": vehicle_id,
            "status": "revoked",
            "revokedAt": state["revokedAt"],
            "hub": state.get("hub"),
            "deviceDisabled": disabled,
        }

    async def reinstate(self, vehicle_id: str) -> dict[str, Any]:
        """A recovered car: back to `assigned` (or `preregistered` if it never provisioned), `revokedAt` removed,
        its device enabled again on its hub. Idempotent; 409 for a car registered directly."""
        states: list[dict[str, Any]] = []

        def change(doc: VehicleDocument) -> None:
            current = doc.get("provisioning")
            if not isinstance(current, dict):
                raise StateConflictError(f"{vehicle_id} was registered directly, not for DPS")
            updated: dict[str, Any] = dict(current)
            if updated.get("status") == "revoked":
                updated["status"] = "assigned" if updated.get("hub") else "preregistered"
                updated.pop("revokedAt", None)
            doc["provisioning"] = cast(Provisioning, updated)
            states.append(updated)

        await self._update(vehicle_id, change)
        state = states[-1]
        enabled = await self.gateway.set_device_enabled(vehicle_id, True) if state.get("hub") else False
        return {"vehicleId": vehicle_id, "status": state["status"], "hub": state.get("hub"), "deviceEnabled": enabled}

    async def move_region(self, vehicle_id: str, region: str) -> dict[str, Any]:
        """Data residency changes (a car sold abroad): `provisioning.region` becomes `region`, a region some stamp
        serves (400 otherwise, as at pre-registration). Nothing else changes now: the car keeps its hub until it
        provisions again, when the allocation function assigns it a hub of the new region (its current hub is
        kept only while it is in that region). 409 for a car registered directly or revoked. Idempotent."""
        config = self.provisioning_config()
        states: list[tuple[str, dict[str, Any]]] = []

        def change(doc: VehicleDocument) -> None:
            current = doc.get("provisioning")
            if not isinstance(current, dict):
                raise StateConflictError(
                    f"{vehicle_id} was registered directly, not for DPS: it has no region to move (erase it and "
                    "pre-register it in the new region)"
                )
            if current.get("status") == "revoked":
                raise StateConflictError(f"{vehicle_id} is revoked: reinstate it before moving it")
            check_region(config, region)
            updated: dict[str, Any] = dict(current)
            previous = str(updated.get("region"))
            updated["region"] = region
            doc["provisioning"] = cast(Provisioning, updated)
            states.append((previous, updated))

        await self._update(vehicle_id, change)
        previous, state = states[-1]
        hub = state.get("hub")
        return {
            "vehicleId": vehicle_id,
            "region": region,
            "previousRegion": previous,
            "status": state["status"],
            "hub": hub,
            "movesAtNextProvisioning": isinstance(hub, str) and not hub_in_region(config.stamps, hub, region),
        }

    # --- reads ----------------------------------------------------------------------------------------------

    async def list_vehicles(
        self,
        visible: Visibility,
        limit: int,
        token: str | None,
        brand_id: str | None = None,
        fleet_id: str | None = None,
    ) -> dict[str, Any]:
        """The cars the caller may see (`visible`, from their grants), optionally of one brand or fleet."""
        select = (
            "c.id, c.vehicleId, c.brandId, c.fleetId, c.label, c.registeredAt, c.lastSeen, c.state, c.trip, "
            "c.alerts, c.driver, c.consent, c.cost"
        )
        where, parameters = f"IS_DEFINED(c.vehicleId) AND c.type != '{ERASED}'", dict[str, Any]()
        if not visible.everything:
            where += (
                " AND (ARRAY_CONTAINS(@brands, c.brandId) OR ARRAY_CONTAINS(@fleets, CONCAT(c.brandId, '/', "
                "c.fleetId)) OR ARRAY_CONTAINS(@vehicles, CONCAT(c.brandId, '/', c.vehicleId)))"
            )
            parameters["@brands"] = sorted(visible.brands)
            parameters["@fleets"] = sorted(f"{b}/{f}" for b, f in visible.fleets)
            # a car's grant in its brand: a car erased and registered in another brand is not its old driver's
            parameters["@vehicles"] = sorted(f"{b}/{v}" for b, v in visible.vehicles)
        if brand_id is not None:
            where += " AND c.brandId = @brand"
            parameters["@brand"] = brand_id
        if fleet_id is not None:
            where += " AND c.fleetId = @fleet"
            parameters["@fleet"] = fleet_id
        scope = "|".join(("vehicles", brand_id or "", fleet_id or "", repr(sorted(map(str, parameters.items())))))
        page = await keyset_page(
            self.store,
            VEHICLES,
            scope=scope,
            where=where,
            parameters=parameters,
            key="id",
            limit=limit,
            token=token,
            select=select,
            match=lambda d: (
                visible.allows(d.get("brandId"), d.get("fleetId"), d.get("vehicleId"), driver_of(d))
                and (brand_id is None or d.get("brandId") == brand_id)
                and (fleet_id is None or d.get("fleetId") == fleet_id)
                and d.get("type") != ERASED
            ),
        )
        # The projection holds every field summary reads (not `type`, which it does not read).
        return {
            "items": [
                await self._summary(
                    as_vehicle(doc), visible.reads_from(doc.get("brandId"), doc.get("fleetId"), doc.get("driver"))
                )
                for doc in page.items
            ],
            "continuationToken": page.token,
        }

    async def policy(self, doc: VehicleDocument) -> Policy:
        """What the car withholds now (its consent under its brand's bases): reads hide it too, including what was
        stored before a withdrawal and is not scrubbed yet (history chunks already flushed)."""
        bases: tuple[tuple[str, str], ...] = ()
        if self.brands is not None:
            chosen = await self.brands.get(doc.get("brandId"))
            bases = tuple(sorted(chosen.data_category_bases.items()))
        return policy_for(doc, bases)

    async def _summary(self, doc: VehicleDocument, since: str = "") -> dict[str, Any]:
        out = summary(doc, self.moving_speed_kmh, await self.policy(doc), since)
        meter = vehicle_cost(doc.get("cost"), self.clock())
        out["monthlyUsd"], out["costEstimated"] = meter["monthlyUsd"], meter["estimated"]
        return out

    async def get_vehicle(self, vehicle_id: str, since: str = "", hidden: Times = ()) -> dict[str, Any]:
        """`since`: the earliest dated data the caller reads (a driver's time with the car, shared/auth/access.py
        `reads_from`): a trip or an alert from before it is the driver's before them. The state is undated: the
        current driver's, as in their export."""
        doc = await self._vehicle(vehicle_id)
        acks = await self._acks(vehicle_id)
        state = doc.get("state")
        policy = await self.policy(doc)
        theirs = await others_places(self.store, vehicle_id, hidden) if hidden else frozenset()
        out = summary(doc, self.moving_speed_kmh, policy, since, theirs)
        out["stateTs"] = state.get("ts") if state else None
        out["signals"] = {path: entry for path, entry in signals_of(doc).items() if policy.reason_of(path) is None}
        out["trip"] = trip_since(doc, since)
        out["alerts"] = [
            with_ack(alert, acks)
            for alert in sorted(alerts_since(doc, since, theirs), key=lambda a: a.get("raisedAt", ""), reverse=True)
        ]
        out["gaps"] = gaps_of(doc) if not since else await self._gaps_since(vehicle_id, since)
        now = self.clock()
        graph = graph_calls.car_calls(await self._graph_calls(doc), vehicle_id, now)
        out["cost"] = vehicle_cost(doc.get("cost"), now, await self._maps_calls(vehicle_id), graph)
        out["monthlyUsd"], out["costEstimated"] = out["cost"]["monthlyUsd"], out["cost"]["estimated"]
        return out

    async def _gaps_since(self, vehicle_id: str, since: str) -> dict[str, Any]:
        """The car's gap summary over the reports of losses from `since` on (`gaps.dated`: a loss in a former
        driver's time reported in this one's is not theirs; the car's summary counts its whole life)."""
        parameters = {"@v": vehicle_id, "@s": since}
        found = await self.store.query(GAPS, DATED_FROM_QUERY, parameters, partition_key=vehicle_id)
        return dict(summary_of_reports([d for d in found if dated(d) >= since]))

    async def _maps_calls(self, vehicle_id: str) -> int | None:
        """Azure Maps calls of the car's travel planning in the last hour (its budget, shared/travel/budget.py);
        None while it has no travel document. A point read (1 RU a KB; a query costs more)."""
        stored = await self.store.read(TRAVEL, vehicle_id, TRAVEL_DOC_ID)
        state = stored.document.get("state") if stored is not None else None
        calls = state.get("calls") if isinstance(state, dict) else None
        return len(calls) if isinstance(calls, list) else None

    async def _graph_calls(self, doc: VehicleDocument) -> Any:
        """The `graphCalls` block of the car's driver's calendar sync state (shared/cost/graph_calls.py); None
        without a driver or before their first sync. A point read, as `_maps_calls`."""
        driver = doc.get("driver")
        user = driver.get("userId") if isinstance(driver, dict) else None
        if not isinstance(user, str) or not user:
            return None
        stored = await self.store.read(CALENDARS, user, SYNC_STATE_ID)
        return stored.document.get("graphCalls") if stored is not None else None

    async def brand_cost(self, brand_id: str, days: int = rollup.DEFAULT_HISTORY_DAYS) -> dict[str, Any]:
        """The brand's cost meter: its cars' `cost` blocks summed per day and month as of `asOf` (docs/cost.md,
        "The cost meter": the brand's snapshot, one point read, summed again page by page when older than
        COST_SNAPSHOT_MAX_AGE_SECONDS), and the daily rollup's last `days` days."""
        now = self.clock()
        max_age = number_setting("COST_SNAPSHOT_MAX_AGE_SECONDS")
        out = await rollup.brand_cost_now(self.store, brand_id, now, max_age)
        out["history"] = await rollup.history(self.store, brand_id, now, days)
        return out

    async def telemetry(
        self,
        vehicle_id: str,
        start: dt.datetime | None,
        end: dt.datetime | None,
        limit: int,
        token: str | None,
        since: str = "",
    ) -> dict[str, Any]:
        """Samples between `start` and `end`, none before `since` (see `get_vehicle`)."""
        doc = await self._vehicle(vehicle_id)
        end = end or self.clock()
        start = start or end - DEFAULT_WINDOW
        try:
            low, high = canonical_time(start), canonical_time(end)
        except (OverflowError, ValueError):
            raise InvalidRequestError("from and to must be times between years 1 and 9998") from None
        if low > high:
            raise InvalidRequestError("from must not be after to")
        out: dict[str, Any] = {"vehicleId": vehicle_id, "from": low, "to": high, "items": [], "continuationToken": None}
        floor = max(low, since)  # the window as asked; a driver's samples from their time on
        if floor > high:
            return out
        page = await keyset_page(
            self.store,
            TELEMETRY,
            scope=f"telemetry|{vehicle_id}|{floor}|{high}",
            where='c.vehicleId = @v AND c["to"] >= @from AND c["from"] <= @to',
            parameters={"@v": vehicle_id, "@from": floor, "@to": high},
            key="from",
            limit=limit,
            token=token,
            partition_key=vehicle_id,
            match=lambda d: d.get("vehicleId") == vehicle_id and d.get("to", "") >= floor and d.get("from", "") <= high,
        )
        messages = [m for chunk in page.items for m in stored_entries(chunk.get("messages"))]
        ingest = doc.get("ingest")
        if page.token is None and ingest:  # the newest history is still in the vehicle document's buffer
            messages += stored_entries(ingest.get("pending"))
        items = [m for m in (in_window(m, floor, high) for m in messages) if m is not None]
        policy = await self.policy(doc)
        if policy:  # recorded while it was collected: still not shown while it is withheld
            items = [withheld_removed(m, policy) for m in items]
        return {**out, "items": items, "continuationToken": page.token}

    async def trips(self, vehicle_id: str, limit: int, token: str | None, since: str = "") -> dict[str, Any]:
        """Newest first; none that started before `since` (see `get_vehicle`): a trip the car drove across a change
        of driver is neither's, as in the export."""
        doc = await self._vehicle(vehicle_id)
        page = await keyset_page(
            self.store,
            TRIPS,
            scope=f"trips|{vehicle_id}",
            where="c.vehicleId = @v",
            parameters={"@v": vehicle_id},
            key="startTs",
            descending=True,
            limit=limit,
            token=token,
            partition_key=vehicle_id,
            match=lambda d: d.get("vehicleId") == vehicle_id,
            since=since,
        )
        live = doc.get("trip")
        items = [live if isinstance(live, dict) and live.get("id") == t["id"] else t for t in page.items]
        if POSITION in (await self.policy(doc)).withheld:
            items = [{**t, **dict.fromkeys(TRIP_POSITION_FIELDS)} for t in items]
        return {"items": items, "continuationToken": page.token}

    async def alerts(
        self, vehicle_id: str, limit: int, token: str | None, since: str = "", hidden: Times = ()
    ) -> dict[str, Any]:
        """Newest first; none raised before `since` (see `get_vehicle`) but those of the car's condition active in
        the caller's time (`is_condition_in`), nor of a former driver's place (`hidden`: the times of former drivers
        whose handover, which deletes their places, is unfinished)."""
        await self._vehicle(vehicle_id)
        page = await keyset_page(
            self.store,
            ALERTS,
            scope=f"alerts|{vehicle_id}",
            where="c.vehicleId = @v",
            parameters={"@v": vehicle_id},
            key="raisedAt",
            descending=True,
            limit=limit,
            token=token,
            partition_key=vehicle_id,
            match=lambda d: d.get("vehicleId") == vehicle_id and d.get("status") != ACK_STATUS,
            since=since,
            also=conditions_in(since),
        )
        acks = await self._acks(vehicle_id) if page.items else {}
        theirs = await others_places(self.store, vehicle_id, hidden) if hidden and page.items else frozenset()
        items = [with_ack(a, acks) for a in page.items if not names_one_of(a, theirs)]
        return {"items": items, "continuationToken": page.token}

    async def agenda(self, vehicle_id: str) -> dict[str, Any]:
        doc = await self._vehicle(vehicle_id)
        user, consent = driver_user(doc.get("driver")), consent_of(doc)
        out: dict[str, Any] = {"vehicleId": vehicle_id, "userId": user, "calendarConsent": consent["calendar"]}
        if not user or not consent["calendar"]:
            return {**out, "events": [], "syncedAt": None}
        query = "SELECT * FROM c WHERE c.userId = @u AND c.kind = @kind"
        events = await self.store.query(CALENDARS, query, {"@u": user, "@kind": KIND_EVENT}, partition_key=user)
        state = await self.store.read(CALENDARS, user, SYNC_STATE_ID)
        chosen = agenda_events([e for e in events if e.get("kind") == KIND_EVENT], self.clock(), self.agenda_horizon)
        return {**out, "events": chosen, "syncedAt": state.document.get("lastSyncAt") if state else None}

    async def meetings(self, vehicle_id: str, limit: int, token: str | None) -> dict[str, Any]:
        doc = await self._vehicle(vehicle_id)
        user = driver_user(doc.get("driver"))
        if not user or not consent_of(doc)["calendar"]:
            return {"items": [], "continuationToken": None}
        page = await keyset_page(
            self.store,
            MEETINGS,
            scope=f"meetings|{vehicle_id}|{user}",
            where="c.userId = @u",
            parameters={"@u": user},
            key="createdAt",
            descending=True,
            limit=limit,
            token=token,
            partition_key=user,
            match=lambda d: d.get("userId") == user and bool(d.get("joinWebUrl")),
        )
        return {"items": page.items, "continuationToken": page.token}

    # --- alert acknowledgement ------------------------------------------------------------------------------

    async def acknowledge(self, vehicle_id: str, alert_id: str, note: str | None) -> dict[str, Any]:
        """Ingestion upserts alert documents from its outbox (and may write the same one again), so the ack is
        a document of its own, `ack:{alertId}` in the alert's partition, merged when alerts are read."""
        doc = await self._vehicle(vehicle_id)
        stored = await self.store.read(ALERTS, vehicle_id, alert_id)
        alert: Mapping[str, Any] | None = stored.document if stored else None
        if alert is None:  # raised but its outbox entry not written yet: the vehicle document has it
            alert = next((a for a in alerts_of(doc).values() if a.get("id") == alert_id), None)
        if alert is None or alert.get("status") == ACK_STATUS:
            raise UnknownResourceError(f"vehicle {vehicle_id} has no alert {alert_id}")
        ack: Document = {
            "id": ack_id(alert_id),
            "vehicleId": vehicle_id,
            "type": "alertAck",
            "status": ACK_STATUS,
            "alertId": alert_id,
            "ackedAt": canonical_time(self.clock()),
            "note": note,
        }
        try:
            await self.store.create(ALERTS, ack)
        except ConflictError:  # acknowledged before: the first acknowledgement stands (idempotent)
            first = await self.store.read(ALERTS, vehicle_id, ack_id(alert_id))
            ack = first.document if first else ack
        return with_ack(alert, {alert_id: ack})

    async def _acks(self, vehicle_id: str) -> dict[str, Document]:
        query = "SELECT * FROM c WHERE c.vehicleId = @v AND c.status = @s"
        found = await self.store.query(ALERTS, query, {"@v": vehicle_id, "@s": ACK_STATUS}, partition_key=vehicle_id)
        return {d["alertId"]: d for d in found if d.get("status") == ACK_STATUS and isinstance(d.get("alertId"), str)}

    # --- consent --------------------------------------------------------------------------------------------

    async def change_consent(self, vehicle_id: str, location: bool | None, calendar: bool | None) -> dict[str, Any]:
        """The two flags of PATCH /consent as consent records (shared/privacy/consent.py): `location` decides every
        category it governs (position, navigation destination), `calendar` the calendar. Recorded as the car's
        driver (consent.change is theirs alone) through the API, without a terms version (this body has none).
        The records drive the rest: the projection into the vehicle document, the scrub of what is now withheld,
        the calendar sync's copy of the link and its job, the car's twin."""
        from shared.privacy.categories import default_categories

        user = driver_user((await self._vehicle(vehicle_id)).get("driver"))
        if not user:
            raise UnknownResourceError(f"vehicle {vehicle_id} has no driver: consent is a driver's to give")
        catalogue = default_categories()
        categories: dict[str, bool] = {}
        for flag, value in (("location", location), ("calendar", calendar)):
            if value is not None:
                categories.update(dict.fromkeys(sorted(catalogue.governed_by(flag)), value))
        wanted = decision(categories, "api", None, Actor("driver", user), terms_required=False)
        answer = await self.consents.record(vehicle_id, wanted)
        after = consent_of(await self._vehicle(vehicle_id))
        return {"vehicleId": vehicle_id, "consent": after, "positionsRemoved": answer["removed"]}

    @property
    def consents(self) -> ConsentService:
        """Consent records of this service's store, IoT Hub and driver links (the consent routes use it too)."""
        return ConsentService(self.store, self.gateway, self.links, self.clock)

    # --- right to erasure (shared/privacy/erasure.py) -----------------------------------------------------

    @property
    def eraser(self) -> Eraser:
        return Eraser(
            self.store,
            self.gateway,
            self.links,
            self.forget_calendar,
            self.dead_letters,
            self.graph,
            self.clock,
            self.erasure_settle_seconds,
            self.lake,
        )

    async def erase_vehicle(self, vehicle_id: str) -> dict[str, Any]:
        """Tombstone first, then identity, documents, dead letters, meetings; the receipt. Idempotent."""
        return (await self.eraser.erase_vehicle(vehicle_id)).as_dict()

    async def erase_driver(self, user_id: str) -> dict[str, Any]:
        """Calendar, meetings (in Graph too), subscription, links, memberships, audit ids; the receipt."""
        return (await self.eraser.erase_driver(user_id)).as_dict()

    # --- helpers --------------------------------------------------------------------------------------------

    async def _vehicle(self, vehicle_id: str) -> VehicleDocument:
        """The vehicle document, typed: the one place the reads below turn the store's dict into one."""
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        if stored is None or is_erased(stored.document):
            raise UnknownResourceError(f"vehicle {vehicle_id} is not registered")
        return as_vehicle(stored.document)

    async def _update(self, vehicle_id: str, change: Callable[[VehicleDocument], None], create: bool = False) -> None:
        """Apply `change` to the vehicle document; a missing or erased car is a 404 unless `create`."""

        def apply(stored: Document | None) -> Document:
            vehicle = as_vehicle(stored) if stored is not None else None
            if (vehicle is None or is_erased(vehicle)) and not create:
                raise UnknownResourceError(f"vehicle {vehicle_id} is not registered")
            if vehicle is not None and not is_erased(vehicle):
                doc = vehicle
            else:  # registering an erased car again starts from a new document (its tombstone holds nothing) ...
                doc = new_vehicle_document(vehicle_id)
                if vehicle is not None:  # ... that takes none of the erased car's messages still in flight
                    doc["notBefore"] = canonical_time(self.clock())
            change(doc)
            return to_store(doc)

        await update_vehicle(self.store, vehicle_id, apply)


def _just_allocated(provisioning: Mapping[str, Any], now: dt.datetime) -> bool:
    """Assigned to a hub within the last ALLOCATION_SETTLE_SECONDS (DPS creates the identity after the answer)."""
    assigned = provisioning.get("assignedAt")
    if not provisioning.get("hub") or not isinstance(assigned, str):
        return False
    try:
        at = dt.datetime.fromisoformat(assigned.replace("Z", "+00:00"))
    except ValueError:
        return False
    return (now - at).total_seconds() < ALLOCATION_SETTLE_SECONDS


class _Superseded(Exception):
    """This registration attempt no longer holds its car's claim. `orphaned`: no claim and no registration at all
    (the car was erased or swept meanwhile), so an identity the attempt made is named by nothing."""

    def __init__(self, orphaned: bool) -> None:
        super().__init__("superseded")
        self.orphaned = orphaned


class _NothingToSweep(Exception):
    """The claim the sweep found is gone, or no longer abandoned."""


class _Foreign(Exception):
    """create_device found an identity that existed before the claim and no claim of ours was creating: not ours."""


class _OnlyTheClaim(Exception):
    """The document holds nothing but this attempt's claim: deleted rather than left behind."""


def _started(pending: PendingRegistration) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(pending.get("startedAt")).replace("Z", "+00:00"))
    except ValueError:
        return None


def _elapsed(pending: PendingRegistration, now: dt.datetime) -> float | None:
    started = _started(pending)
    return None if started is None else (now - started).total_seconds()


def _abandoned(pending: PendingRegistration, now: dt.datetime) -> bool:
    """A claim no attempt may still act on: released by its failed attempt, lapsed (lease and grace), or
    unreadable."""
    elapsed = _elapsed(pending, now)
    return (
        pending.get("released") is True
        or elapsed is None
        or elapsed >= REGISTRATION_LEASE_SECONDS + REGISTRATION_GRACE_SECONDS
    )


def _acting(pending: PendingRegistration, now: dt.datetime) -> bool:
    """The claim's attempt may still act on the identity: not released, REGISTRATION_MARGIN_SECONDS of lease left."""
    elapsed = _elapsed(pending, now)
    return (
        pending.get("released") is not True
        and elapsed is not None
        and elapsed < REGISTRATION_LEASE_SECONDS - REGISTRATION_MARGIN_SECONDS
    )


def _lease_left(pending: PendingRegistration, now: dt.datetime) -> int:
    elapsed = _elapsed(pending, now)
    lapse = REGISTRATION_LEASE_SECONDS + REGISTRATION_GRACE_SECONDS
    return 0 if elapsed is None else max(1, int(lapse - elapsed))


def _claim_field(pending: PendingRegistration, key: str) -> Any:
    """A field of the claim PendingRegistration does not type (`creating`, `replaced`)."""
    return cast(Mapping[str, Any], pending).get(key)


def _registered(doc: VehicleDocument) -> bool:
    """Registered, directly or for DPS (an erased car's tombstone is not: registering it again starts afresh)."""
    return not is_erased(doc) and ("registeredAt" in doc or "provisioning" in doc)


def driver_user(driver: DriverRef | None) -> str | None:
    """The linked driver's user id; None while no driver is linked."""
    return driver.get("userId") if driver else None


def consent_of(doc: VehicleDocument) -> dict[str, bool]:
    """Absent consent: location not withheld (as ingestion reads it), calendar not given."""
    consent = doc.get("consent")
    consent = consent if isinstance(consent, dict) else {}
    return {"location": location_allowed(doc), "calendar": consent.get("calendar") is True}


def _value(signals: dict[str, SignalEntry], path: str) -> SignalValue:
    entry = signals.get(path)
    return entry.get("value") if entry else None


def _number(signals: dict[str, SignalEntry], path: str) -> float | None:
    value = _value(signals, path)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def trip_since(doc: VehicleDocument, since: str) -> Any:
    """The car's open or last trip, if it started at or after `since` ("": any)."""
    trip = doc.get("trip")
    return trip if not since or (isinstance(trip, dict) and str(trip.get("startTs") or "") >= since) else None


def conditions_in(since: str) -> AlsoBefore:
    """`is_condition_in` as a query's clause, for pages of the `alerts` container from `since` on."""
    return AlsoBefore(
        "ARRAY_CONTAINS(@__alsoKinds, c.kind) AND (c.status = @__alsoActive OR c.clearedAt >= @__alsoSince)",
        {"@__alsoKinds": sorted(CONDITION_KINDS), "@__alsoActive": "active", "@__alsoSince": since},
        lambda alert: is_condition_in(alert, since),
    )


def alerts_since(doc: VehicleDocument, since: str, theirs: frozenset[str] = frozenset()) -> list[AlertDocument]:
    """The car's active alerts raised at or after `since` ("": all) or about its condition (`is_condition_in`), but
    those about a place of `theirs`."""
    return [
        a
        for a in alerts_of(doc).values()
        if (not since or str(a.get("raisedAt") or "") >= since or is_condition_in(a, since))
        and not names_one_of(a, theirs)
    ]


def summary(
    doc: VehicleDocument,
    moving_speed_kmh: float,
    policy: Policy | None = None,
    since: str = "",
    theirs: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The list row of a car; `moving` by the safe-driving rule (shared/telemetry/motion.py: Vehicle.IsMoving, or
    the speed above MOVING_SPEED_KMH), the one commands and requests apply; no position while the car withholds it
    (`policy`; None: as its consent flags say under the app's bases); alerts and the trip counted from `since`
    (a driver's time: shared/auth/access.py `reads_from`)."""
    policy = policy if policy is not None else policy_for(doc)
    signals = signals_of(doc)
    speed = _number(signals, S.SPEED)
    moving = motion(doc, moving_speed_kmh)
    lat, lon = _number(signals, S.LATITUDE), _number(signals, S.LONGITUDE)
    driver = doc.get("driver")
    trip = trip_since(doc, since)
    return {
        "vehicleId": doc.get("vehicleId") or doc["id"],
        "brandId": doc.get("brandId"),
        "fleetId": doc.get("fleetId"),
        "label": doc.get("label"),
        "registeredAt": doc.get("registeredAt"),
        "lastSeen": doc.get("lastSeen"),
        "speedKmh": speed,
        "stateOfChargePercent": _number(signals, S.STATE_OF_CHARGE),
        "fuelLevelPercent": _number(signals, S.FUEL_LEVEL),
        "moving": moving,
        "position": {"lat": lat, "lon": lon}
        if lat is not None and lon is not None and POSITION not in policy.withheld
        else None,
        "driver": driver if isinstance(driver, dict) else None,
        "consent": consent_of(doc),
        "activeAlerts": sum(1 for a in alerts_since(doc, since, theirs) if a.get("status") == "active"),
        "tripOpen": isinstance(trip, dict) and trip.get("status") == "open",
    }


def with_ack(alert: Mapping[str, Any], acks: dict[str, Document]) -> dict[str, Any]:
    ack = acks.get(alert.get("id", ""))
    return {
        **alert,
        "acknowledged": ack is not None,
        "acknowledgedAt": ack.get("ackedAt") if ack else None,
        "note": ack.get("note") if ack else None,
    }


def in_window(message: Document, low: str, high: str) -> Document | None:
    samples = [s for s in message.get("samples", []) if low <= str(s.get("ts", "")) <= high]
    return {**message, "samples": samples} if samples else None


def withheld_removed(message: Document, policy: Policy) -> Document:
    """A copy of a stored history entry without what the car withholds (path and reason stay)."""
    entry = copy.deepcopy(message)
    scrub_entry(entry, policy)  # type: ignore[arg-type]  # a stored entry is a HistoryEntry
    return entry
