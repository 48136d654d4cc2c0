"""Consent records: who granted or withdrew which data category of which car, when, how and under which terms.

Why records and not flags: a controller must be able to show that, when and on what terms a person consented
(GDPR art. 7(1)) and that a withdrawal took effect; two booleans anyone could set showed none of that. So every
decision is an append-only record in the `consents` container (partition /vehicleId, one document per car,
driver, category and decision), and the current state is derived from them:

- a category with a record of the car's *current* driver follows that driver's latest record;
- a category without one, or any category of a car without a driver, follows the brand's legal basis for it
  (shared/privacy/categories.py): `contract` collected, `consent` not.

Records are written with deterministic ids (`{userId}:{category}:{seq:06d}`) and a conditional create, so two
writers racing for the same category cannot both append the same sequence number; a decision that changes
nothing (the latest record already says so, under the same terms) writes nothing, so an API retry or a replayed
car request is a no-op.

The state is projected into the vehicle document's `consent` field (ingestion reads it on the hot path) with an
etag-conditional update, in the shape the readers of today expect plus the exact per-category view:

    {"location": false, "calendar": true,                 # the flags ingestion, the calendar and requests read
     "categories": {"position": false, "navigation_destination": false, "calendar": true},  # recorded decisions
     "userId": "<driver>", "records": 7, "updatedAt": "2026-12-06T04:20:00.000Z"}

A flag governing several categories (`location`: position and navigation destination) is only as permissive as
its most restricted category: `false` if any of them is withdrawn, `true` if all are granted, absent otherwise
(the basis decides). `records` is the number of records the projection was built from: records only grow, so a
writer holding an older view never overwrites a newer projection.

The car sees the same state as the twin's desired property `consent` (`twin_view`) and through the request
actions `consent.get` / `consent.set` (shared/requests), so a driver without a phone can withdraw at the car.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, get_args

from shared.calendar.documents import DRIVER_ID
from shared.calendar.jobs import SyncJob, SyncQueue
from shared.containers import CALENDARS, CONSENTS, VEHICLES
from shared.device_messages import canonical_time, safe_id
from shared.errors import ConflictError, InvalidRequestError, StoreError, UnknownResourceError
from shared.iothub.gateway import IoTHubGateway
from shared.privacy.categories import Basis, DataCategories, default_categories
from shared.stores.base import Document, DocumentStore, strip_system_properties
from shared.vehicle_updates import update_vehicle

Channel = Literal["car_screen", "companion_app", "api"]
CHANNELS: Final[tuple[str, ...]] = get_args(Channel)
ActorKind = Literal["driver", "operator"]
RECORD_KIND: Final = "consentRecord"
TERMS_VERSION: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$")
MAX_BASIS: Final = 500
MAX_APPEND_TRIES: Final = 10
TWIN_PROPERTY: Final = "consent"
# The flags of the vehicle document that readers of today use (ingestion, calendar sync, car requests).
FLAGS: Final = ("location", "calendar")

BasesOf = Callable[[str | None], Awaitable[Mapping[str, str]]]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who recorded a decision: the driver with their own sign-in (or at the car), or an operator on a documented
    basis (`basis`: what documents it, e.g. "signed form 2026-114"; required for operators, never for drivers)."""

    kind: ActorKind
    object_id: str | None
    tenant_id: str | None = None
    basis: str | None = None

    def as_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "objectId": self.object_id, "tenantId": self.tenant_id}


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision of a driver about some categories of one car (validated by `decision`)."""

    categories: Mapping[str, bool]
    channel: Channel
    terms_version: str | None
    actor: Actor
    request_id: str | None = None  # a car request's id, kept for tracing a decision back to the car
    via: str | None = None  # "driverLink": the choice the driver made when linking (accept, link themselves)


def decision(
    categories: object,
    channel: object,
    terms_version: object,
    actor: Actor,
    request_id: str | None = None,
    catalogue: DataCategories | None = None,
    terms_required: bool = True,
) -> Decision:
    """Validate a decision; InvalidRequestError listing every field at fault (unknown category, bad channel, ...).

    >>> decision({"position": False}, "api", "2026-01", Actor("driver", "u")).categories
    {'position': False}
    """
    known = (catalogue or default_categories()).categories
    errors: list[dict[str, str]] = []
    wanted: dict[str, bool] = {}
    if not isinstance(categories, Mapping) or not categories:
        errors.append({"field": "categories", "message": "an object of at least one category: true or false"})
    else:
        for name, value in categories.items():
            if name not in known:
                errors.append(
                    {"field": f"categories.{name}", "message": f"unknown category; known: {', '.join(known)}"}
                )
            elif not isinstance(value, bool):
                errors.append({"field": f"categories.{name}", "message": "true (grant) or false (withdraw)"})
            else:
                wanted[name] = value
    if channel not in CHANNELS:
        errors.append({"field": "channel", "message": f"one of {', '.join(CHANNELS)}"})
    if terms_version is None and not terms_required:
        pass
    elif not isinstance(terms_version, str) or not TERMS_VERSION.match(terms_version):
        errors.append(
            {"field": "termsVersion", "message": "the version of the terms shown (1-64 letters, digits, ._:+-)"}
        )
    if actor.kind == "operator" and (not actor.basis or not actor.basis.strip() or len(actor.basis) > MAX_BASIS):
        errors.append(
            {"field": "basis", "message": f"required: what documents the decision (1-{MAX_BASIS} characters)"}
        )
    if actor.kind == "driver" and actor.basis is not None:
        errors.append({"field": "basis", "message": "only an operator records on a documented basis"})
    if errors:
        raise InvalidRequestError("the consent decision is invalid", errors)
    return Decision(wanted, channel, terms_version, actor, request_id)  # type: ignore[arg-type]  # checked above


def record_id(user_id: str, category: str, seq: int) -> str:
    """Deterministic: the n-th decision of a driver about a category of a car (the partition is the car)."""
    return safe_id(f"{user_id}:{category}:{seq:06d}")


def new_record(vehicle_id: str, user_id: str, category: str, seq: int, granted: bool, at: str, d: Decision) -> Document:
    """The stored record of one category of a decision."""
    record: Document = {
        "id": record_id(user_id, category, seq),
        "vehicleId": vehicle_id,
        "userId": user_id,
        "category": category,
        "seq": seq,
        "kind": RECORD_KIND,
        "granted": granted,
        "at": at,
        "by": d.actor.as_record(),
        "channel": d.channel,
        "termsVersion": d.terms_version,
    }
    if d.actor.basis is not None:
        record["basis"] = d.actor.basis
    if d.request_id is not None:
        record["requestId"] = d.request_id
    if d.via is not None:
        record["via"] = d.via
    return record


def latest(records: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Each category's latest record (highest seq)."""
    out: dict[str, Mapping[str, Any]] = {}
    for r in records:
        category, seq = r.get("category"), r.get("seq")
        if isinstance(category, str) and isinstance(seq, int):
            current = out.get(category)
            if current is None or seq > current["seq"]:
                out[category] = r
    return out


