"""A command's lifecycle: which status may follow which, and the document that records every transition.

    accepted ─┬─> sent ───┬─> delivered ─┬─> succeeded ──> confirmed
              │           │              ├─> failed (reason)
              ├─> queued ─┘              └─> expired
              ├─> rejected (precondition)
              ├─> cancelled (until delivered)
              └─> failed / expired

`sent`: a direct method is in flight. `queued`: the car was not connected; a C2D message with the command's
expiry waits in IoT Hub. `delivered`: the car has it. `confirmed`: the car's next telemetry shows the effect.
Each transition is timestamped in `transitions`, so the record says what happened when, not only where it ended.

The cloud's view gives way to the car's (the lifecycle tells the truth): if the car reports an outcome for a
command the cloud already gave up on (expired, cancelled after the C2D message left, or failed for want of an
answer: `no_response`, `no_outcome`), the car's outcome is recorded with `late: true` and becomes the status. Nothing
else leaves a terminal status.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from shared.commands.contract import NO_OUTCOME, NO_RESPONSE
from shared.device_messages import canonical_time
from shared.stores.base import Document, strip_system_properties


class Status(StrEnum):
    ACCEPTED = "accepted"
    SENT = "sent"
    QUEUED = "queued"
    DELIVERED = "delivered"
    SUCCEEDED = "succeeded"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


S = Status
NEXT: Final[Mapping[Status, frozenset[Status]]] = {
    S.ACCEPTED: frozenset({S.SENT, S.QUEUED, S.REJECTED, S.CANCELLED, S.FAILED, S.EXPIRED}),
    S.SENT: frozenset({S.DELIVERED, S.SUCCEEDED, S.FAILED, S.QUEUED, S.EXPIRED}),
    S.QUEUED: frozenset({S.DELIVERED, S.SUCCEEDED, S.FAILED, S.EXPIRED, S.CANCELLED}),
    S.DELIVERED: frozenset({S.SUCCEEDED, S.FAILED, S.EXPIRED}),
    S.SUCCEEDED: frozenset({S.CONFIRMED}),
    S.CONFIRMED: frozenset(),
    S.FAILED: frozenset(),
    S.EXPIRED: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
}
# Settled: the outcome is known (only `confirmed` may still follow `succeeded`); clients stop following these.
SETTLED: Final = frozenset(s for s, after in NEXT.items() if not after) | {S.SUCCEEDED}
# What the car's own report may still change after the cloud gave up (see the module docstring): these statuses,
# and `failed` for one of these reasons (the cloud heard nothing; the car may yet say what happened).
CAR_OVERRIDES: Final = frozenset({S.EXPIRED, S.CANCELLED})
GAVE_UP: Final = frozenset({NO_RESPONSE, NO_OUTCOME})
CAR_OUTCOMES: Final = frozenset({S.DELIVERED, S.SUCCEEDED, S.FAILED})
# Order of progress, so a report that arrives after a later one (delivered after succeeded) changes nothing.
RANK: Final = {S.ACCEPTED: 0, S.SENT: 1, S.QUEUED: 1, S.DELIVERED: 2}
# Statuses a sweep looks at: still waiting for something that may never come.
OPEN: Final = (S.ACCEPTED, S.SENT, S.QUEUED, S.DELIVERED)

KIND: Final = "command"
NAMESPACE: Final = uuid.UUID("0b7c4f5e-1d8a-4a43-9b55-6f0f2a8c3e11")


def command_id(vehicle_id: str, caller: str, idempotency_key: str) -> str:
    """The command's id, derived from who asked for what with which key: a retried POST finds the same one."""
    return str(uuid.uuid5(NAMESPACE, f"{vehicle_id}\n{caller}\n{idempotency_key}"))


def fingerprint(name: str, params: Mapping[str, Any]) -> str:
    """What was asked, so an idempotency key reused for a different command is recognised (and refused)."""
    import orjson

    return hashlib.sha256(orjson.dumps({"name": name, "params": params}, option=orjson.OPT_SORT_KEYS)).hexdigest()


