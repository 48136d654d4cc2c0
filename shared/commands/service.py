"""Remote commands: accept, deliver, track and end each one truthfully (docs/commands.md).

- `issue` (the API): validate against the catalogue, check the caller's role for this command, find a retried
  POST by its idempotency key (the command id is derived from car, caller and key), apply the per-car and
  per-caller rate limits, check the preconditions on the car's live state (a refused command is stored as
  `rejected` with the reason: it is part of the car's story), then store it `accepted` and queue its dispatch.
- `dispatch` (the `command-dispatch` queue trigger): a direct method when the car is connected (`sent`, then
  `succeeded` or `failed` from its answer); a C2D message with the command's expiry when it is not (`queued`).
  A car with the IoT Edge module (`module_id`, EDGE_MODULE_ID: IoT Hub has that module identity) gets the method
  on the module, and when the module is not connected an entry in its module twin's `commands` (IoT Hub has no
  C2D for modules); a car without one (404) is remembered for NO_MODULE_SECONDS and gets the device method.
  Only the dispatch that claims the command calls the car; another (a redelivered message, a retried POST's, the
  sweep's) calls it again only once the first one's call is surely over and the command is still `sent` (the car
  answers a command id it has seen with the stored outcome), never next to it: see `dispatch`.
- `report` (the car's `command.result` requests): the outcome of a queued command.
- `cancel` (the API): until the car has it; the car skips a cancelled command it still receives (the twin's
  `commands.cancelled`).
- `sweep` (a timer): nothing stays open for ever: queued past its expiry → `expired`; `sent` without an answer
  → `failed` (no_response); `delivered` without an outcome → `failed` (no_outcome); `accepted` whose dispatch
  was lost → dispatched again.
- `confirmed`: when a read finds the car's live state showing the effect after the command succeeded.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from shared.auth.policy import Role
from shared.brands import BrandConfigs
from shared.commands import contract
from shared.commands.catalogue import CommandSpec, catalogue, command
from shared.commands.lifecycle import (
    KIND,
    Status,
    advance,
    command_id,
    expires_at,
    fingerprint,
    is_expired,
    record_outcome,
    status_of,
    view,
)
from shared.commands.preconditions import failed_precondition
from shared.commands.ratelimit import FixedWindowLimiter
from shared.containers import COMMANDS, VEHICLES
from shared.device_messages import canonical_time, safe_id
from shared.errors import (
    AccessDeniedError,
    ConflictError,
    DeviceNotFoundError,
    DeviceNotOnlineError,
    DeviceQueueFullError,
    DeviceTimeoutError,
    FleetError,
    InvalidRequestError,
    NotFoundError,
    PermanentError,
    PreconditionFailedError,
    RateLimitedError,
    StateConflictError,
    StoreError,
    UnknownResourceError,
)
from shared.faults import reason_of
from shared.iothub.gateway import IoTHubGateway
from shared.iothub.module_inbox import ModuleInbox
from shared.stores.base import Document, DocumentStore, strip_system_properties
from shared.stores.paging import keyset_page
from shared.stores.queues import MessageQueue
from shared.telemetry.documents import VehicleDocument, as_vehicle, signals_of
from shared.telemetry.vehicle import is_erased, location_allowed

log = logging.getLogger(__name__)

MAX_RETRIES: Final = 10
MAX_IDEMPOTENCY_KEY: Final = 255
# Ids the twin's `commands.cancelled` keeps (newest last): IoT Hub's C2D queue holds at most 50 messages per device,
# so every cancelled command whose message may still wait for the car fits.
CANCELLED_IN_TWIN: Final = 50
VIA_C2D: Final = "c2d"  # delivery.via of a command waiting as a C2D message in IoT Hub
VIA_MODULE_TWIN: Final = "module_twin"  # delivery.via of a command waiting in the Edge module's twin
GRACE_SECONDS: Final = 60  # beyond the method timeouts before the sweep calls a `sent` command unanswered
DISPATCH_LOST_SECONDS: Final = 120  # an `accepted` command this old lost its dispatch message: send it again
REDISPATCH_AFTER_SECONDS: Final = 10  # a retried POST finds its command still `accepted` this long: dispatch again
NO_OUTCOME_SECONDS: Final = 300  # a delivered command whose car reported no outcome this long after expiry
CONFIRM_WINDOW: Final = dt.timedelta(hours=1)  # reads look for confirmation this long after success
NO_MODULE_SECONDS: Final = 600.0  # a car without the Edge module is not asked again for this long
NO_MODULE_KEPT: Final = 10_000  # cars remembered without one (forgotten all at once beyond)
# The module twin's `commands` (shared/iothub/module_inbox.py): its share of the twin's 32 KB (policy 16 KB, agenda
# 8 KB, replies 4 KB), and at most this many commands waiting; a further one fails `queue_full`, as at 50 C2D.
MODULE_COMMANDS_PROPERTY: Final = "commands"
MODULE_COMMANDS_KEPT: Final = 12
MODULE_COMMANDS_MAX_BYTES: Final = 4 * 1024
NUMERIC_TOLERANCE: Final = 1e-6
# The commands of any car the sweep ends or dispatches again now, and no other: a `queued` or `delivered` one may
# wait for a sleeping car for its whole time to live (up to 48 h), and the sweep runs every 30 s. Each branch is one
# of `_sweep_one`'s; every path it filters on is indexed (shared/cosmos_containers.json).
SWEEP_QUERY: Final = (
    "SELECT * FROM c WHERE c.kind = @k AND ("
    "(c.status IN (@accepted, @queued) AND c.expiresAt <= @now) "
    "OR (c.status = @delivered AND c.expiresAt <= @outcomeDue) "
    "OR (c.status = @sent AND c.updatedAt <= @unanswered) "
    "OR (c.status = @accepted AND c.updatedAt <= @lost))"
)
# The car's cancelled commands whose C2D message may still wait for it: sent as C2D and not yet past their expiry
# (IoT Hub drops the message then). One cancelled while `accepted` never reached the car and takes no place.
CANCELLED_QUERY: Final = (
    f"SELECT TOP {CANCELLED_IN_TWIN} c.id, c.status, c.updatedAt, c.delivery, c.expiresAt FROM c "  # noqa: S608
    "WHERE c.vehicleId = @v AND c.kind = @k AND c.status = @s AND c.delivery.via = @via AND c.expiresAt > @now "
    "ORDER BY c.updatedAt DESC"
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sends or cancels: their object id and the roles they hold that cover the car."""

    principal_id: str
    roles: frozenset[Role]
    app: bool = False


