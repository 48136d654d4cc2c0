"""What a car receives and answers for a command (docs/messages.md "Commands", docs/schemas/command-v1.schema.json).

A connected car gets a direct method named after the command; a sleeping one a C2D message (`type=command`) with
the same JSON body. The car answers a method with a status and `{"status": "succeeded"}` or `{"status": "failed",
"reason", "message"}`, and reports a queued command with `command.result` requests. Reading a car's answer never
raises: garbage becomes a failure with reason `invalid_response`, never a command stuck in `sent`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

VERSION: Final = 1
COMMAND_PROPERTIES: Final = {"type": "command"}
REASON: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_MESSAGE: Final = 200
# Reason codes the cloud gives (the car's own come from its answer).
INVALID_RESPONSE: Final = "invalid_response"  # the car answered, but not in the contract
NO_RESPONSE: Final = "no_response"  # a connected car did not answer the method in time
NO_OUTCOME: Final = "no_outcome"  # a queued command reached the car, which never reported how it ended
DEVICE_NOT_FOUND: Final = "device_not_found"  # the car's identity is gone (erased, revoked)
QUEUE_FULL: Final = "queue_full"  # the car's C2D queue holds 50 messages already
TTL_ELAPSED: Final = "ttl_elapsed"  # nobody delivered it in its time to live
CAR_FAILED: Final = "car_failed"  # the car reported a failure without a reason
INVALID_REASON: Final = "invalid_reason"  # the car reported a failure whose reason is not a code (REASON)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the car says a command ended: succeeded, or failed with a reason code (and a short message)."""

    succeeded: bool
    reason: str | None = None
    message: str | None = None


def payload(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The method payload / C2D body of a command document."""
    return {
        "v": VERSION,
        "commandId": doc["id"],
        "name": doc["name"],
        "params": doc.get("params") or {},
        "issuedAt": doc["createdAt"],
        "expiresAt": doc["expiresAt"],
    }


def c2d_properties(doc: Mapping[str, Any]) -> dict[str, str]:
    return {**COMMAND_PROPERTIES, "commandId": str(doc["id"]), "name": str(doc["name"])}


def _reason(raw: Any, fallback: str) -> str:
    return raw if isinstance(raw, str) and REASON.fullmatch(raw) else fallback


def report_outcome(succeeded: bool, reason: Any, message: Any) -> Outcome:
    """The outcome of a car's `command.result` report. Its reason is stored, shown by the API and is a metric
    attribute, so like a method answer's it must be a code: free text (it may name people) becomes
    `invalid_reason`, never stored or exported."""
    text = message[:MAX_MESSAGE] if isinstance(message, str) else None
    if succeeded:
        return Outcome(True, None, text)
    return Outcome(False, CAR_FAILED if reason is None else _reason(reason, INVALID_REASON), text)


def method_outcome(status: int, body: Any) -> Outcome:
    """The outcome of a direct method answer: 200 with `{"status": "succeeded"}` succeeded; any other status
    failed with the car's reason (or `car_error_<status>`); 200 with anything else is not in the contract."""
    answer = body if isinstance(body, dict) else {}
    message = answer.get("message")
    text = message[:MAX_MESSAGE] if isinstance(message, str) else None
    if status == 200:
        if answer.get("status") == "succeeded":
            return Outcome(True)
        if answer.get("status") == "failed":
            return Outcome(False, _reason(answer.get("reason"), INVALID_RESPONSE), text)
        return Outcome(False, INVALID_RESPONSE, "the car's answer is not a command result")
    return Outcome(False, _reason(answer.get("reason"), f"car_error_{status}"), text)
