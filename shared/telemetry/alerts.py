"""Alerts: active diagnostic trouble codes, low traction battery and low fuel, and speeding over the fleet's limit.

One alert document per vehicle, kind and occurrence; its id is vehicle + kind + the event time it was raised,
so a recomputation writes the same document. The set of active alerts lives in the vehicle document
(`alerts`), so a sample only costs a write when an alert opens or clears. Level alerts use a small hysteresis
(`HYSTERESIS_PERCENT`) so a value hovering at the threshold does not open and clear alerts on every sample.

Each alert opened is a document, so a car flooding DTCs must not write hundreds: a message may open at most
`MAX_ALERTS_OPENED_PER_MESSAGE` alerts and a fold (one vehicle write) `MAX_ALERTS_OPENED_PER_FOLD`. An alert
beyond the cap is counted (`ingest.suppressed.alerts`), not opened; if its condition lasts, it opens with a
later message. Clears are always allowed: each clears an alert that was opened, so they are bounded too.

Speeding: over the fleet's limit for its seconds, in a run of samples none more than SPEEDING_MAX_GAP_SECONDS
apart; an open alert clears under the limit, or once the fleet has no limit (`end_speeding`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

from shared.device_messages import compact_time, safe_id
from shared.geofences.index import SpeedLimit
from shared.settings import IngestionSettings
from shared.telemetry import signals as S
from shared.telemetry.documents import AlertDocument, IngestState, SignalValue

HYSTERESIS_PERCENT: Final = 2.0
SPEED_HYSTERESIS_KMH: Final = 5.0  # a speeding alert clears this far below the limit
SPEEDING: Final = "speeding"
# A run over the speed limit continues across samples at most this far apart: beyond it the car may have slowed
# down unseen, so the run starts again. Twice the collection policy's default heartbeat (60 s): a car keeping a
# steady speed still sends it that often.
SPEEDING_MAX_GAP_SECONDS: Final = 120.0
LIMIT_REMOVED: Final = "limit_removed"  # clearReason of a speeding alert ended because the fleet has no limit now
MAX_ALERTS_OPENED_PER_MESSAGE: Final = 16
MAX_ALERTS_OPENED_PER_FOLD: Final = 64

_LEVELS: Final = (
    ("low_battery", S.STATE_OF_CHARGE, "low_battery_percent"),
    ("low_fuel", S.FUEL_LEVEL, "low_fuel_percent"),
)
# Kinds about the car's condition (a trouble code, a low battery or tank), not about how or where it was driven
# (speeding, geofences, curfews): one still on when a driver's time began is the car's state in their time, so they
# read it whenever it was raised (`is_condition_in`; docs/privacy.md, "A driver reads their own time").
CONDITION_KINDS: Final = frozenset({"dtc", *(kind for kind, _, _ in _LEVELS)})


def is_condition_in(alert: Mapping[str, Any], since: str) -> bool:
    """An alert about the car's condition active at some time from `since` on: still active, or cleared since. The
    car's state in a driver's time, theirs whenever it was raised, as the car's signals are."""
    if alert.get("kind") not in CONDITION_KINDS:
        return False
    cleared = alert.get("clearedAt")
    return alert.get("status") == "active" or (isinstance(cleared, str) and cleared >= since)


def _raise(vehicle_id: str, key: str, ts: str, kind: str) -> AlertDocument:
    """A new active alert; the caller adds what its kind carries (`code`, or `value` and `threshold`)."""
    return {
        "id": f"{safe_id(vehicle_id)}:{key}:{compact_time(ts)}",
        "vehicleId": vehicle_id,
        "type": "alert",
        "key": key,
        "status": "active",
        "raisedAt": ts,
        "clearedAt": None,
        "kind": kind,
    }


def _clear(alert: AlertDocument, ts: str) -> AlertDocument:
    return {**alert, "status": "cleared", "clearedAt": ts}


