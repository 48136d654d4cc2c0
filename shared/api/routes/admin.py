"""Contained messages (dead letters and parked messages): list them, redrive them after a fix
(docs/architecture.md, "Failure modes")."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from shared.api import models as am
from shared.api import runtime
from shared.api.guard import guard
from shared.auth.access import Access
from shared.auth.policy import Permission, requires
from shared.errors import InvalidRequestError
from shared.parking.admin import list_records, redrive_records
from shared.parking.redrive import RedriveError
from shared.stores.base import DeadLetterSink
from shared.telemetry.ingest import TelemetryIngestor

log = logging.getLogger(__name__)
router = APIRouter(prefix="/admin", tags=["admin"])
Admin = Annotated[Access, guard(requires(Permission.MANAGE_PARKED, on="platform"))]
Letters = Annotated[DeadLetterSink, Depends(runtime.dead_letters)]


@router.get("/parked", response_model=am.ParkedPage, summary="List contained messages")
async def list_parked(access: Admin, query: Annotated[am.ParkedQuery, Query()], letters: Letters) -> Any:
    try:
        return await list_records({k: str(v) for k, v in query.model_dump(exclude_none=True).items()}, letters)
    except RedriveError as exc:
        raise InvalidRequestError(str(exc)) from None


@router.post("/parked/redrive", response_model=am.RedriveReport, summary="Redrive contained messages")
async def redrive_parked(
    access: Admin,
    body: am.Redrive,
    letters: Letters,
    ingestor: Annotated[TelemetryIngestor, Depends(runtime.ingestor)],
) -> Any:
    """Feeds each record back through ingestion (idempotent: a message stored before is not stored twice);
    `dryRun` only counts."""
    try:
        result = await redrive_records(body.model_dump_json(exclude_none=True).encode(), letters, ingestor)
    except RedriveError as exc:
        raise InvalidRequestError(str(exc)) from None
    log.info("redrive %s", result)
    return result
