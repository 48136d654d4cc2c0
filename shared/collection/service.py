"""Cloud-controlled collection: a brand's and a fleet's collection policy, stored in `tenancy` and pushed to the
module twin (desired property `collection`) of each of their cars' Edge modules (docs/api.md "Collection policy").

A fleet's policy overrides its brand's whole (no field-by-field merge: what a fleet says is what its cars do).
Each document counts its changes; what a car receives carries `version` `brand-<n>` or `fleet-<n>`, so the
module's reported `collection.version` says which policy, and which change of it, the car applies. Stored and
in the API a policy's `signals` are keyed by VSS path; the twin carries them as an array (policy.py `twin_form`:
IoT Hub refuses '.' in a property name).

The push (rollout.py) starts in the PUT: the first page of the scope's cars (COLLECTION_PUSH_PAGE) is patched there
(at most PUSH_CONCURRENCY at a time), the rest a page per queue message, its progress kept in `tenancy` and shown
with the policy. A car without the module (not an Edge car yet, or its module identity not created by its deployment) is
skipped and counted, as is a car IoT Hub refuses the patch for; one IoT Hub throttles is tried again later. A car
registered into a fleet gets the effective policy at registration (`push_to_vehicle`), when its module identity
already exists. Two PUTs of one scope at the same moment may leave some of its cars with the older policy: PUT again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from shared.collection import policy as fmt
from shared.collection.rollout import (
    DENIED,
    DONE,
    FAILED,
    MAX_DENIALS,
    MAX_STALLS,
    MAX_SWEEPS,
    ROLLOUT_KIND,
    RUNNING,
    STALLED,
    STALLED_AFTER_SECONDS,
    THROTTLED_DELAY_SECONDS,
    Continuation,
    PageOutcome,
    car_page,
    progress_view,
    rollout_doc_id,
)
from shared.containers import TENANCY
from shared.device_messages import canonical_time
from shared.errors import (
    ConfigurationError,
    DeviceNotFoundError,
    FleetError,
    InvalidRequestError,
    IoTHubAccessDeniedError,
    IoTHubError,
    NotFoundError,
    PreconditionFailedError,
    UnknownResourceError,
)
from shared.errors import ConflictError as StoreConflict
from shared.iothub.gateway import IoTHubGateway
from shared.settings import number_setting, setting
from shared.stores.base import Document, DocumentStore
from shared.stores.conditional import update_document
from shared.stores.queues import MessageQueue

KIND: Final = "collectionPolicy"
BRAND_POLICY_ID: Final = "collection-policy"
TWIN_PROPERTY: Final = "collection"
PUSH_CONCURRENCY: Final = 16
FENCE_ROUNDS: Final = 3  # a page's cars checked against newer policies stored while it ran (`_fence`)
FENCE_ATTEMPTS: Final = 4  # a car's patch with the newer policy, throttled: tried after 1, 2 and 4 s again
FENCE_RETRY_SECONDS: Final = 1.0
# The rollouts and the policies (one of each per brand and per fleet with its own: kind is indexed); which are
# stalled or have no rollout of their version is decided in code.
KIND_QUERY: Final = "SELECT * FROM c WHERE c.kind = @k"
WRITE_ATTEMPTS: Final = 5
# IoT Hub keeps at most 32 KB (32,768 B) of desired properties per twin (docs: "Understand and use device twins",
# twin size); the module twin also carries the agenda (AGENDA_MAX_BYTES, at most 8,192), queued commands and
# replies (4,096 each) and the JSON around the four (up to 130 B; 384 kept), so a policy in its twin form
# (policy.twin_form: every field spelled out, signals as an array) may take 32,768 - 16,768 = 16,000.
POLICY_MAX_BYTES: Final = 16_000

log = logging.getLogger(__name__)


def policy_doc_id(fleet_id: str | None) -> str:
    return f"{BRAND_POLICY_ID}:fleet:{fleet_id}" if fleet_id else BRAND_POLICY_ID


def edge_module_id() -> str:
    return setting("EDGE_MODULE_ID") or "carlink"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Superseded(Exception):
    """Raised inside a rollout's progress update when a newer version's rollout has written it."""

    def __init__(self, progress: Document) -> None:
        super().__init__("superseded")
        self.progress = progress


class RolloutNotReadyError(FleetError):
    """A continuation ahead of the rollout's progress (its write has not landed yet): the host tries it again."""


