"""The admin API's view of contained messages: parse what the caller asked, list or redrive, return JSON-ready
dicts. Bad input raises RedriveError (the HTTP layer answers 400); the trigger only maps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson

from shared.parking.redrive import RedriveError, RedriveFilter, list_contained, redrive

if TYPE_CHECKING:
    from shared.stores.base import DeadLetterSink
    from shared.telemetry.ingest import TelemetryIngestor

FIELDS: Final = ("stream", "vehicleId", "reason", "limit")
MAX_TEXT: Final = 256


def filter_from(values: Mapping[str, Any]) -> RedriveFilter:
    """A RedriveFilter from query parameters or a JSON body (`stream`, `vehicleId`, `reason`, `limit`)."""
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise RedriveError(f"unknown field(s): {', '.join(name[:32] for name in unknown[:5])}")
    texts: dict[str, str | None] = {}
    for name in ("stream", "vehicleId", "reason"):
        value = values.get(name)
        if value is not None and (not isinstance(value, str) or not value or len(value) > MAX_TEXT):
            raise RedriveError(f"{name} must be a non-empty string of at most {MAX_TEXT} characters")
        texts[name] = value
    raw_limit = values.get("limit", 100)
    try:
        limit = int(raw_limit)
    except (TypeError, ValueError):
        raise RedriveError("limit must be an integer") from None
    return RedriveFilter(texts["stream"] or "telemetry", texts["vehicleId"], texts["reason"], limit)


async def list_records(query: Mapping[str, str], letters: DeadLetterSink) -> dict[str, Any]:
    which = filter_from(query)
    entries = await list_contained(letters, which)
    items = [{"name": e.name, "vehicleId": e.device_id, "reason": e.reason, "bytes": e.size} for e in entries]
    return {"stream": which.stream, "count": len(items), "items": items}


async def redrive_records(body: bytes, letters: DeadLetterSink, ingestor: TelemetryIngestor) -> dict[str, Any]:
    try:
        values = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        raise RedriveError("the body is not JSON") from None
    if not isinstance(values, dict):
        raise RedriveError("the body must be a JSON object")
    dry_run = values.pop("dryRun", False)
    if not isinstance(dry_run, bool):
        raise RedriveError("dryRun must be a boolean")
    which = filter_from(values)
    report = await redrive(letters, ingestor, which, dry_run=dry_run)
    return {"stream": which.stream, "dryRun": dry_run, **report.as_dict()}