@dataclass(frozen=True, slots=True)
class CommandSettings:
    connect_timeout: int = 5
    response_timeout: int = 20
    per_vehicle_per_minute: int = 10
    per_caller_per_minute: int = 60
    moving_speed_kmh: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CommandSettings:
        from shared.settings import number_setting

        def whole(name: str) -> int:
            return int(number_setting(name, environ))

        return cls(
            whole("COMMAND_CONNECT_TIMEOUT_SECONDS"),
            whole("COMMAND_RESPONSE_TIMEOUT_SECONDS"),
            whole("COMMANDS_PER_VEHICLE_PER_MINUTE"),
            whole("COMMANDS_PER_CALLER_PER_MINUTE"),
            number_setting("MOVING_SPEED_KMH", environ),
        )


def dispatch_message(vehicle_id: str, cid: str) -> bytes:
    return orjson.dumps({"vehicleId": vehicle_id, "commandId": cid})


def parse_dispatch_message(raw: bytes) -> tuple[str, str] | None:
    """(vehicle id, command id) of a dispatch queue message; None for anything else (dropped, not retried)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict):
        return None
    vehicle_id, cid = body.get("vehicleId"), body.get("commandId")
    if isinstance(vehicle_id, str) and isinstance(cid, str) and vehicle_id and cid:
        return vehicle_id, cid
    return None


class CommandService:
    def __init__(
        self,
        store: DocumentStore,
        gateway: IoTHubGateway,
        queue: MessageQueue,
        settings: CommandSettings | None = None,
        brands: BrandConfigs | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        module_id: str | None = None,
    ) -> None:
        self.module_id = module_id  # the in-car IoT Edge module's id (EDGE_MODULE_ID); None: cars have none
        self._no_module: dict[str, float] = {}  # car → monotonic time until which it is known to have none
        self.store = store
        self.gateway = gateway
        self.queue = queue
        self.settings = settings or CommandSettings()
        self.brands = brands
        self.clock = clock
        self.limiter = FixedWindowLimiter(store)

    # --- the API --------------------------------------------------------------------------------------------

    async def issue(
        self,
        caller: Caller,
        vehicle_id: str,
        name: Any,
        params: Any,
        idempotency_key: str | None,
        ttl_seconds: int | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """The command (as `view` shows it) and whether this call created it (False: a retried POST)."""
        spec = command(name)
        if not idempotency_key or len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidRequestError(
                "send an Idempotency-Key header (1 to 255 characters): a retry with the same key returns the "
                "same command instead of sending a second one",
                [{"field": "Idempotency-Key", "message": "required, 1 to 255 characters"}],
            )
        filled = spec.validate(params if params is not None else {})
        if ttl_seconds is not None and not 10 <= ttl_seconds <= spec.ttl_seconds:
            raise InvalidRequestError(
                f"ttlSeconds must be between 10 and {spec.ttl_seconds} for {spec.name}",
                [{"field": "ttlSeconds", "message": f"10 to {spec.ttl_seconds}"}],
            )
        roles = caller.roles & spec.roles
        if not roles:
            raise AccessDeniedError(f"{spec.name} needs one of the roles {', '.join(sorted(spec.roles))}")
        cid = command_id(vehicle_id, caller.principal_id, idempotency_key)
        wanted = fingerprint(spec.name, filled)
        existing = await self.store.read(COMMANDS, vehicle_id, cid)
        if existing is not None:
            answer = self._retried(existing.document, wanted, caller)
            accepted_for = (self.clock() - _time(existing.document["updatedAt"])).total_seconds()
            if status_of(existing.document) == Status.ACCEPTED and accepted_for >= REDISPATCH_AFTER_SECONDS:
                # still not picked up: its dispatch message may be what failed the first POST, so it is sent
                # again rather than waiting for the sweep (a retry within seconds finds the first one on its way:
                # a second dispatch would only wait for the first one's call)
                await self.queue.send(dispatch_message(vehicle_id, cid))
            return answer, False
        vehicle = await self._vehicle(vehicle_id)
        now = self.clock()
        car_slot = (vehicle_id, f"vehicle:{vehicle_id}")
        caller_slot = (f"caller:{caller.principal_id}", f"caller:{caller.principal_id}")
        # the caller's slot first: a caller over its limit costs the car none of its own (a driver's command is
        # not refused because an operator's script keeps retrying); one refused by the car's is given back
        await self.limiter.take(*caller_slot, self.settings.per_caller_per_minute, now, "commands per caller")
        try:
            await self.limiter.take(*car_slot, self.settings.per_vehicle_per_minute, now, "commands per car")
        except RateLimitedError:
            await self.limiter.give_back(*caller_slot, now)
            raise
        doc = self._new(spec, vehicle, cid, filled, wanted, caller, roles, now, ttl_seconds)
        reason = failed_precondition(
            spec, vehicle, await self._speed_limit(vehicle), await self._location_withheld(vehicle)
        )
        if reason is not None:
            advance(doc, Status.REJECTED, now, reason)
        try:
            await self.store.create(COMMANDS, doc)
        except ConflictError:  # the same retried POST, concurrently: the first one's command stands
            for slot in (car_slot, caller_slot):  # this one sent nothing: its slots go back
                await self.limiter.give_back(*slot, now)
            stored = await self.store.read(COMMANDS, vehicle_id, cid)
            if stored is None:
                raise
            return self._retried(stored.document, wanted, caller), False
        record_outcome(None, doc)  # rejected on its preconditions: settled as it was created
        if reason is None:
            await self.queue.send(dispatch_message(vehicle_id, cid))
        log.info("command %s (%s) %s", cid, spec.name, doc["status"])
        return view(doc, caller.principal_id), True

    def _retried(self, doc: Document, wanted: str, caller: Caller) -> dict[str, Any]:
        if doc.get("fingerprint") != wanted:
            raise StateConflictError("this Idempotency-Key was used for a different command; use a new key")
        return view(doc, caller.principal_id)

    def _new(
        self,
        spec: CommandSpec,
        vehicle: VehicleDocument,
        cid: str,
        params: dict[str, Any],
        wanted: str,
        caller: Caller,
        roles: frozenset[Role],
        now: dt.datetime,
        ttl_seconds: int | None,
    ) -> Document:
        created = canonical_time(now)
        role = next(r for r in Role if r in roles)  # the most powerful role the caller sent it with
        return {
            "id": cid,
            "vehicleId": vehicle["vehicleId"],
            "kind": KIND,
            "brandId": vehicle.get("brandId"),
            "fleetId": vehicle.get("fleetId"),
            "name": spec.name,
            "params": params,
            "fingerprint": wanted,
            "status": Status.ACCEPTED.value,
            "reason": None,
            "transitions": [{"status": Status.ACCEPTED.value, "at": created}],
            "createdAt": created,
            "updatedAt": created,
            "expiresAt": canonical_time(now + dt.timedelta(seconds=ttl_seconds or spec.ttl_seconds)),
            "issuedBy": {"id": caller.principal_id, "role": role.value, "app": caller.app},
            "delivery": None,
        }

    async def get(self, vehicle_id: str, cid: str, caller_id: str | None = None, since: str = "") -> dict[str, Any]:
        """`since`: none created before it (a driver reads the car's commands from their time on:
        shared/auth/access.py `reads_from`)."""
        stored = await self.store.read(COMMANDS, vehicle_id, cid)
        if stored is None or stored.document.get("kind") != KIND or not _theirs(stored.document, since, caller_id):
            raise UnknownResourceError(f"no command {cid} for this car")
        doc = await self._confirm([stored.document], vehicle_id)
        return view(doc[0], caller_id)

    async def recent(
        self, vehicle_id: str, limit: int, token: str | None, caller_id: str | None = None, since: str = ""
    ) -> dict[str, Any]:
        """A car's commands, newest first (keyset pages); none created before `since` (see `get`)."""
        await self._vehicle(vehicle_id)
        page = await keyset_page(
            self.store,
            COMMANDS,
            scope=f"commands|{vehicle_id}",
            where="c.vehicleId = @v AND c.kind = @k",
            parameters={"@v": vehicle_id, "@k": KIND},
            key="createdAt",
            descending=True,
            limit=limit,
            token=token,
            partition_key=vehicle_id,
            match=lambda d: d.get("kind") == KIND,
            since=since,
        )
        items = await self._confirm(page.items, vehicle_id)
        return {"items": [view(d, caller_id) for d in items], "continuationToken": page.token}

    async def cancel(self, caller: Caller, vehicle_id: str, cid: str, since: str = "") -> dict[str, Any]:
        """Cancel a command the car does not have yet; StateConflictError once it does (or it has ended). One
        created before `since` is not found (see `get`)."""
        stored = await self.store.read(COMMANDS, vehicle_id, cid)
        if (
            stored is None
            or stored.document.get("kind") != KIND
            or not _theirs(stored.document, since, caller.principal_id)
        ):
            raise UnknownResourceError(f"no command {cid} for this car")
        spec = command(stored.document.get("name"))
        if not caller.roles & spec.roles:
            raise AccessDeniedError(f"cancelling {spec.name} needs one of the roles {', '.join(sorted(spec.roles))}")
        now = self.clock()

        def change(doc: Document) -> bool:
            if status_of(doc) == Status.CANCELLED:
                return False
            if not advance(doc, Status.CANCELLED, now, "cancelled_by_caller"):
                raise StateConflictError(f"the command is {doc['status']}: it can no longer be cancelled")
            return True

        doc = await self._update(vehicle_id, cid, change)
        if (doc.get("delivery") or {}).get("via") == VIA_C2D:
            await self._tell_car_cancelled(vehicle_id, cid)
        # the twin can take it back, unlike a C2D queue; if it cannot now, the caller hears so (the module would
        # still carry it out) and a retried cancel takes it out again
        await self._unqueue_module(vehicle_id, cid, doc, strict=True)
        return view(doc, caller.principal_id)

    # --- delivery ---------------------------------------------------------------------------------------------

    async def dispatch(self, vehicle_id: str, cid: str) -> Status | None:
        """Deliver one accepted command; the status it ended in (None: no such command, nothing to do).

        Only the dispatch that claims the command (`_claim`) calls the car. A call may wait in IoT Hub for the car
        to connect; were a second dispatch's call (a redelivered message, a retried POST's, the sweep's) still
        waiting when the first had queued the command and a caller cancelled it, the car would carry out a
        cancelled command. So a dispatch that finds another's call possibly in flight calls nobody: it comes back
        once that call is surely over (`_call_ends`) and calls then only if the command is still `sent` (the
        other dispatch died or its call failed in passing)."""
        stored = await self.store.read(COMMANDS, vehicle_id, cid)
        if stored is None or stored.document.get("kind") != KIND:
            return None
        doc = stored.document
        status = status_of(doc)
        if status not in (Status.ACCEPTED, Status.SENT):
            return status  # already settled or queued: a redelivered message changes nothing
        now = self.clock()
        if status == Status.SENT and self._call_ends(doc) > now:
            return await self._later(vehicle_id, cid, doc, now)
        if is_expired(doc, now):
            return await self._end(vehicle_id, cid, Status.EXPIRED, contract.TTL_ELAPSED, _as_read(doc))
        attempt = _attempt(doc) + 1
        doc = await self._update(vehicle_id, cid, lambda d: self._claim(d, now, attempt))
        if not _holds(doc, attempt):  # another dispatch claimed it first
            return await self._later(vehicle_id, cid, doc, now)
        try:
            module = self._module_of(vehicle_id)
            if module is not None:
                try:
                    return await self._invoke(vehicle_id, cid, doc, attempt, module)
                except DeviceNotFoundError:  # no such module (or no such car: the device method says which)
                    self._remember_no_module(vehicle_id)
            return await self._invoke(vehicle_id, cid, doc, attempt, None)
        except Exception:  # the call is over (its error, or a later step's): a redelivery need not wait for it
            await self._release(vehicle_id, cid, attempt)
            raise

    async def _invoke(self, vehicle_id: str, cid: str, doc: Document, attempt: int, module: str | None) -> Status:
        """The direct method on the car (`module` None) or its Edge module; queued when it is not connected. A
        module that does not exist raises DeviceNotFoundError (the car may have none). What the cloud concludes
        from the call is written only while this dispatch's claim (`attempt`) holds."""
        mine = _holder(attempt)
        try:
            if module is None:
                result = await self.gateway.invoke_method(
                    vehicle_id, doc["name"], contract.payload(doc), self.settings.connect_timeout,
                    self.settings.response_timeout,
                )  # fmt: skip
            else:
                result = await self.gateway.invoke_module_method(
                    vehicle_id, module, doc["name"], contract.payload(doc), self.settings.connect_timeout,
                    self.settings.response_timeout,
                )  # fmt: skip
        except DeviceNotOnlineError:
            return await self._queue(vehicle_id, cid, attempt, module)
        except DeviceTimeoutError:
            return await self._end(vehicle_id, cid, Status.FAILED, contract.NO_RESPONSE, mine)
        except DeviceNotFoundError:
            if module is not None:
                raise
            return await self._end(vehicle_id, cid, Status.FAILED, contract.DEVICE_NOT_FOUND, mine)
        except PermanentError as exc:
            return await self._end(vehicle_id, cid, Status.FAILED, reason_of(exc), mine)
        outcome = contract.method_outcome(result.status, result.payload)
        # the car's own answer: it wins over what the cloud concluded meanwhile (the sweep's no_response)
        return await self._settle(vehicle_id, cid, outcome, by_car=True, module=module)

    def _claim(self, doc: Document, now: dt.datetime, attempt: int) -> bool:
        """Make this dispatch the one that calls the car: an `accepted` command becomes `sent`, or a `sent` one
        whose last call is surely over is taken again; `attempt` numbers the claims, so of two dispatches that read
        the same claim only one writes the next (the write is etag-conditional). `callEnds`: by when this call is
        over for IoT Hub (both method timeouts and GRACE_SECONDS; the sweep's no_response waits as long)."""
        if _attempt(doc) != attempt - 1:
            return False
        if status_of(doc) == Status.ACCEPTED:
            if not advance(doc, Status.SENT, now):
                return False
        elif status_of(doc) != Status.SENT or self._call_ends(doc) > now:
            return False
        else:
            doc["updatedAt"] = canonical_time(now)  # the sweep's no_response counts from the latest call
        ends = now + dt.timedelta(seconds=self._method_budget())
        doc["delivery"] = {
            "via": "method",
            "at": canonical_time(now),
            "attempt": attempt,
            "callEnds": canonical_time(ends),
        }
        return True

    def _call_ends(self, doc: Mapping[str, Any]) -> dt.datetime:
        """By when the last claim's call is surely over (a command sent before claims were numbered: its last
        change and the method budget)."""
        delivery = doc.get("delivery")
        ends = delivery.get("callEnds") if isinstance(delivery, dict) else None
        if isinstance(ends, str):
            return _time(ends)
        return _time(doc["updatedAt"]) + dt.timedelta(seconds=self._method_budget())

    async def _later(self, vehicle_id: str, cid: str, doc: Document, now: dt.datetime) -> Status:
        """Another dispatch's call may be in flight: look again once it is surely over (a dispatch message that
        waits in the queue, not an instance that sleeps), unless the command has moved on."""
        if status_of(doc) != Status.SENT:
            return status_of(doc)
        wait = max(1, math.ceil((self._call_ends(doc) - now).total_seconds()) + 1)
        await self.queue.send(dispatch_message(vehicle_id, cid), delay_seconds=wait)
        log.info("command %s: another dispatch is calling the car; looking again in %d s", cid, wait)
        return Status.SENT

    async def _release(self, vehicle_id: str, cid: str, attempt: int) -> None:
        """The claim's call ended without an outcome (an error raised for the queue to retry): a redelivery may
        claim it at once rather than after `callEnds`. Best effort: the claim lapses at `callEnds` anyway."""
        now = self.clock()

        def release(doc: Document) -> bool:
            if not _holds(doc, attempt):
                return False
            doc["delivery"]["callEnds"] = canonical_time(now)
            return True

        try:
            await self._update(vehicle_id, cid, release)
        except FleetError as exc:
            log.warning("command %s: claim not released: %s", cid, type(exc).__name__)

    def _module_of(self, vehicle_id: str) -> str | None:
        """The Edge module to try first, unless the car was found without one lately."""
        if self.module_id is None or self._no_module.get(vehicle_id, 0.0) > time.monotonic():
            return None
        return self.module_id

    def _remember_no_module(self, vehicle_id: str) -> None:
        if len(self._no_module) > NO_MODULE_KEPT:
            self._no_module.clear()
        self._no_module[vehicle_id] = time.monotonic() + NO_MODULE_SECONDS

    def _module_inbox(self) -> ModuleInbox:
        return ModuleInbox(
            self.gateway, MODULE_COMMANDS_PROPERTY, MODULE_COMMANDS_KEPT, MODULE_COMMANDS_MAX_BYTES, evict=False
        )

    async def _queue(self, vehicle_id: str, cid: str, attempt: int, module: str | None) -> Status:
        """The car is not connected: a C2D message with the command's expiry waits for it in IoT Hub; for its Edge
        module (no C2D for modules) an entry in the module twin's `commands` until the expiry. Only while this
        dispatch's claim (`attempt`) holds: once `queued` a command may be cancelled, so no other claim's call may
        still be on its way to the car."""
        stored = await self.store.read(COMMANDS, vehicle_id, cid)
        if stored is None:
            raise NotFoundError(f"command {cid} vanished")
        doc = stored.document
        mine = _holder(attempt)
        if not mine(doc):
            # the sweep ended it, or another dispatch claimed it after this claim lapsed: queueing it would send it
            # twice, or next to a method call of that other dispatch
            return status_of(doc)
        now = self.clock()
        ttl = (expires_at(doc) - now).total_seconds()
        if ttl <= 0:
            return await self._end(vehicle_id, cid, Status.EXPIRED, contract.TTL_ELAPSED, mine)
        body = orjson.dumps(contract.payload(doc))
        try:
            if module is None:
                await self.gateway.send_c2d(vehicle_id, body, contract.c2d_properties(doc), ttl_seconds=ttl)
            else:
                await self._module_inbox().put(vehicle_id, module, cid, body, expires_at(doc), now)
        except DeviceQueueFullError:
            return await self._end(vehicle_id, cid, Status.FAILED, contract.QUEUE_FULL, mine)
        except DeviceNotFoundError:
            return await self._end(vehicle_id, cid, Status.FAILED, contract.DEVICE_NOT_FOUND, mine)
        except PermanentError as exc:
            return await self._end(vehicle_id, cid, Status.FAILED, reason_of(exc), mine)
        delivery = {"via": VIA_C2D} if module is None else {"via": VIA_MODULE_TWIN, "module": module}

        def queued(d: Document) -> bool:
            if not mine(d) or not advance(d, Status.QUEUED, now):
                return False
            d["delivery"] = {**delivery, "at": canonical_time(now)}
            return True

        return status_of(await self._update(vehicle_id, cid, queued))

    async def _unqueue_module(self, vehicle_id: str, cid: str, doc: Document, strict: bool = False) -> None:
        """Take a command out of the module twin once the car reported it or it was cancelled. After a report, best
        effort: the module carries out an id once and ignores expired entries, and the next queued command prunes
        them. After a cancel (`strict`), IoT Hub's error is raised: the module would still carry it out. A module
        that no longer exists has nothing to take out."""
        delivery = doc.get("delivery") or {}
        if delivery.get("via") != VIA_MODULE_TWIN or not isinstance(delivery.get("module"), str):
            return
        try:
            await self._module_inbox().remove(vehicle_id, delivery["module"], cid)
        except DeviceNotFoundError:
            return
        except FleetError as exc:
            if strict:
                raise
            log.info("command %s: not taken out of the module twin: %s", cid, type(exc).__name__)

    async def _settle(
        self, vehicle_id: str, cid: str, outcome: contract.Outcome, by_car: bool, module: str | None = None
    ) -> Status:
        now = self.clock()

        def change(doc: Document) -> bool:
            if module is not None and isinstance(doc.get("delivery"), dict):
                doc["delivery"]["module"] = module  # the method went to the car's Edge module
            changed = advance(doc, Status.DELIVERED, now, by_car=by_car)
            if outcome.succeeded:
                changed |= advance(doc, Status.SUCCEEDED, now, by_car=by_car)
            else:
                changed |= advance(doc, Status.FAILED, now, outcome.reason, outcome.message, by_car=by_car)
            return changed

        return status_of(await self._update(vehicle_id, cid, change))

    async def _end(
        self, vehicle_id: str, cid: str, status: Status, reason: str, still: Callable[[Document], bool]
    ) -> Status:
        """End the command as the cloud concludes, if it is `still` as the conclusion was drawn from."""
        now = self.clock()
        doc = await self._update(vehicle_id, cid, lambda d: still(d) and advance(d, status, now, reason))
        log.info("command %s %s (%s)", cid, doc["status"], reason)
        return status_of(doc)

    async def report(self, vehicle_id: str, cid: str, status: str, reason: str | None, message: str | None) -> bool:
        """The car's `command.result`: False when the car has no such command (the reply says so)."""
        stored = await self.store.read(COMMANDS, vehicle_id, cid)
        if stored is None or stored.document.get("kind") != KIND:
            return False
        now = self.clock()
        if status == "delivered":
            await self._update(vehicle_id, cid, lambda d: advance(d, Status.DELIVERED, now, by_car=True))
        elif status in ("succeeded", "failed"):
            outcome = contract.report_outcome(status == "succeeded", reason, message)
            await self._settle(vehicle_id, cid, outcome, by_car=True)
        elif status == "expired":
            await self._update(vehicle_id, cid, lambda d: advance(d, Status.EXPIRED, now, contract.TTL_ELAPSED))
        # "cancelled": the car skipped a command we cancelled; the record already says so
        await self._unqueue_module(vehicle_id, cid, stored.document)  # the module has it: its twin entry goes
        return True

    async def _tell_car_cancelled(self, vehicle_id: str, cid: str) -> None:
        """Put the id in the twin's `commands.cancelled` (CANCELLED_QUERY's: the cancelled C2D commands not yet
        expired, newest last), so the car skips the queued C2D message if it arrives after all (IoT Hub cannot
        withdraw one message from a device's queue)."""
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        if stored is None:
            return
        # The list is written whole, so a cancel of the same car at the same time may write an older one over it:
        # read again after writing, and write again until what is written is what the store says (the last writer
        # reads after every cancel written before its write).
        patched: list[str] | None = None
        for _ in range(MAX_RETRIES):
            now = canonical_time(self.clock())
            recent = await self.store.query(
                COMMANDS,
                CANCELLED_QUERY,
                {"@v": vehicle_id, "@k": KIND, "@s": Status.CANCELLED.value, "@via": VIA_C2D, "@now": now},
                partition_key=vehicle_id,
            )
            waiting = [d for d in recent if _may_wait_in_hub(d, now)]  # again: a store need not apply all of it
            ids = [str(d["id"]) for d in sorted(waiting, key=lambda d: str(d.get("updatedAt")))][-CANCELLED_IN_TWIN:]
            if cid not in ids:
                ids = [*ids[-(CANCELLED_IN_TWIN - 1) :], cid]
            if ids == patched:
                return
            await self.gateway.patch_desired_if_present(vehicle_id, {"commands": {"cancelled": ids}})
            patched = ids

    # --- the sweep ----------------------------------------------------------------------------------------------

    async def sweep(self) -> dict[str, int]:
        """End what waits for something that will not come (module docstring); counts by outcome."""
        now = self.clock()
        counts: dict[str, int] = {}
        candidates = await self.store.query(COMMANDS, SWEEP_QUERY, self.sweep_parameters(now))
        for doc in candidates:
            outcome = await self._sweep_one(doc, now)
            if outcome:
                counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def sweep_parameters(self, now: dt.datetime) -> dict[str, Any]:
        """SWEEP_QUERY's parameters at `now`: the times `_sweep_one` ends or dispatches again from."""

        def ago(seconds: float) -> str:
            return canonical_time(now - dt.timedelta(seconds=seconds))

        return {
            "@k": KIND,
            "@accepted": Status.ACCEPTED.value,
            "@sent": Status.SENT.value,
            "@queued": Status.QUEUED.value,
            "@delivered": Status.DELIVERED.value,
            "@now": canonical_time(now),
            "@outcomeDue": ago(NO_OUTCOME_SECONDS),
            "@unanswered": ago(self._method_budget()),
            "@lost": ago(DISPATCH_LOST_SECONDS),
        }

    def _method_budget(self) -> int:
        return self.settings.connect_timeout + self.settings.response_timeout + GRACE_SECONDS

    async def _sweep_one(self, doc: Document, now: dt.datetime) -> str | None:
        """End or dispatch again one command the query found, as the query found it: it is decided on that
        status, so a command that moved meanwhile (a `sent` one queued by its dispatch) is left as it now is."""
        vehicle_id, cid, status = str(doc["vehicleId"]), str(doc["id"]), status_of(doc)
        age = (now - _time(doc["updatedAt"])).total_seconds()
        end: tuple[Status, str] | None = None
        if status in (Status.QUEUED, Status.ACCEPTED) and is_expired(doc, now):
            end = Status.EXPIRED, contract.TTL_ELAPSED
        elif status == Status.SENT and age >= self._method_budget():
            end = Status.FAILED, contract.NO_RESPONSE
        elif status == Status.DELIVERED and (now - expires_at(doc)).total_seconds() >= NO_OUTCOME_SECONDS:
            end = Status.FAILED, contract.NO_OUTCOME
        try:
            if end is not None:
                ended = await self._end(vehicle_id, cid, *end, _as_read(doc))
                return ended.value if ended == end[0] else None
            if status == Status.ACCEPTED and age >= DISPATCH_LOST_SECONDS:
                await self.queue.send(dispatch_message(vehicle_id, cid))
                return "redispatched"
        except StoreError as exc:  # one command's trouble does not stop the sweep; the next run tries again
            log.warning("command sweep: %s: %s", cid, exc)
        return None

    # --- confirmation ------------------------------------------------------------------------------------------

    async def _confirm(self, docs: Sequence[Document], vehicle_id: str) -> list[Document]:
        """Mark `confirmed` the succeeded commands whose effect the car's live state now shows (persisted)."""
        now = self.clock()
        waiting = [
            d
            for d in docs
            if d.get("status") == Status.SUCCEEDED.value
            and (spec := catalogue().get(str(d.get("name")))) is not None
            and spec.confirm is not None
            and now - _time(d["updatedAt"]) <= CONFIRM_WINDOW
        ]
        if not waiting:
            return list(docs)
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        signals = signals_of(as_vehicle(stored.document)) if stored else {}
        confirmed: dict[str, Document] = {}
        for doc in waiting:
            if shows_effect(doc, signals):
                confirmed[doc["id"]] = await self._update(
                    vehicle_id, doc["id"], lambda d: advance(d, Status.CONFIRMED, self.clock())
                )
        return [confirmed.get(d["id"], d) for d in docs]

    # --- helpers ------------------------------------------------------------------------------------------------

    async def _update(self, vehicle_id: str, cid: str, change: Callable[[Document], bool]) -> Document:
        """Read the command, apply `change` (False: nothing to write) and write it back etag-conditionally,
        again on a race (the car's report and the dispatch may land together)."""
        for _ in range(MAX_RETRIES):
            stored = await self.store.read(COMMANDS, vehicle_id, cid)
            if stored is None:
                raise UnknownResourceError(f"no command {cid} for this car")
            doc = strip_system_properties(stored.document)
            before = doc.get("status")
            if not change(doc):
                return doc
            try:
                await self.store.replace(COMMANDS, doc, stored.etag)
            except PreconditionFailedError:
                continue
            record_outcome(before, doc)
            return doc
        raise StoreError(f"command {cid}: kept changing; gave up after {MAX_RETRIES} tries")

    async def _vehicle(self, vehicle_id: str) -> VehicleDocument:
        stored = await self.store.read(VEHICLES, vehicle_id, safe_id(vehicle_id))
        if stored is None or is_erased(stored.document):
            raise UnknownResourceError(f"vehicle {vehicle_id} is not registered")
        return as_vehicle(stored.document)

    async def _speed_limit(self, vehicle: VehicleDocument) -> float:
        if self.brands is None:
            return self.settings.moving_speed_kmh
        return (await self.brands.get(vehicle.get("brandId"))).moving_speed_kmh

    async def _location_withheld(self, vehicle: VehicleDocument) -> bool:
        bases: tuple[tuple[str, str], ...] = ()
        if self.brands is not None:
            bases = tuple(sorted((await self.brands.get(vehicle.get("brandId"))).data_category_bases.items()))
        return not location_allowed(vehicle, bases)


