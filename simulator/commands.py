"""The car's side of remote commands, as pure code: parse, check, remember, execute on the model, decide the answer.

No I/O and no clock: the caller passes `now`, and simulator/car.py turns a `Handled` into a direct-method
response or `command.result` request messages. The car follows the wire contract (docs/messages.md,
"Commands"), not the backend's code: it keeps its own copy of the parameter rules (`PARAMETERS`), which a unit
test compares with shared/commands/catalogue.json.

Order of checks for one command: a commandId the car remembers gets the stored outcome and nothing happens
again; then the test faults for its name; then the name (unknown: `unsupported`); then the payload (an object
with the commandId); for a queued command the twin's `commands.cancelled`; the expiry; the version, the times,
the parameters; then the car's own preconditions (simulator/drive.py), and only then does anything happen.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from simulator.drive import CarModel, Refused

MEMORY: Final = 256  # command ids the car remembers with their outcome
VERSION: Final = 1

Via = Literal["method", "c2d"]
Fault = Literal["error", "garbage", "never"]
FAULTS: Final[tuple[Fault, ...]] = ("error", "garbage", "never")

# The direct-method status of each failure reason.
METHOD_STATUS: Final[dict[str, int]] = {
    "invalid_parameters": 400,
    "unsupported": 404,
    "vehicle_moving": 409,
    "not_plugged_in": 409,
    "cancelled": 409,
    "expired": 410,
    "internal_error": 500,
}


@dataclass(frozen=True)
class Param:
    """One parameter's rule (the subset of JSON Schema the catalogue uses)."""

    kind: Literal["number", "integer", "string", "boolean"]
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    default: Any = None  # None: no default
    required: bool = False


PARAMETERS: Final[dict[str, dict[str, Param]]] = {
    "lock": {},
    "unlock": {},
    "climate.start": {"targetTemperature": Param("number", 16, 28, default=21)},
    "climate.stop": {},
    "horn_lights": {"seconds": Param("integer", 1, 30, default=5), "horn": Param("boolean", default=True)},
    "charging.start": {},
    "charging.stop": {},
    "charging.limit": {"limit": Param("integer", 50, 100, required=True)},
    "destination.send": {
        "latitude": Param("number", -90, 90, required=True),
        "longitude": Param("number", -180, 180, required=True),
        "name": Param("string", min_length=1, max_length=100),
    },
    "locate": {},
}


@dataclass(frozen=True)
class Outcome:
    """What became of a command: succeeded, failed (with a reason), cancelled or expired."""

    status: Literal["succeeded", "failed", "cancelled", "expired"]
    reason: str | None = None
    message: str | None = None

    @classmethod
    def failed(cls, reason: str, message: str) -> Outcome:
        return cls("failed", reason, message)

    def method_answer(self) -> tuple[int, dict[str, Any]]:
        """The direct-method status and payload: 200 `{"status":"succeeded"}`, else a failure with its reason
        (a cancelled or expired command answers as failed with reason `cancelled` / `expired`)."""
        if self.status == "succeeded":
            return 200, {"status": "succeeded"}
        reason = self.reason if self.status == "failed" else self.status
        assert reason is not None
        message = self.message or f"the command is {self.status}"
        return METHOD_STATUS[reason], {"status": "failed", "reason": reason, "message": message}


@dataclass(frozen=True)
class Handled:
    """One received command and what the car does about it."""

    command_id: str | None  # None: no id to answer for (only a method can still be answered)
    name: str | None
    via: Via
    outcome: Outcome | None  # None: not answered (fault `never`) or answered with garbage (fault `garbage`)
    fault: Fault | None = None
    repeat: bool = False  # a command id the car remembered: the stored outcome, nothing done again
    locate: bool = False  # the car must send its position now

    def log_entry(self, received_at: float) -> dict[str, Any]:
        unanswered = "garbage" if self.fault == "garbage" else "unanswered"
        return {
            "commandId": self.command_id,
            "name": self.name,
            "via": self.via,
            "receivedAt": received_at,
            "outcome": self.outcome.status if self.outcome else unanswered,
            "reason": self.outcome.reason if self.outcome else None,
            "repeat": self.repeat,
        }


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO 8601 time with a zone, as UTC; None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(dt.UTC) if moment.tzinfo is not None else None


