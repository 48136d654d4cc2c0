"""Remote commands at the module (docs/commands.md, "Cars with the Edge module").

The backend reaches the module two ways, as IoT Hub allows for modules: a direct method named after the command
when the module is connected (answered with the command's status and `{"status": "succeeded"}` or `{"status":
"failed", "reason", "message"}`), and, when it is not, an entry of the module twin's desired `commands` (keyed by
command id, the payload as JSON text, with an expiry), which the module carries out when it reads the twin and
reports with `command.result` requests (`delivered`, then the outcome), as a car reports a queued C2D command.

What a command does is the `Executor`'s: the simulator's command handler on the drive model (pure code, the same
rules and answers as the simulated cars); a module without one (a JSON-lines or Kuksa source: no actuators wired
here) answers every command `unsupported`. Each command id is carried out once: its outcome is kept in the outbox
(the newest `MEMORY`), so a repeated method, a twin read again after a reconnect, or a restart gets the stored
outcome and nothing happens twice.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Final, Protocol

from edge.outbox import Outbox

MEMORY: Final = 256
MEMORY_KEY: Final = "commands"
NAMESPACE: Final = uuid.UUID("6d5b1f0e-7a2c-4f7e-9a31-0c6f1d2e8b47")
# The direct-method status of each failure reason (the simulator's, docs/messages.md "Commands").
METHOD_STATUS: Final = {"invalid_parameters": 400, "unsupported": 404, "vehicle_moving": 409,
                        "not_plugged_in": 409, "cancelled": 409, "expired": 410, "internal_error": 500}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a command ended at the car: `succeeded`, `failed` (reason, message), `expired` or `cancelled`."""

    status: str
    reason: str | None = None
    message: str | None = None

    def method_answer(self) -> tuple[int, dict[str, Any]]:
        if self.status == "succeeded":
            return 200, {"status": "succeeded"}
        reason = self.reason if self.status == "failed" and self.reason else self.status
        message = self.message or f"the command is {self.status}"
        return METHOD_STATUS.get(reason, 500), {"status": "failed", "reason": reason, "message": message}


class Executor(Protocol):
    def __call__(self, payload: Any, via: str, now: dt.datetime, name: str | None) -> Outcome: ...


def unsupported(payload: Any, via: str, now: dt.datetime, name: str | None) -> Outcome:
    """A module with no actuators wired (JSON-lines, Kuksa sources)."""
    return Outcome("failed", "unsupported", "this car's module carries out no commands")


def drive_model_executor(model: Any) -> Executor:
    """The simulator's command handler on the drive model (simulator.commands: pure, imports nothing of the cloud)."""
    from simulator.commands import CommandHandler

    handler = CommandHandler(model)

    def run(payload: Any, via: str, now: dt.datetime, name: str | None) -> Outcome:
        handled = handler.handle(payload, "method" if via == "method" else "c2d", now, name)
        outcome = handled.outcome
        if outcome is None:  # only injected faults leave none; none are injected here
            return Outcome("failed", "internal_error", "no outcome")
        return Outcome(outcome.status, outcome.reason, outcome.message)

    return run


def command_id_of(payload: Any) -> str | None:
    cid = payload.get("commandId") if isinstance(payload, dict) else None
    return cid if isinstance(cid, str) and 0 < len(cid) <= 128 else None


def report_id(command_id: str, status: str) -> str:
    """The requestId of a `command.result` report: the same for the same command and status, so a report queued
    again (after a restart, or the twin read again) is kept once by the outbox and answered once by the cloud."""
    return str(uuid.uuid5(NAMESPACE, f"{command_id}\n{status}"))


@dataclass
class ModuleCommands:
    outbox: Outbox
    executor: Executor = unsupported

    def remembered(self, command_id: str) -> Outcome | None:
        memory = self.outbox.get(MEMORY_KEY) or {}
        stored = memory.get(command_id)
        return Outcome(*stored) if isinstance(stored, list) and len(stored) == 3 else None

    def _remember(self, command_id: str, outcome: Outcome) -> None:
        memory = dict(self.outbox.get(MEMORY_KEY) or {})
        memory.pop(command_id, None)
        memory[command_id] = [outcome.status, outcome.reason, outcome.message]
        self.outbox.put(MEMORY_KEY, dict(list(memory.items())[-MEMORY:]))  # insertion order: the newest last

    def run(self, payload: Any, via: str, now: dt.datetime, name: str | None = None) -> tuple[Outcome, bool]:
        """Carry out the command once; (its outcome, whether it was carried out now rather than remembered)."""
        command_id = command_id_of(payload)
        if command_id is not None and (known := self.remembered(command_id)) is not None:
            return known, False
        try:
            outcome = self.executor(payload, via, now, name)
        except Exception as exc:  # a bug in the executor: answered, never raised into the SDK
            outcome = Outcome("failed", "internal_error", type(exc).__name__)
        if command_id is not None:
            self._remember(command_id, outcome)
        return outcome, True
