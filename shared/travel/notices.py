"""The proactive "you will be late unless you leave now" notice to the car (a C2D message).

Due for the next meeting the planner has figures for, when it is late (`lateByMinutes` > 0) or leaveBy is at
most 5 minutes away; once per meeting and 5-minute lateness bucket: the key says which, so a rerun, a
redelivered job or a figure that wobbles within the bucket sends nothing more, and a driver who falls further
behind hears again.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from shared.device_messages import canonical_time
from shared.travel.budget import parse_utc

BUCKET_MINUTES: Final = 5
LEAVE_SOON: Final = dt.timedelta(minutes=5)
NOTICE_TYPE: Final = "travel.late"
NOTICE_PROPERTIES: Final = {"type": "notice"}  # the C2D message's properties (docs/messages.md)


@dataclass(frozen=True, slots=True)
class Notice:
    key: str  # "<eventId>|<bucket>": remember it once sent (record_sent) so it is never sent again
    event_id: str
    payload: dict[str, Any]  # the C2D message body


def lateness_bucket(late_by_minutes: int) -> int:
    """0: on time but leaveBy is near; 1: 1-5 minutes late; 2: 6-10; ..."""
    return math.ceil(late_by_minutes / BUCKET_MINUTES) if late_by_minutes > 0 else 0


def late_notices(
    agenda_with_travel: Sequence[Mapping[str, Any]],
    already_sent: Collection[str],
    now: dt.datetime | None = None,
) -> list[Notice]:
    """The notice due now, if any (a list: empty or one). `now` defaults to the figures' computedAt."""
    for item in agenda_with_travel:
        travel = item.get("travel")
        if not isinstance(travel, Mapping) or "leaveBy" not in travel or not isinstance(item.get("id"), str):
            continue
        at = now or parse_utc(str(travel["computedAt"]))
        if str(item.get("start")) <= canonical_time(at):
            continue  # started (or over): a notice would only say, every bucket, how late the driver now is
        late = int(travel.get("lateByMinutes") or 0)
        leave_soon = parse_utc(str(travel["leaveBy"])) - at <= LEAVE_SOON
        if late <= 0 and not leave_soon:
            return []  # the next meeting is fine: a later one is the next run's concern
        key = f"{item['id']}|{lateness_bucket(late)}"
        if key in already_sent:
            return []
        payload: dict[str, Any] = {
            "v": 1,
            "type": NOTICE_TYPE,
            "eventId": item["id"],
            "subject": item.get("subject") or "",
            "lateByMinutes": late,
            "leaveBy": travel["leaveBy"],
            "eta": travel["eta"],
        }
        if item.get("joinUrl"):
            payload["joinUrl"] = item["joinUrl"]
        return [Notice(key, item["id"], payload)]
    return []


def record_sent(state: dict[str, Any], notices: Sequence[Notice]) -> dict[str, Any]:
    """The planner state with these notices remembered as sent (call after the C2D send succeeded)."""
    sent = [k for k in state.get("notices", []) if isinstance(k, str)]
    sent.extend(n.key for n in notices if n.key not in sent)
    return {**state, "notices": sent}
