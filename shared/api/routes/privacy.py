"""Privacy rights over the API: a driver's export (access and portability).

The archive (shared/privacy/export.py) is written as it is read, so a long history is never held whole by the
application. Behind Azure Functions' ASGI bridge (func.AsgiFunctionApp) the host still collects the whole response
before sending it; docs/privacy.md says what that means for very long histories.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from shared.api import runtime
from shared.api.guard import guard
from shared.api.routes.params import UserId
from shared.auth.access import Access
from shared.auth.policy import Permission, requires
from shared.fleet.service import FleetService

router = APIRouter(tags=["privacy"])
Fleet = Annotated[FleetService, Depends(runtime.fleet_service)]
MEDIA_TYPE = "application/x-ndjson"
ARCHIVE_TEXT = "The archive: NDJSON, a manifest line, one line per record, a summary line (docs/privacy.md)."
ARCHIVE: dict[int | str, dict[str, Any]] = {
    200: {"description": ARCHIVE_TEXT, "content": {MEDIA_TYPE: {"schema": {"type": "string"}}}}
}


@router.get(
    "/drivers/{userId}/export", response_class=StreamingResponse, responses=ARCHIVE,
    summary="Everything stored about a driver and their car",
)  # fmt: skip
async def export_driver(
    access: Annotated[Access, guard(requires(Permission.EXPORT_DRIVER_DATA, on="driver"))],
    userId: UserId,
    fleet: Fleet,
) -> Any:
    """The driver themselves, or an admin of a brand they drive for (a request made to the brand)."""
    from shared.privacy.categories import default_categories
    from shared.privacy.export import DriverExport

    user_id = str(userId)
    archive = DriverExport(fleet.store, default_categories().category_of, fleet.clock)
    filename = f"driver-export-{user_id}.ndjson"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"}
    return StreamingResponse(archive.lines(user_id), media_type=MEDIA_TYPE, headers=headers)
