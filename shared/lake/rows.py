"""Cosmos documents to lake rows, one function per table (the columns are shared/lake/schema.py's).

Documents come from our own writers, but a row builder still checks each value's type: a value of the wrong type
(a document written before a field changed meaning, a hand edit) becomes null instead of failing the export.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any, Final

from shared.lake.schema import BOOL, DOUBLE, INT32, INT64, SIGNALS, STRING, TIMESTAMP

Row = dict[str, Any]
TERMINAL: Final = ("succeeded", "failed", "expired", "rejected", "cancelled")
TRANSITIONS: Final = ("sent", "queued", "delivered", "succeeded", "confirmed", "failed")


def parse_time(value: object) -> dt.datetime | None:
    """An ISO 8601 time as our documents store it (`2026-11-21T08:00:00.000Z`), as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(dt.UTC)


def typed(value: object, kind: str) -> Any:
    """The value if it fits the column type, else None (bool is not a number; a number is not a bool)."""
    if value is None:
        return None
    if kind == DOUBLE:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind in (INT32, INT64):
        return value if type(value) is int else None
    if kind == BOOL:
        return value if type(value) is bool else None
    if kind == STRING:
        return value if isinstance(value, str) else None
    if kind == TIMESTAMP:
        return parse_time(value)
    raise ValueError(kind)


def _meta(vehicle_id: str, fleet: str | None) -> Row:
    return {"vehicle_id": vehicle_id, "fleet": fleet}


def signal_value(path: str, kind: str, value: object) -> Any:
    if path == "Vehicle.Diagnostics.DTCList":
        return len(value) if isinstance(value, list) else None
    return typed(value, kind)


def sample_rows(vehicle_id: str, fleet: str | None, entries: list[Any]) -> Iterator[Row]:
    """History entries (a chunk's `messages` or `ingest.pending`): one row per sample."""
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        seq, enqueued = entry.get("seq"), parse_time(entry.get("enqueuedTime"))
        if type(seq) is not int or enqueued is None:
            continue
        epoch = entry.get("epoch")
        for index, sample in enumerate(entry.get("samples") or ()):
            ts = parse_time(sample.get("ts")) if isinstance(sample, Mapping) else None
            if ts is None:
                continue
            signals = sample.get("signals")
            signals = signals if isinstance(signals, Mapping) else {}
            row = _meta(vehicle_id, fleet)
            row.update(
                ts=ts,
                seq=seq,
                epoch=epoch if isinstance(epoch, str) else "",
                sample=index,
                enqueued_time=enqueued,
            )
            for signal in SIGNALS:
                row[signal.column] = signal_value(signal.path, signal.type, signals.get(signal.path))
            yield row


def _position(doc: Mapping[str, Any], field: str) -> tuple[float | None, float | None]:
    position = doc.get(field)
    if not isinstance(position, Mapping):
        return None, None
    return typed(position.get("lat"), DOUBLE), typed(position.get("lon"), DOUBLE)


def trip_row(doc: Mapping[str, Any], fleet: str | None) -> Row | None:
    start = parse_time(doc.get("startTs"))
    if start is None or not isinstance(doc.get("id"), str):
        return None
    start_lat, start_lon = _position(doc, "startPosition")
    end_lat, end_lon = _position(doc, "endPosition")
    row = {"trip_id": doc["id"], **_meta(str(doc["vehicleId"]), fleet)}
    row.update(
        status=typed(doc.get("status"), STRING) or "open",
        start_ts=start,
        end_ts=parse_time(doc.get("endTs")),
        last_ts=parse_time(doc.get("lastTs")),
        duration_s=typed(doc.get("durationS"), DOUBLE),
        distance_m=typed(doc.get("distanceM"), DOUBLE),
        distance_source=typed(doc.get("distanceSource"), STRING),
        gps_distance_m=typed(doc.get("gpsDistanceM"), DOUBLE),
        max_speed_kmh=typed(doc.get("maxSpeedKmh"), DOUBLE),
        mean_speed_kmh=typed(doc.get("meanSpeedKmh"), DOUBLE),
        start_odometer_m=typed(doc.get("startOdometerM"), DOUBLE),
        end_odometer_m=typed(doc.get("lastOdometerM"), DOUBLE),
        start_soc_percent=typed(doc.get("startSocPercent"), DOUBLE),
        end_soc_percent=typed(doc.get("lastSocPercent"), DOUBLE),
        energy_used_percent=typed(doc.get("energyUsedPercent"), DOUBLE),
        start_latitude=start_lat,
        start_longitude=start_lon,
        end_latitude=end_lat,
        end_longitude=end_lon,
    )
    return row


