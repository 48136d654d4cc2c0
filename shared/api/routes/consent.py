"""Consent records per data category: the car's current state and history, the driver's own decisions, and
decisions an operator records for the driver on a documented basis (shared/privacy/consent.py).

The older `PATCH /vehicles/{vehicleId}/consent` (two flags, shared/api/routes/driver.py) writes the same records.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from shared.api import consent_models as cm
from shared.api import runtime
from shared.api.guard import guard
from shared.api.routes.params import VehicleId
from shared.auth.access import Access
from shared.auth.policy import Permission, requires
from shared.fleet.service import FleetService
from shared.privacy.consent import Actor, decision

router = APIRouter(tags=["privacy"])
Fleet = Annotated[FleetService, Depends(runtime.fleet_service)]


@router.get(
    "/vehicles/{vehicleId}/consent", response_model=cm.ConsentState,
    summary="The car's consent: each data category's state, and the driver's records",
)  # fmt: skip
async def get_consent(
    access: Annotated[Access, guard(requires(Permission.READ_CONSENT, on="vehicle"))],
    vehicleId: VehicleId,
    fleet: Fleet,
) -> Any:
    """A category with a record of the car's current driver follows their latest; any other (or every one of a
    car without a driver) follows the brand's legal basis: `contract` collected, `consent` not."""
    return await fleet.consents.state(vehicleId)


@router.put(
    "/vehicles/{vehicleId}/consent", response_model=cm.ConsentRecorded,
    summary="Record the driver's consent decision",
)  # fmt: skip
async def record_consent(
    access: Annotated[Access, guard(requires(Permission.CHANGE_CONSENT, on="vehicle"))],
    vehicleId: VehicleId,
    body: cm.ConsentDecision,
    fleet: Fleet,
) -> Any:
    """The signed-in driver grants or withdraws categories; each change is an append-only record (who, when,
    channel, terms). Idempotent: a decision the records already state appends nothing. A withdrawal takes effect
    at once: ingestion drops the category and what the car's document buffers of it is removed."""
    p = access.principal
    actor = Actor("driver", p.object_id, p.tenant_id)
    return await fleet.consents.record(vehicleId, decision(body.categories, body.channel, body.termsVersion, actor))


@router.post(
    "/vehicles/{vehicleId}/consent/records", response_model=cm.ConsentRecorded,
    summary="Record a driver's consent decision on a documented basis",
)  # fmt: skip
async def record_consent_on_basis(
    access: Annotated[Access, guard(requires(Permission.RECORD_CONSENT, on="vehicle"))],
    vehicleId: VehicleId,
    body: cm.OperatorConsentDecision,
    fleet: Fleet,
) -> Any:
    """An operator records the car's driver's decision they hold in writing (a signed form, a recorded call):
    `basis` says what documents it. The record names the operator, the driver sees it in the history and on
    the car, and every attempt is audited. Idempotent as the driver's own."""
    p = access.principal
    actor = Actor("operator", p.object_id, p.tenant_id, basis=body.basis.strip())
    return await fleet.consents.record(vehicleId, decision(body.categories, body.channel, body.termsVersion, actor))
