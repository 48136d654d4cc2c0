"""Commands in every open status at the edges of the sweep's times, for the unit tests (the memory store) and the
local Cosmos tests (the sweep's query itself): which ones the sweep ends or dispatches again, and which it must not
even read (a `queued` or `delivered` command may wait for a sleeping car for its whole time to live)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from shared.device_messages import canonical_time

# (status, seconds since its last change, seconds until it expires, what the sweep does with it: None = nothing)
SWEEP_CASES: Final[tuple[tuple[str, float, float, str | None], ...]] = (
    ("queued", 600, 3600, None),  # waits for the sleeping car
    ("queued", 600, -1, "expired"),
    ("delivered", 600, 3600, None),  # the car has it and may still report
    ("delivered", 600, -100, None),
    ("delivered", 600, -301, "failed"),  # no_outcome
    ("sent", 30, 3600, None),  # its call may still be answered
    ("sent", 30, -10, None),
    ("sent", 86, 3600, "failed"),  # no_response
    ("accepted", 30, 3600, None),  # its dispatch is on its way
    ("accepted", 100, 3600, None),
    ("accepted", 121, 3600, "redispatched"),
    ("accepted", 5, -1, "expired"),
    ("succeeded", 600, -1000, None),
)


def sweep_case(vehicle_id: str, n: int, now: dt.datetime) -> dict[str, Any]:
    """The command document of SWEEP_CASES[n] as it stands at `now`."""
    status, idle, expires_in = SWEEP_CASES[n][:3]
    updated = now - dt.timedelta(seconds=idle)
    via = {"accepted": None, "sent": "method"}.get(status, "c2d")
    delivery = None if via is None else {"via": via, "at": canonical_time(updated)}
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "vehicleId": vehicle_id,
        "kind": "command",
        "name": "lock",
        "params": {},
        "status": status,
        "reason": None,
        "transitions": [{"status": status, "at": canonical_time(updated)}],
        "createdAt": canonical_time(updated),
        "updatedAt": canonical_time(updated),
        "expiresAt": canonical_time(now + dt.timedelta(seconds=expires_in)),
        "issuedBy": {"id": "op-1", "role": "fleet_operator", "app": False},
        "delivery": delivery,
    }