def _may_wait_in_hub(doc: Mapping[str, Any], now: str) -> bool:
    """Whether a cancelled command's C2D message may still wait in IoT Hub (CANCELLED_QUERY's filter)."""
    delivery = doc.get("delivery")
    return (
        doc.get("status") == Status.CANCELLED.value
        and isinstance(delivery, dict)
        and delivery.get("via") == VIA_C2D
        and str(doc.get("expiresAt") or "") > now
    )


def _attempt(doc: Mapping[str, Any]) -> int:
    """How many times a dispatch claimed the command to call the car (`CommandService._claim`)."""
    delivery = doc.get("delivery")
    attempt = delivery.get("attempt") if isinstance(delivery, dict) and delivery.get("via") == "method" else None
    return attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 0


def _holds(doc: Mapping[str, Any], attempt: int) -> bool:
    """Whether the claim `attempt` is the command's current one (it is `sent` under it)."""
    return status_of(doc) == Status.SENT and _attempt(doc) == attempt


def _holder(attempt: int) -> Callable[[Document], bool]:
    return lambda doc: _holds(doc, attempt)


def _as_read(seen: Mapping[str, Any]) -> Callable[[Document], bool]:
    """Whether a command is still as it was read (every change moves `updatedAt`, but for a released claim)."""
    return lambda doc: doc.get("status") == seen.get("status") and doc.get("updatedAt") == seen.get("updatedAt")