def alert_row(doc: Mapping[str, Any], fleet: str | None) -> Row | None:
    raised = parse_time(doc.get("raisedAt"))
    if raised is None or not isinstance(doc.get("id"), str) or not isinstance(doc.get("kind"), str):
        return None
    row = {"alert_id": doc["id"], **_meta(str(doc["vehicleId"]), fleet)}
    row.update(
        kind=doc["kind"],
        code=typed(doc.get("code"), STRING),
        status=typed(doc.get("status"), STRING) or "active",
        raised_at=raised,
        cleared_at=parse_time(doc.get("clearedAt")),
        value=typed(doc.get("value"), DOUBLE),
        threshold=typed(doc.get("threshold"), DOUBLE),
        geofence_id=typed(doc.get("geofenceId"), STRING),
    )
    return row


def command_row(doc: Mapping[str, Any], fleet: str | None) -> Row | None:
    created, updated = parse_time(doc.get("createdAt")), parse_time(doc.get("updatedAt"))
    if created is None or doc.get("kind") != "command" or not isinstance(doc.get("id"), str):
        return None
    first: dict[str, dt.datetime] = {}
    for transition in doc.get("transitions") or ():
        if isinstance(transition, Mapping) and isinstance(transition.get("status"), str):
            at = parse_time(transition.get("at"))
            if at is not None:
                first.setdefault(transition["status"], at)
    ended = [first[status] for status in TERMINAL if status in first]
    issued = doc.get("issuedBy")
    delivery = doc.get("delivery")
    row = {"command_id": doc["id"], **_meta(str(doc["vehicleId"]), fleet)}
    row.update(
        name=typed(doc.get("name"), STRING) or "",
        status=typed(doc.get("status"), STRING) or "",
        reason=typed(doc.get("reason"), STRING),
        issued_by_role=typed(issued.get("role"), STRING) if isinstance(issued, Mapping) else None,
        delivery=typed(delivery.get("via"), STRING) if isinstance(delivery, Mapping) else None,
        created_at=created,
        updated_at=updated or created,
        ended_at=min(ended) if ended else None,
    )
    for status in TRANSITIONS:
        row[f"{status}_at"] = first.get(status)
    return row


def geofence_event_row(doc: Mapping[str, Any], fleet: str | None) -> Row | None:
    ts = parse_time(doc.get("ts"))
    if ts is None or not isinstance(doc.get("id"), str) or not isinstance(doc.get("event"), str):
        return None
    row = {"event_id": doc["id"], **_meta(str(doc["vehicleId"]), fleet)}
    row.update(
        event=doc["event"],
        ts=ts,
        geofence_id=typed(doc.get("geofenceId"), STRING),
        scope=typed(doc.get("scope"), STRING),
        geofence_name=typed(doc.get("name"), STRING),
        retracted=doc.get("retracted") is True,
    )
    return row


def usage_row(doc: Mapping[str, Any], fleet: str | None) -> Row | None:
    ts = parse_time(doc.get("createdAt"))
    reply = doc.get("reply")
    if ts is None or not isinstance(doc.get("id"), str) or not isinstance(reply, Mapping):
        return None
    error = reply.get("error")
    row = {"request_id": doc["id"], **_meta(str(doc["vehicleId"]), fleet)}
    row.update(
        ts=ts,
        action=typed(doc.get("action"), STRING) or "",
        status=typed(reply.get("status"), STRING) or "",
        error_code=typed(error.get("code"), STRING) if isinstance(error, Mapping) else None,
        teams_link=isinstance(reply.get("joinWebUrl"), str) and bool(reply.get("joinWebUrl")),
    )
    return row
