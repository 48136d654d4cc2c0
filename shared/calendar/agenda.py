"""The car's agenda: the next events, small enough for the device twin, sent only when it changed.

Desired properties hold at most 32 KB per twin and other features share them, so the agenda keeps under
AGENDA_MAX_BYTES (8 KB by default) and says `truncated: true` when events were left out. A twin patch merges
objects key by key, so every key of `agenda` is always written (an absent key would keep its old value);
`events` is an array and is replaced whole, and IoT Hub refuses a null inside an array: an event's null fields
(`location`, `joinUrl`, a travel figure's `reachable`) are left out, and the car reads a missing one as null.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Any, Final

import orjson

from shared.device_messages import canonical_time
from shared.errors import DeviceNotFoundError
from shared.iothub.gateway import IoTHubGateway
from shared.iothub.twin_values import without_nulls_in_arrays

SUBJECT_MAX: Final = 120
# IoT Hub keeps a twin string value up to 4 KB: a longer one gets the whole agenda patch refused (and every sync of
# the driver after it). A place is cut (a geocoder needs far less); a join link is left out rather than cut.
LOCATION_MAX: Final = 256
JOIN_URL_MAX: Final = 2048


def agenda_events(events: Iterable[dict[str, Any]], now: dt.datetime, horizon: dt.timedelta) -> list[dict[str, Any]]:
    """Events (calendar documents) that have not ended and start within the horizon, soonest first."""
    start_bound, end_bound = canonical_time(now), canonical_time(now + horizon)
    chosen = [
        e
        for e in events
        if not e.get("isCancelled")
        and e.get("start")
        and e.get("end")
        and e["end"] > start_bound
        and e["start"] < end_bound
    ]
    chosen.sort(key=lambda e: (e["start"], e["end"], e["eventId"]))
    out = []
    for e in chosen:
        item: dict[str, Any] = {
            "id": e["eventId"],
            "subject": (e.get("subject") or "")[:SUBJECT_MAX],
            "start": e["start"],
            "end": e["end"],
            "location": location[:LOCATION_MAX] if isinstance(location := e.get("location"), str) else None,
            "isOnlineMeeting": bool(e.get("isOnlineMeeting")),
            "joinUrl": url if isinstance(url := e.get("joinUrl"), str) and len(url) <= JOIN_URL_MAX else None,
        }
        if e.get("coordinates"):
            item["coordinates"] = e["coordinates"]
        if e.get("isAllDay"):
            item["isAllDay"] = True  # a day, not a time to be somewhere by: no travel figures (shared/travel)
        out.append(item)
    return out


def build_agenda(items: list[dict[str, Any]], synced_at: str, max_bytes: int) -> tuple[dict[str, Any], str]:
    """The `agenda` desired property and the hash of its content (`syncedAt` excluded: time alone is no change).

    Drops events from the end until the serialised agenda fits `max_bytes` (subjects are cut to
    SUBJECT_MAX characters first, so one long subject cannot push every other event out).
    """
    kept = without_nulls_in_arrays(list(items))  # the events are an array in the twin: a missing field is null
    truncated = False
    while True:
        agenda = {"events": kept, "count": len(kept), "truncated": truncated, "syncedAt": synced_at}
        size = len(orjson.dumps(agenda))
        if size <= max_bytes:
            break
        truncated = True
        if not kept:
            break
        kept = kept[:-1]
    content = orjson.dumps({k: v for k, v in agenda.items() if k != "syncedAt"}, option=orjson.OPT_SORT_KEYS)
    return agenda, hashlib.sha256(content).hexdigest()[:32]


async def clear_module_agenda(gateway: IoTHubGateway, vehicle_id: str) -> None:
    """The car's Edge module keeps a copy of the agenda in its twin (for the driver offline): when the agenda goes
    from the car's twin (a driver unlinked, signed out, erased, consent withdrawn) it goes from there too. A car
    without the module (404) has nothing to clear."""
    from shared.collection.service import edge_module_id

    try:
        await gateway.patch_module_desired(vehicle_id, edge_module_id(), {"agenda": None})
    except DeviceNotFoundError:
        return