def _handed_over(doc: Mapping[str, Any]) -> str:
    """When the car had the command, as the record knows it: the `delivered` transition of a command that was
    queued, else the last `sent` one, else its creation."""
    transitions = [t for t in doc.get("transitions") or () if isinstance(t, dict) and isinstance(t.get("at"), str)]
    queued = any(t.get("status") == Status.QUEUED.value for t in transitions)
    wanted = Status.DELIVERED.value if queued else Status.SENT.value
    times = [str(t["at"]) for t in transitions if t.get("status") == wanted]
    return max(times) if times else str(doc["createdAt"])


def _time(raw: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))


def shows_effect(doc: Mapping[str, Any], signals: Mapping[str, Any]) -> bool:
    """Whether the live state shows the command's effect: the confirming signal, stamped after the command was
    issued, holds the expected value (numbers within a tolerance). A `fresh` confirmation takes any value stamped
    after the car had the command: a queued command's `delivered` (the car's routine telemetry on waking, before
    it ran the command, is not its answer), a connected car's `sent`."""
    spec = catalogue().get(str(doc.get("name")))
    if spec is None or spec.confirm is None:
        return False
    entry = signals.get(spec.confirm.signal)
    if not isinstance(entry, dict) or not isinstance(entry.get("ts"), str) or entry["ts"] < str(doc["createdAt"]):
        return False
    if spec.confirm.fresh:
        return str(entry["ts"]) > _handed_over(doc)
    expected, value = spec.confirm.expected(doc.get("params") or {}), entry.get("value")
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected
    if isinstance(expected, int | float) and isinstance(value, int | float):
        return abs(float(value) - float(expected)) <= NUMERIC_TOLERANCE * max(1.0, abs(float(expected)))
    return bool(value == expected)


def _theirs(doc: Document, since: str, caller_id: str | None) -> bool:
    """Whether the command was created at or after `since` ("": always), or sent by the caller (a driver whose time
    nothing dates still reads and cancels what they sent)."""
    issued = doc.get("issuedBy")
    mine = caller_id is not None and isinstance(issued, dict) and issued.get("id") == caller_id
    return not since or mine or str(doc.get("createdAt") or "") >= since