def unchanged(last: Mapping[str, Any] | None, granted: bool, terms_version: str | None) -> bool:
    """A decision the latest record already states: nothing to append (retries and replays land here). A new
    terms version with the same answer is a new record: consent is given to terms."""
    if last is None or last.get("granted") is not granted:
        return False
    return terms_version is None or last.get("termsVersion") == terms_version


@dataclass(frozen=True, slots=True)
class CategoryState:
    """The current state of one category of one car."""

    category: str
    basis: Basis
    collected: bool
    record: Mapping[str, Any] | None  # the latest record of the current driver; None: the basis decides

    def as_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "category": self.category,
            "basis": self.basis,
            "collected": self.collected,
            "source": "record" if r is not None else "basis",
            "granted": r.get("granted") if r is not None else None,
            "at": r.get("at") if r is not None else None,
            "by": r.get("by") if r is not None else None,
            "channel": r.get("channel") if r is not None else None,
            "termsVersion": r.get("termsVersion") if r is not None else None,
        }


def current_state(
    records: Iterable[Mapping[str, Any]], bases: Mapping[str, Basis], catalogue: DataCategories | None = None
) -> dict[str, CategoryState]:
    """Every category's state, in catalogue order, from the current driver's records (none: the bases)."""
    found = latest(records)
    out: dict[str, CategoryState] = {}
    for name in (catalogue or default_categories()).names:
        basis = bases[name]
        r = found.get(name)
        collected = r.get("granted") is True if r is not None else basis == "contract"
        out[name] = CategoryState(name, basis, collected, r)
    return out