def step_alerts(
    vehicle_id: str,
    active: dict[str, AlertDocument],
    ts: str,
    sample: dict[str, SignalValue],
    cfg: IngestionSettings,
    room: int = MAX_ALERTS_OPENED_PER_MESSAGE,
) -> tuple[list[AlertDocument], int, int] | None:
    """Apply one sample (event-time order) to the active alerts in place, opening at most `room` alerts.

    Returns the alert documents to write, how many alerts were opened and how many were not (over `room`); None
    when the sample changed nothing (most samples: the caller then has nothing to look at).
    """
    out: list[AlertDocument] = []
    opened = skipped = 0
    codes = sample.get(S.DTC_LIST)
    if codes is not None and not codes:  # no codes (most samples): clear the DTC alerts open, if any
        for key in active:  # e.g. a car with geofence alerts open: looked at without building a list
            if key.startswith("dtc:"):
                for dtc in [k for k in active if k.startswith("dtc:")]:
                    out.append(_clear(active.pop(dtc), ts))
                break
    elif codes is not None:
        present = set(codes)
        for key in [k for k in active if k.startswith("dtc:") and k[4:] not in present]:
            out.append(_clear(active.pop(key), ts))
        for code in sorted(present):
            key = f"dtc:{code}"
            if key not in active:
                if opened >= room:
                    skipped += 1
                    continue
                alert = active[key] = _raise(vehicle_id, key, ts, "dtc")
                alert["code"] = code
                out.append(alert)
                opened += 1
    for kind, path, setting in _LEVELS:
        value = sample.get(path)
        if value is None:
            continue
        threshold: float = getattr(cfg, setting)
        if kind in active:
            if value >= threshold + HYSTERESIS_PERCENT:
                cleared = _clear(active.pop(kind), ts)
                cleared["clearValue"] = value
                out.append(cleared)
        elif value < threshold:
            if opened >= room:
                skipped += 1
                continue
            alert = active[kind] = _raise(vehicle_id, kind, ts, kind)
            alert["value"], alert["threshold"] = value, threshold
            out.append(alert)
            opened += 1
    return (out, opened, skipped) if out or skipped else None


def step_speed(
    vehicle_id: str, active: dict[str, AlertDocument], ingest: IngestState, ts: str, speed: float, limit: SpeedLimit
) -> AlertDocument | None:
    """The fleet's speed alert for one sample (event-time order): raised once the car has been over `limit.kmh`
    for `limit.seconds` (`ingest.speedingSince` holds when the run started, `speedingLast` its newest sample; a
    sample more than SPEEDING_MAX_GAP_SECONDS after that starts a new run), cleared once it is
    SPEED_HYSTERESIS_KMH under the limit. Returns the document to write, if any."""
    alert = active.get(SPEEDING)
    if alert is not None:
        if speed <= limit.kmh - SPEED_HYSTERESIS_KMH:
            ingest.pop("speedingSince", None)
            cleared = _clear(active.pop(SPEEDING), ts)
            cleared["clearValue"] = float(speed)  # float as declared, whole or not
            return cleared
        return None
    if speed <= limit.kmh:
        ingest.pop("speedingSince", None)
        ingest.pop("speedingLast", None)
        return None
    since = ingest.get("speedingSince")
    # a run a document written before `speedingLast` holds: measured from its start (at worst it starts again)
    last = ingest.get("speedingLast", since)
    if since is None or last is None or _span(last, ts) > SPEEDING_MAX_GAP_SECONDS:
        since = ingest["speedingSince"] = ts
    if _span(since, ts) < limit.seconds:
        ingest["speedingLast"] = ts
        return None
    ingest.pop("speedingLast", None)  # the alert is open: its run needs no gap check until it clears
    alert = active[SPEEDING] = _raise(vehicle_id, SPEEDING, ts, SPEEDING)
    alert["value"], alert["threshold"] = float(speed), limit.kmh
    return alert


def end_speeding(active: dict[str, AlertDocument], ingest: IngestState, ts: str) -> AlertDocument | None:
    """The fleet has no speed limit (any more): a run over the old one is forgotten, and a speeding alert still open
    is cleared at `ts` (clearReason LIMIT_REMOVED: nothing would clear it otherwise). Returns the document to write,
    if any."""
    ingest.pop("speedingSince", None)
    ingest.pop("speedingLast", None)
    alert = active.pop(SPEEDING, None)
    if alert is None:
        return None
    cleared = _clear(alert, ts)
    cleared["clearReason"] = LIMIT_REMOVED
    return cleared


def _span(start: str, end: str) -> float:
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()