def check_params(name: str, raw: Any) -> dict[str, Any] | str:
    """The parameters with defaults filled in, or what is wrong with them."""
    rules = PARAMETERS[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return "params must be an object"
    unknown = sorted(set(raw) - set(rules))
    if unknown:
        return f"unknown parameter {unknown[0]!r}"
    params: dict[str, Any] = {}
    for key, rule in rules.items():
        if key not in raw:
            if rule.required:
                return f"{key} is required"
            if rule.default is not None:
                params[key] = rule.default
            continue
        value = raw[key]
        problem = _check(key, value, rule)
        if problem:
            return problem
        params[key] = int(value) if rule.kind == "integer" else value
    return params


def _check(key: str, value: Any, rule: Param) -> str | None:
    if rule.kind == "boolean":
        return None if isinstance(value, bool) else f"{key} must be a boolean"
    if rule.kind == "string":
        if not isinstance(value, str):
            return f"{key} must be a string"
        if (rule.min_length is not None and len(value) < rule.min_length) or (
            rule.max_length is not None and len(value) > rule.max_length
        ):
            return f"{key} must be {rule.min_length}..{rule.max_length} characters"
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"{key} must be a number"
    if rule.kind == "integer" and value != int(value):
        return f"{key} must be an integer"
    if (rule.minimum is not None and value < rule.minimum) or (rule.maximum is not None and value > rule.maximum):
        return f"{key} must be within {rule.minimum:g}..{rule.maximum:g}"
    return None


@dataclass
class CommandHandler:
    """Executes commands on the model, once per command id (the last MEMORY ids and their outcome)."""

    model: CarModel
    faults: Mapping[str, Fault] = field(default_factory=dict)
    memory: OrderedDict[str, Outcome] = field(default_factory=OrderedDict)
    executed: int = 0  # commands acted on (not repeats, not refusals)

    def handle(
        self,
        payload: Any,
        via: Via,
        now: dt.datetime,
        name: str | None = None,
        command_id: str | None = None,
        cancelled: Container[str] = frozenset(),
    ) -> Handled:
        """One command: `payload` the decoded JSON body (anything), `name` the method name or the C2D `name`
        property, `command_id` the C2D `commandId` property (used when the body has none)."""
        body = payload if isinstance(payload, dict) else {}
        body_id = body.get("commandId")
        if isinstance(body_id, str) and 0 < len(body_id) <= 128:
            command_id = body_id
        elif not (isinstance(command_id, str) and 0 < len(command_id) <= 128):
            command_id = None
        body_name = body.get("name")
        name = name if name is not None else body_name if isinstance(body_name, str) else None
        if command_id is not None and command_id in self.memory:
            self.memory.move_to_end(command_id)
            return Handled(command_id, name, via, self.memory[command_id], repeat=True)
        fault = self.faults.get(name) if name is not None else None
        if fault == "error":
            outcome = Outcome.failed("internal_error", f"{name} failed inside the car (injected fault)")
            return self._remember(Handled(command_id, name, via, outcome, fault))
        if fault is not None:
            return Handled(command_id, name, via, None, fault)  # garbage / never: nothing remembered
        outcome = self._decide(body, payload, via, now, name, command_id, cancelled)
        locate = outcome.status == "succeeded" and name == "locate"
        return self._remember(Handled(command_id, name, via, outcome, locate=locate))

    def _decide(
        self,
        body: dict[str, Any],
        payload: Any,
        via: Via,
        now: dt.datetime,
        name: str | None,
        command_id: str | None,
        cancelled: Container[str],
    ) -> Outcome:
        if name not in PARAMETERS:
            return Outcome.failed("unsupported", f"unknown command {name!r}"[:200])
        if not isinstance(payload, dict) or command_id is None or body.get("commandId") != command_id:
            return Outcome.failed("invalid_parameters", "the payload is not a command (an object with a commandId)")
        if via == "c2d" and command_id in cancelled:
            return Outcome("cancelled", None, "cancelled before it reached the car")
        expires_at = parse_time(body.get("expiresAt"))
        if expires_at is None:
            return Outcome.failed("invalid_parameters", "expiresAt must be an ISO 8601 time with a zone")
        if now >= expires_at:
            return Outcome("expired", None, "received after expiresAt")
        if body.get("v") != VERSION:
            return Outcome.failed("invalid_parameters", f"unsupported version {body.get('v')!r}")
        if "issuedAt" in body and parse_time(body["issuedAt"]) is None:
            return Outcome.failed("invalid_parameters", "issuedAt must be an ISO 8601 time with a zone")
        if body.get("name") != name:
            return Outcome.failed("invalid_parameters", "the payload's name is not the command's")
        params = check_params(name, body.get("params"))
        if isinstance(params, str):
            return Outcome.failed("invalid_parameters", params)
        try:
            self.model.execute(name, params)
        except Refused as refused:
            return Outcome.failed(refused.reason, refused.message)
        except Exception as exc:  # a bug in the car: answered, never raised into the SDK
            return Outcome.failed("internal_error", type(exc).__name__)
        self.executed += 1
        return Outcome("succeeded")

    def _remember(self, handled: Handled) -> Handled:
        if handled.command_id is not None and handled.outcome is not None:
            self.memory[handled.command_id] = handled.outcome
            self.memory.move_to_end(handled.command_id)
            while len(self.memory) > MEMORY:
                self.memory.popitem(last=False)
        return handled