def projection(
    records: Sequence[Mapping[str, Any]], user_id: str, at: str, catalogue: DataCategories | None = None
) -> dict[str, Any]:
    """The vehicle document's `consent` from the driver's records (see the module docstring)."""
    catalogue = catalogue or default_categories()
    granted = {name: bool(r.get("granted")) for name, r in latest(records).items() if name in catalogue.categories}
    out: dict[str, Any] = {}
    for flag in FLAGS:
        governed = catalogue.governed_by(flag)
        if not governed:
            continue
        values = [granted[name] for name in governed if name in granted]
        if any(v is False for v in values):
            out[flag] = False
        elif len(values) == len(governed):
            out[flag] = True
    out["categories"] = dict(sorted(granted.items()))
    out["userId"] = user_id
    out["records"] = len(records)
    out["updatedAt"] = at
    return out


def twin_view(states: Mapping[str, CategoryState], at: str) -> dict[str, Any]:
    """The twin's desired `consent`: what the car shows. Every category is always present; `granted` null when
    there is no record (a null in a twin patch deletes the key the previous patch set)."""
    return {
        "categories": {
            name: {
                "collected": s.collected,
                "basis": s.basis,
                "granted": s.record.get("granted") if s.record is not None else None,
            }
            for name, s in states.items()
        },
        "updatedAt": at,
    }