def view(document: Mapping[str, Any] | None, brand_id: str, fleet_id: str | None) -> dict[str, Any]:
    """A stored policy as the API shows it; `scope` says whose it is (`none`: the module's built-in default)."""
    if document is None:
        return {"brandId": brand_id, "fleetId": fleet_id, "scope": "none", "version": None, "policy": None,
                "updatedAt": None}  # fmt: skip
    return {
        "brandId": brand_id,
        "fleetId": fleet_id,
        "scope": "fleet" if document.get("fleetId") else "brand",
        "version": document["policy"]["version"],
        "policy": document["policy"],
        "updatedAt": document.get("updatedAt"),
    }


@dataclass
class CollectionService:
    store: DocumentStore
    gateway: IoTHubGateway
    clock: Callable[[], dt.datetime] = utcnow
    module_id: str = field(default_factory=edge_module_id)
    # The rollout queue (shared/collection/runtime.py), asked only when a rollout needs a second page; None where
    # no rollout starts (a registration's push to one car).
    queue: Callable[[], MessageQueue] | None = None
    page_size: int = field(default_factory=lambda: int(number_setting("COLLECTION_PUSH_PAGE")))

    # --- the API ------------------------------------------------------------------------------------------------

    async def put(self, brand_id: str, fleet_id: str | None, body: Any) -> dict[str, Any]:
        """Validate, store as the next version, push to the scope's cars; the stored view and the push counts."""
        await self._scope_exists(brand_id, fleet_id)
        if isinstance(body, dict) and "version" in body:
            raise InvalidRequestError(
                "version is set by the server", [{"field": "collection.version", "message": "set by the server"}]
            )
        candidate = {**body, "version": "x"} if isinstance(body, dict) else body
        problems = fmt.errors(candidate)
        if problems:
            raise InvalidRequestError(
                f"not a collection policy: {problems[0][0]} {problems[0][1]}",
                [{"field": f, "message": m} for f, m in problems[:20]],
            )
        size = len(orjson.dumps(fmt.twin_form({**body, "version": "fleet-0000000000"})))
        if size > POLICY_MAX_BYTES:
            raise InvalidRequestError(
                f"the policy takes {size} bytes in the module twin, at most {POLICY_MAX_BYTES} fit",
                [{"field": "collection", "message": "too large for the module twin"}],
            )
        document = await self._store_next(brand_id, fleet_id, body)
        progress = await self.start_rollout(brand_id, fleet_id, document)
        return {**view(document, brand_id, fleet_id), "push": progress_view(progress)}

    async def get(self, brand_id: str, fleet_id: str | None) -> dict[str, Any]:
        """A fleet: its effective policy (its own, else its brand's). A brand: the brand's."""
        await self._scope_exists(brand_id, fleet_id)
        shown = view(await self.effective_document(brand_id, fleet_id), brand_id, fleet_id)
        progress = await self.store.read(TENANCY, brand_id, rollout_doc_id(fleet_id))
        return {**shown, "push": progress_view(progress.document) if progress else None}

    # --- layering and the push -------------------------------------------------------------------------------------

    async def effective_document(self, brand_id: str, fleet_id: str | None) -> Document | None:
        if fleet_id is not None:
            own = await self.store.read(TENANCY, brand_id, policy_doc_id(fleet_id))
            if own is not None:
                return own.document
        brand = await self.store.read(TENANCY, brand_id, policy_doc_id(None))
        return brand.document if brand is not None else None

    async def start_rollout(self, brand_id: str, fleet_id: str | None, document: Mapping[str, Any]) -> Document:
        """The stored version's rollout: its first page patched here, the rest queued (rollout.py). Its progress,
        or the newer one's when a newer version's rollout has started meanwhile (this one then stops)."""
        number, now = int(document["version"]), canonical_time(self.clock())
        page = await self._push_page(brand_id, fleet_id, document["policy"], "")
        progress: Document = {
            "id": rollout_doc_id(fleet_id), "brandId": brand_id, "fleetId": fleet_id, "kind": ROLLOUT_KIND,
            "version": number, "label": document["policy"]["version"], "state": RUNNING, "step": 0, "after": "",
            "stalls": 0, "cars": 0, "patched": 0, "withoutModule": 0, "failed": 0, "overridden": 0, "startedAt": now,
            "updatedAt": now,
        }  # fmt: skip
        _deny(progress, page)
        _advance(progress, page, now, 0)

        def replace_older(stored: Document | None) -> Document:
            if stored is not None and int(stored.get("version", 0)) > number:
                raise _Superseded(stored)  # a newer PUT's rollout runs: this one stops here
            return progress

        try:
            await update_document(self.store, TENANCY, brand_id, progress["id"], replace_older)
        except _Superseded as newer:
            return newer.progress
        if page.more:  # once, after the write: the message is the written step's
            await self._queue_next(progress)
        return progress

    async def continue_rollout(self, message: Continuation) -> str:
        """One queue message: the next page, when the message is the rollout's current step (rollout.py). `continued`,
        `done`, `resent` (the step before: its next message sent again, in case a crash lost it), `stale` (older,
        or a duplicate), `superseded` (a newer version's rollout runs) or `raced` (a duplicate won the write)."""
        progress_id = rollout_doc_id(message.fleet_id)
        stored = await self.store.read(TENANCY, message.brand_id, progress_id)
        if stored is None:
            raise RolloutNotReadyError(f"collection rollout {progress_id} of {message.brand_id} not written")
        progress = dict(stored.document)
        version, step = int(progress.get("version", 0)), int(progress.get("step", 0))
        if version > message.version:
            return "superseded"
        if version < message.version or message.step > step:
            raise RolloutNotReadyError(f"collection rollout {progress_id} of {message.brand_id} behind its message")
        if progress.get("state") != RUNNING or message.step < step - 1:
            return "stale"
        if message.step == step - 1:  # its write landed; the next message may not have been sent (a crash)
            await self._queue_next(progress)
            return "resent"
        policy = await self.store.read(TENANCY, message.brand_id, policy_doc_id(message.fleet_id))
        if policy is None or int(policy.document.get("version", 0)) != message.version:
            return "superseded"  # a newer version is stored: its own rollout pushes it to every car
        now = canonical_time(self.clock())
        after = str(progress.get("after", ""))
        page = await self._push_page(message.brand_id, message.fleet_id, policy.document["policy"], after)
        _deny(progress, page)
        stalls = 0
        if page.stopped_at is not None and page.after == after:  # not one car further
            stalls = int(progress.get("stalls", 0)) + 1
            if stalls >= MAX_STALLS:  # IoT Hub kept failing this car: counted, and the push goes on past it
                page.cars, page.failed, page.after, stalls = page.cars + 1, page.failed + 1, page.stopped_at, 0
        _advance(progress, page, now, stalls)
        try:
            await self.store.replace(TENANCY, progress, stored.etag)
        except (StoreConflict, PreconditionFailedError):
            return "raced"  # a duplicate of this message wrote first and queues the next step itself
        if page.more:
            await self._queue_next(progress)
        return "continued" if page.more else "done"

    async def sweep(self) -> dict[str, int]:
        """Running rollouts no page moved for STALLED_AFTER_SECONDS (their message reached the poison queue, or was
        lost): the current step's message sent again (`resent`), or after MAX_SWEEPS of those in a row the rollout
        `failed` with reason `stalled`; a rollout that moved meanwhile is left alone (`moved`). And a policy stored
        that long ago with no rollout of its version (the PUT stopped between storing it and writing its rollout's
        progress): its rollout started (`started`). Counts by outcome."""
        now = self.clock()
        counts: dict[str, int] = {}
        rollouts = [
            d for d in await self.store.query(TENANCY, KIND_QUERY, {"@k": ROLLOUT_KIND}) if _is(d, ROLLOUT_KIND)
        ]
        policies = [d for d in await self.store.query(TENANCY, KIND_QUERY, {"@k": KIND}) if _is(d, KIND)]
        pushed = {(str(d["brandId"]), d.get("fleetId") or None): int(d.get("version", 0)) for d in rollouts}
        before = canonical_time(now - dt.timedelta(seconds=STALLED_AFTER_SECONDS))
        for found in rollouts:
            if not _stalled(found, now):
                continue
            try:
                outcome = await self._sweep_one(str(found["brandId"]), str(found["id"]), now)
            except FleetError as exc:  # one rollout's trouble does not stop the sweep; the next run tries again
                log.warning("collection rollout sweep: %s: %s", found.get("id"), type(exc).__name__)
                continue
            counts[outcome] = counts.get(outcome, 0) + 1
        for policy in policies:
            brand_id, fleet_id = str(policy["brandId"]), policy.get("fleetId") or None
            if pushed.get((brand_id, fleet_id), 0) >= int(policy.get("version", 0)):
                continue
            if str(policy.get("updatedAt") or "") >= before:  # its PUT may still be running
                continue
            try:
                await self.start_rollout(brand_id, fleet_id, policy)
            except FleetError as exc:
                log.warning("collection rollout sweep: %s of %s: %s", policy.get("id"), brand_id, type(exc).__name__)
                continue
            counts["started"] = counts.get("started", 0) + 1
        return counts

    async def _sweep_one(self, brand_id: str, progress_id: str, now: dt.datetime) -> str:
        stored = await self.store.read(TENANCY, brand_id, progress_id)
        if stored is None or not _stalled(stored.document, now):
            return "moved"
        progress = dict(stored.document)
        progress["sweeps"], progress["sweptAt"] = int(progress.get("sweeps", 0)) + 1, canonical_time(now)
        if progress["sweeps"] > MAX_SWEEPS:
            progress["state"], progress["reason"] = FAILED, STALLED
        try:
            await self.store.replace(TENANCY, progress, stored.etag)
        except (StoreConflict, PreconditionFailedError, NotFoundError):
            return "moved"  # a page (or another sweep) wrote first
        if progress["state"] == FAILED:
            return "failed"
        await self._queue_next(progress)  # the current step: a copy of it still alive is a duplicate like any other
        return "resent"

    async def _queue_next(self, progress: Mapping[str, Any]) -> None:
        """The message for the progress's current step; after a page stopped by throttling, delayed (doubling with
        each page in a row that stopped at the same car)."""
        stalls = int(progress.get("stalls", 0))
        delay = THROTTLED_DELAY_SECONDS * 2 ** min(stalls, 4) if progress.get("stopped") else 0
        step = Continuation(
            str(progress["brandId"]), progress.get("fleetId"), int(progress["version"]), str(progress["after"]),
            stalls, int(progress["step"]),
        )  # fmt: skip
        if self.queue is None:
            raise ConfigurationError("this collection service has no rollout queue")
        await self.queue().send(step.encode(), delay)

    async def _push_page(
        self, brand_id: str, fleet_id: str | None, policy: Mapping[str, Any], after: str
    ) -> PageOutcome:
        """Patch the module twins of the scope's next `page_size` cars (a brand's: not those of fleets with their own
        policy); the cursor stops before the first car IoT Hub failed transiently (throttled), so it is tried again."""
        overriding: set[str] = set()
        if fleet_id is None:
            overriding = {str(d["fleetId"]) for d in await self._fleet_policies(brand_id)}
        rows = await car_page(self.store, brand_id, fleet_id, after, self.page_size)
        outcomes: dict[str, str] = {}
        limit = asyncio.Semaphore(PUSH_CONCURRENCY)

        halted: list[bool] = []  # once IoT Hub throttles, no new patch is sent: they would be sent again
        sent: set[str] = set()

        async def one(row: Mapping[str, Any]) -> None:
            if row.get("fleetId") in overriding:
                outcomes[row["id"]] = "overridden"
                return
            async with limit:
                if halted:
                    outcomes[row["id"]] = "retry"
                    return
                sent.add(row["id"])
                outcome = outcomes[row["id"]] = await self._patch(str(row["vehicleId"]), policy)
                if outcome in ("retry", DENIED):
                    halted.append(True)

        await asyncio.gather(*(one(row) for row in rows))
        # every car a patch was sent to: one answered with an error (a timeout) may have landed all the same
        await self._fence(brand_id, fleet_id, policy, [row for row in rows if row["id"] in sent])
        page = PageOutcome(after=after, more=len(rows) == self.page_size)
        for row in rows:
            outcome = outcomes[row["id"]]
            if outcome == DENIED:  # every car would be refused alike: stopped here, failed if it lasts (MAX_DENIALS)
                page.stopped_at, page.more, page.denied = str(row["id"]), True, True
                break
            if outcome == "retry":
                page.stopped_at, page.more = str(row["id"]), True
                break
            page.after = str(row["id"])
            if outcome == "overridden":
                page.overridden += 1
                continue
            page.cars += 1
            if outcome == "patched":
                page.patched += 1
            elif outcome == "missing":
                page.without_module += 1
            else:
                page.failed += 1
        return page

    async def _fence(
        self, brand_id: str, fleet_id: str | None, policy: Mapping[str, Any], patched: list[Mapping[str, Any]]
    ) -> None:
        """What applies to the cars this page patched, read again once every patch has landed. A newer version of
        the scope's policy (or, on a brand's page, a fleet's own) stored while the page ran has its own rollout,
        which may have patched some of these cars before this page's older patch landed on them: they are patched
        again with what applies now. A policy stored after this read reaches them through its own rollout, whose
        patches all come after it was stored and so after this page's: they land last. Again while newer ones keep
        coming (FENCE_ROUNDS). A car IoT Hub throttles meanwhile is tried FENCE_ATTEMPTS times, then logged."""
        applied = {str(row["id"]): str(policy["version"]) for row in patched}
        limit = asyncio.Semaphore(PUSH_CONCURRENCY)

        async def again(row: Mapping[str, Any], newer: Mapping[str, Any]) -> str:
            for attempt in range(FENCE_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(FENCE_RETRY_SECONDS * 2 ** (attempt - 1))  # a throttled car: briefly
                async with limit:
                    outcome = await self._patch(str(row["vehicleId"]), newer)
                if outcome != "retry":
                    break
            applied[str(row["id"])] = str(newer["version"])
            return outcome

        for _ in range(FENCE_ROUNDS):
            scope = await self.store.read(TENANCY, brand_id, policy_doc_id(fleet_id))
            own: dict[str, Document] = {}
            if fleet_id is None:
                own = {str(d["fleetId"]): d for d in await self._fleet_policies(brand_id)}
            stale: list[tuple[Mapping[str, Any], Mapping[str, Any]]] = []
            for row in patched:
                effective = own.get(str(row.get("fleetId"))) or (scope.document if scope is not None else None)
                if effective is not None and effective["policy"]["version"] != applied[str(row["id"])]:
                    stale.append((row, effective["policy"]))
            if not stale:
                return
            outcomes = await asyncio.gather(*(again(row, newer) for row, newer in stale))
            if "retry" in outcomes or DENIED in outcomes:
                # Neither a retry of this page (its version is replaced, or the fleet now left alone) nor the newer
                # rollout (it passed them) would reach them: rare (a race and throttling together), logged.
                log.warning("collection rollout of %s: %d cars may keep an older policy: PUT again",
                            brand_id, outcomes.count("retry") + outcomes.count(DENIED))  # fmt: skip
                return
        log.warning("collection rollout of %s: policies kept changing during a page", brand_id)

    async def push_to_vehicle(self, brand_id: str, fleet_id: str, vehicle_id: str) -> str:
        """At registration: the car's effective policy to its module. `patched`, `missing` (no module yet),
        `failed`, or `none` when neither its fleet nor its brand has a policy."""
        document = await self.effective_document(brand_id, fleet_id)
        if document is None:
            return "none"
        outcome = await self._patch(vehicle_id, document["policy"])
        return "failed" if outcome in ("retry", DENIED) else outcome

    async def _patch(self, vehicle_id: str, policy: Mapping[str, Any]) -> str:
        """One car: its module twin's `collection` becomes the policy's twin form (arrays replaced whole, every
        other field given: nothing of an earlier policy stays)."""
        try:
            patch = {TWIN_PROPERTY: fmt.twin_form(policy)}
            await self.gateway.patch_module_desired(vehicle_id, self.module_id, patch)
        except DeviceNotFoundError:
            return "missing"
        except IoTHubAccessDeniedError:
            return DENIED  # the deployment's identity or the hub's tier, not this car: nothing to wait for
        except IoTHubError:
            return "retry"  # throttled or unavailable: the rollout tries it again later
        except FleetError:
            return "failed"  # refused: counted; the policy is stored and a PUT again retries the car
        return "patched"

    # --- storage ---------------------------------------------------------------------------------------------------

    async def _store_next(self, brand_id: str, fleet_id: str | None, body: Mapping[str, Any]) -> Document:
        """The next version, written conditionally so two concurrent PUTs get two versions, never one twice."""
        doc_id = policy_doc_id(fleet_id)
        for _ in range(WRITE_ATTEMPTS):
            stored = await self.store.read(TENANCY, brand_id, doc_id)
            number = int(stored.document.get("version", 0)) + 1 if stored else 1
            label = f"{'fleet' if fleet_id else 'brand'}-{number}"
            document: Document = {
                "id": doc_id,
                "brandId": brand_id,
                "fleetId": fleet_id,
                "kind": KIND,
                "version": number,
                "policy": fmt.normalized({**body, "version": label}),
                "updatedAt": canonical_time(self.clock()),
            }
            try:
                if stored is None:
                    await self.store.create(TENANCY, document)
                else:
                    await self.store.replace(TENANCY, document, stored.etag)
            except (StoreConflict, PreconditionFailedError):
                continue
            return document
        raise StoreConflict(f"collection policy {doc_id} of {brand_id} kept changing; try again")

    async def _scope_exists(self, brand_id: str, fleet_id: str | None) -> None:
        from shared.tenancy.documents import BRAND_DOC_ID, fleet_doc_id

        doc_id = fleet_doc_id(fleet_id) if fleet_id else BRAND_DOC_ID
        if await self.store.read(TENANCY, brand_id, doc_id) is None:
            where = f"fleet {fleet_id} in brand {brand_id}" if fleet_id else f"brand {brand_id}"
            raise UnknownResourceError(f"no {where}")

    async def _fleet_policies(self, brand_id: str) -> list[Document]:
        found = await self.store.query(
            TENANCY, "SELECT * FROM c WHERE c.brandId = @b AND c.kind = @k", {"@b": brand_id, "@k": KIND},
            partition_key=brand_id,
        )  # fmt: skip
        return [d for d in found if d.get("kind") == KIND and d.get("fleetId")]


def _advance(progress: Document, page: PageOutcome, now: str, stalls: int) -> None:
    """Add a page's counts to the rollout's progress, move its cursor and count the step."""
    for key, value in (("cars", page.cars), ("patched", page.patched), ("withoutModule", page.without_module),
                       ("failed", page.failed), ("overridden", page.overridden)):  # fmt: skip
        progress[key] = int(progress.get(key, 0)) + value
    progress["after"], progress["updatedAt"], progress["stalls"] = page.after, now, stalls
    progress["step"] = int(progress.get("step", 0)) + 1
    progress["stopped"] = page.stopped_at is not None
    progress.pop("sweeps", None)  # a message got through: the chain is alive
    progress.pop("sweptAt", None)
    progress["state"] = FAILED if page.reason is not None else RUNNING if page.more else DONE
    if page.reason is not None:
        progress["reason"] = page.reason


def _deny(progress: Document, page: PageOutcome) -> None:
    """Count the pages in a row IoT Hub refused the deployment on; at MAX_DENIALS (~20 min, past the time a new
    role assignment takes to apply) the rollout fails with the reason instead of going on."""
    denials = int(progress.get("denials", 0)) + 1 if page.denied else 0
    progress["denials"] = denials
    if denials >= MAX_DENIALS:
        page.more, page.reason = False, IoTHubAccessDeniedError.reason


def _stalled(progress: Mapping[str, Any], now: dt.datetime) -> bool:
    """Running, and neither a page nor the sweep touched it for STALLED_AFTER_SECONDS."""
    before = canonical_time(now - dt.timedelta(seconds=STALLED_AFTER_SECONDS))
    last = max(str(progress.get("updatedAt") or ""), str(progress.get("sweptAt") or ""))
    return progress.get("kind") == ROLLOUT_KIND and progress.get("state") == RUNNING and last < before


def _is(document: Mapping[str, Any], kind: str) -> bool:
    return document.get("kind") == kind and isinstance(document.get("brandId"), str)