def status_of(doc: Mapping[str, Any]) -> Status:
    return Status(doc["status"])


def allowed(current: Status, target: Status, by_car: bool = False, reason: str | None = None) -> bool:
    """Whether `target` may follow `current` (`reason`: the current one's); the car's own report may also override
    a cloud-side end."""
    if target in NEXT[current] and target != current:
        return True
    return by_car and target in CAR_OUTCOMES and overridable(current, reason)


def overridable(current: Status, reason: str | None) -> bool:
    """Whether the status is the cloud giving up, which the car's own outcome replaces."""
    return current in CAR_OVERRIDES or (current == S.FAILED and reason in GAVE_UP)


def advance(
    doc: Document,
    target: Status,
    at: dt.datetime,
    reason: str | None = None,
    message: str | None = None,
    by_car: bool = False,
) -> bool:
    """Move the command document to `target` in place (appending the transition); False, unchanged, when the
    lifecycle does not allow it (a replayed or out-of-order report)."""
    current = status_of(doc)
    current_reason = doc.get("reason")
    if not allowed(current, target, by_car, current_reason if isinstance(current_reason, str) else None):
        return False
    if target == S.DELIVERED and RANK.get(current, 3) >= RANK[S.DELIVERED]:
        return False
    if by_car and reason in GAVE_UP:  # the cloud's words for its own silence: a car that sends them means itself
        reason = f"car_{reason}"
    entry: dict[str, Any] = {"status": target.value, "at": canonical_time(at)}
    if reason:
        entry["reason"] = reason
    if by_car and (target == current or target not in NEXT[current]):
        entry["late"] = True
    doc.setdefault("transitions", []).append(entry)
    doc["status"] = target.value
    doc["updatedAt"] = entry["at"]
    if reason is not None or target in (S.FAILED, S.REJECTED, S.EXPIRED):
        doc["reason"] = reason
    elif target == S.SUCCEEDED and doc.get("reason") is not None:  # the car's late word: no failure left to explain
        doc["reason"] = None
        doc.pop("message", None)
    if message is not None:
        doc["message"] = message[:200]
    return True


OUTCOMES: Final = frozenset({S.SUCCEEDED, S.FAILED, S.EXPIRED, S.REJECTED, S.CANCELLED})


def record_outcome(before: str | None, doc: Mapping[str, Any]) -> None:
    """A command document was written: if that write settled it (succeeded, failed, expired, rejected,
    cancelled), count the outcome and its time since accepted (docs/operations.md). Called after the write
    commits, so a write lost to a race counts nothing; a late report of the car after `expired` is not counted
    again."""
    status = doc.get("status")
    if status == before or status not in OUTCOMES or (before is not None and Status(before) in SETTLED):
        return
    from shared.observability.metrics import add, record

    name = str(doc.get("name", "unknown"))
    add("carlink.commands.outcomes", 1, {"command": name, "status": status, "reason": str(doc.get("reason") or "")})
    try:
        accepted = dt.datetime.fromisoformat(str(doc["createdAt"]))
        settled = dt.datetime.fromisoformat(str(doc["updatedAt"]))
    except (KeyError, ValueError):
        return
    record(
        "carlink.commands.latency", max(0.0, (settled - accepted).total_seconds()), {"command": name, "status": status}
    )


def expires_at(doc: Mapping[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(str(doc["expiresAt"]).replace("Z", "+00:00"))


def is_expired(doc: Mapping[str, Any], now: dt.datetime) -> bool:
    return expires_at(doc) <= now


def view(doc: Mapping[str, Any], caller_id: str | None = None) -> dict[str, Any]:
    """A command as the API shows it: no caller ids (the audit log keeps who), only their role and whether it
    was the caller's own."""
    issued = doc.get("issuedBy") or {}
    shown = {k: v for k, v in strip_system_properties(doc).items() if k not in ("kind", "fingerprint", "issuedBy")}
    shown.pop("ttl", None)
    shown["commandId"] = shown.pop("id")
    shown["issuedBy"] = {"role": issued.get("role"), "self": caller_id is not None and issued.get("id") == caller_id}
    return shown