def twin_view_of(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The car's view (as `twin_view`, without the time) of an answer of `ConsentService.state` or `record`."""
    return {
        "categories": {
            c["category"]: {"collected": c["collected"], "basis": c["basis"], "granted": c["granted"]}
            for c in answer["categories"]
        }
    }


def link_choices(
    vehicle: Mapping[str, Any], records: Iterable[Mapping[str, Any]], catalogue: DataCategories
) -> dict[str, bool]:
    """The choices a driver link wrote as flags (accepting an invitation, linking oneself: `{calendar, location}`
    without `records`) that the driver's records do not state yet: they become records, so the history shows
    them and the next projection keeps them. Empty once the projection owns the field."""
    consent = vehicle.get("consent")
    if not isinstance(consent, dict) or "records" in consent:
        return {}
    last = latest(records)
    out: dict[str, bool] = {}
    for flag in FLAGS:
        value = consent.get(flag)
        if isinstance(value, bool):
            for name in sorted(catalogue.governed_by(flag)):
                if not unchanged(last.get(name), value, None):
                    out[name] = value
    return out


def driver_of(vehicle: Mapping[str, Any] | None) -> dict[str, Any] | None:
    driver = vehicle.get("driver") if vehicle is not None else None
    return driver if isinstance(driver, dict) and driver.get("userId") else None


async def brand_bases(store: DocumentStore, brand_id: str | None) -> Mapping[str, str]:
    """The brand's basis overrides (its `dataCategoryBases` over the app's DATA_CATEGORY_BASES)."""
    from shared.brands import BrandConfigs

    return (await BrandConfigs(store).get(brand_id)).data_category_bases


class Links(Protocol):
    """What the service needs of the driver links (shared/drivers/link.py `DriverLinks`): their calendar-sync
    queue. A protocol, not an import, because the links push consent through this service (no import circle)."""

    queue: SyncQueue


@dataclass
class ConsentService:
    """Records decisions, derives the state, keeps the vehicle document and the car's twin in step."""

    store: DocumentStore
    gateway: IoTHubGateway
    links: Links
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    bases_of: BasesOf | None = None
    catalogue: DataCategories = field(default_factory=default_categories)

    async def state(self, vehicle_id: str) -> dict[str, Any]:
        """The current state per category and the current driver's history (newest first)."""
        vehicle = await self._vehicle(vehicle_id)
        driver = driver_of(vehicle)
        if driver is None:
            return await self._answer(vehicle_id, vehicle, [])
        user = str(driver["userId"])
        records = await self.records(vehicle_id, user)
        if link_choices(vehicle, records, self.catalogue):  # a link wrote flags since: they become records first
            records, _ = await self._adopt(vehicle_id, user, vehicle, records)
            return await self._project(vehicle_id, user, records, vehicle.get("brandId"), _flags(vehicle))
        return await self._answer(vehicle_id, vehicle, records)

    async def record(self, vehicle_id: str, d: Decision) -> dict[str, Any]:
        """Append the decision's records (only categories it changes), then project; the new state with
        `recorded`, the number of records written. Idempotent: the same decision again records nothing."""
        vehicle = await self._vehicle(vehicle_id)
        driver = driver_of(vehicle)
        if driver is None:
            raise UnknownResourceError(f"vehicle {vehicle_id} has no driver: consent is a driver's to give")
        user = str(driver["userId"])
        if d.actor.kind == "driver" and d.actor.object_id not in (None, user):
            raise UnknownResourceError(f"vehicle {vehicle_id}: the caller is not its driver")
        await self._adopt(vehicle_id, user, vehicle, await self.records(vehicle_id, user))
        records, written = await self._append(vehicle_id, user, d)
        answer = await self._project(vehicle_id, user, records, vehicle.get("brandId"), _flags(vehicle))
        answer["recorded"] = written
        return answer

    async def reproject(self, vehicle_id: str) -> dict[str, Any]:
        """The car's current driver changed to one with records of their own (a driver profile chosen at the car):
        project their records onto the vehicle document and the twin, as their last decision left it."""
        vehicle = await self._vehicle(vehicle_id)
        driver = driver_of(vehicle)
        if driver is None:
            return await self.push(vehicle_id)
        user = str(driver["userId"])
        records = await self.records(vehicle_id, user)
        return await self._project(vehicle_id, user, records, vehicle.get("brandId"), _flags(vehicle))

    async def withdraw(self, vehicle_id: str, user_id: str, d: Decision) -> None:
        """A driver's decision about a car they may not be driving right now (signing out of one of their cars
        from their own session): recorded as theirs; projected onto the car only while they drive it."""
        vehicle = await self._vehicle(vehicle_id)
        if (driver_of(vehicle) or {}).get("userId") == user_id:
            await self.record(vehicle_id, d)
            return
        await self._append(vehicle_id, user_id, d)

    async def records(self, vehicle_id: str, user_id: str) -> list[Document]:
        query = "SELECT * FROM c WHERE c.vehicleId = @v AND c.userId = @u"
        found = await self.store.query(CONSENTS, query, {"@v": vehicle_id, "@u": user_id}, partition_key=vehicle_id)
        out = [
            strip_system_properties(r)
            for r in found
            if r.get("vehicleId") == vehicle_id and r.get("userId") == user_id and r.get("kind") == RECORD_KIND
        ]
        return sorted(out, key=lambda r: (str(r.get("category")), int(r.get("seq", 0))))

    async def _adopt(
        self, vehicle_id: str, user: str, vehicle: Mapping[str, Any], records: list[Document]
    ) -> tuple[list[Document], int]:
        """Record what a driver link set as flags (see `link_choices`), as the driver's own, channel api."""
        choices = link_choices(vehicle, records, self.catalogue)
        if not choices:
            return records, 0
        d = Decision(choices, "api", None, Actor("driver", user), via="driverLink")
        return await self._append(vehicle_id, user, d)

    async def _append(self, vehicle_id: str, user: str, d: Decision) -> tuple[list[Document], int]:
        """Append a record per changed category: seq = latest + 1, created only if that id is free; a racing
        writer's record makes us read again and decide again (it may already say what we wanted)."""
        written = 0
        for _ in range(MAX_APPEND_TRIES):
            records = await self.records(vehicle_id, user)
            last = latest(records)
            at = canonical_time(self.clock())
            todo = [(c, g) for c, g in d.categories.items() if not unchanged(last.get(c), g, d.terms_version)]
            if not todo:
                return records, written
            raced = False
            for category, granted in todo:
                seq = int(last[category]["seq"]) + 1 if category in last else 1
                try:
                    await self.store.create(CONSENTS, new_record(vehicle_id, user, category, seq, granted, at, d))
                    written += 1
                except ConflictError:
                    raced = True  # someone appended this seq first (or our own earlier try did): read again
            if not raced:
                return await self.records(vehicle_id, user), written
        raise StoreError(f"vehicle {vehicle_id}: consent records kept changing; gave up after {MAX_APPEND_TRIES}")

    async def _project(
        self, vehicle_id: str, user: str, records: list[Document], brand_id: Any, before: dict[str, bool | None]
    ) -> dict[str, Any]:
        """Write the projection (etag-conditional, never over a newer one, only while `user` drives the car),
        scrub what is now withheld, tell the calendar sync when calendar consent changed, patch the twin; the
        answer (the new state, `removed`: values scrubbed from the vehicle document)."""
        at = canonical_time(self.clock())
        wanted = projection(records, user, at, self.catalogue)
        states = current_state(records, await self._bases(brand_id), self.catalogue)
        removed, superseded = 0, False

        def apply(stored: Document | None) -> Document:
            nonlocal removed, superseded
            from shared.telemetry.vehicle import is_erased

            if stored is None or is_erased(stored):
                raise UnknownResourceError(f"vehicle {vehicle_id} is not registered")
            if (driver_of(stored) or {}).get("userId") != user:
                raise UnknownResourceError(f"vehicle {vehicle_id}: its driver changed meanwhile")
            old = stored.get("consent")
            old_count = old.get("records", 0) if isinstance(old, dict) and old.get("userId") == user else 0
            superseded = isinstance(old_count, int) and old_count > wanted["records"]
            if superseded:
                return stored  # a writer that saw more records projected already: its view (and twin) stands
            stored["consent"] = dict(wanted)
            removed = _scrub(stored, states)
            return stored

        await update_vehicle(self.store, vehicle_id, apply)
        answer = self._view(vehicle_id, user, states, records)
        answer["removed"] = removed
        if superseded:
            return answer
        if any(wanted.get(flag) != before.get(flag) for flag in FLAGS):
            await self._link_changed(vehicle_id, user, wanted, wanted.get("calendar") != before.get("calendar"))
        await self.gateway.patch_desired_if_present(vehicle_id, {TWIN_PROPERTY: twin_view(states, at)})
        return answer

    async def _link_changed(self, vehicle_id: str, user: str, consent: Mapping[str, Any], calendar: bool) -> None:
        """The calendar sync reads its own copy of the link (`calendars`, id "driver"): update its flags, and when
        calendar consent changed queue the job that subscribes and syncs, or removes the subscription and clears
        the car's agenda. Not through DriverLinks.link: that rewrites the vehicle document's consent with two
        flags only."""
        stored = await self.store.read(CALENDARS, user, DRIVER_ID)
        if stored is not None and stored.document.get("vehicleId") == vehicle_id:
            doc = strip_system_properties(stored.document)
            doc["consent"] = {
                "calendar": consent.get("calendar") is True,
                "location": consent.get("location") is not False,
            }
            await self.store.upsert(CALENDARS, doc)
        if calendar:
            await self.links.queue.enqueue(SyncJob(user, "link", full=True))

    async def push(self, vehicle_id: str) -> dict[str, Any]:
        """Send the car its current state as the twin's `consent` (after a driver link changed); a new driver's
        link choices become records first. The twin sent."""
        answer = await self.state(vehicle_id)
        twin = {**twin_view_of(answer), "updatedAt": canonical_time(self.clock())}
        await self.gateway.patch_desired_if_present(vehicle_id, {TWIN_PROPERTY: twin})
        return twin

    async def _answer(self, vehicle_id: str, vehicle: Mapping[str, Any], records: list[Document]) -> dict[str, Any]:
        states = current_state(records, await self._bases(vehicle.get("brandId")), self.catalogue)
        driver = driver_of(vehicle)
        return self._view(vehicle_id, driver["userId"] if driver else None, states, records)

    @staticmethod
    def _view(
        vehicle_id: str, user: str | None, states: Mapping[str, CategoryState], records: list[Document]
    ) -> dict[str, Any]:
        history = sorted(records, key=lambda r: (str(r.get("at")), str(r.get("category")), int(r["seq"])), reverse=True)
        return {
            "vehicleId": vehicle_id,
            "userId": user,
            "categories": [s.as_dict() for s in states.values()],
            "history": [_public(r) for r in history],
        }

    async def _bases(self, brand_id: Any) -> dict[str, Basis]:
        overrides = await (self.bases_of or (lambda b: brand_bases(self.store, b)))(
            brand_id if isinstance(brand_id, str) else None
        )
        return self.catalogue.bases(overrides)

    async def _vehicle(self, vehicle_id: str) -> Document:
        from shared.telemetry.vehicle import is_erased

        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        if stored is None or is_erased(stored.document):
            raise UnknownResourceError(f"vehicle {vehicle_id} is not registered")
        return stored.document


def _flags(vehicle: Mapping[str, Any]) -> dict[str, bool | None]:
    consent = vehicle.get("consent")
    consent = consent if isinstance(consent, dict) else {}
    return {flag: consent.get(flag) if isinstance(consent.get(flag), bool) else None for flag in FLAGS}


def _scrub(vehicle: Document, states: Mapping[str, CategoryState]) -> int:
    """Remove what the vehicle document buffers of every category no longer collected (state, history buffer,
    outbox, trips: shared/telemetry/privacy.py). The count is what the API has always reported: values removed
    from the state and positions from the open trip."""
    from shared.telemetry.privacy import POSITION, TRIP_POSITION_FIELDS, policy_of, scrub_withheld

    withheld = frozenset(name for name, s in states.items() if not s.collected)
    if not withheld:
        return 0
    policy = policy_of(withheld)
    state = vehicle.get("state")
    signals = state.get("signals") if isinstance(state, dict) else None
    removed = sum(1 for path in signals or () if policy.reason_of(path) is not None)
    trip = vehicle.get("trip")
    held = [name for name in TRIP_POSITION_FIELDS if isinstance(trip, dict) and trip.get(name) is not None]
    scrub_withheld(vehicle, policy)  # type: ignore[arg-type]  # a stored vehicle document
    if POSITION in withheld and isinstance(trip, dict):  # those of an earlier driver's time stay (privacy.py)
        removed += sum(1 for name in held if trip.get(name) is None)
    return removed


def _public(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record as the API and exports show it (no store bookkeeping)."""
    keep = ("category", "granted", "at", "by", "channel", "termsVersion", "basis", "requestId", "via", "seq")
    return {k: record[k] for k in keep if k in record}
