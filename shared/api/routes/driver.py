"""The driver: their agenda and meetings, their consent, linking (by themselves or through an invitation),
unlinking and erasure."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from shared.api import models as am
from shared.api import runtime
from shared.api.guard import guard
from shared.api.routes.params import InvitationId, UserId, VehicleId
from shared.api.services import TenancyService
from shared.auth.access import Access
from shared.auth.policy import Permission, requires
from shared.fleet import models as m
from shared.fleet.service import FleetService

router = APIRouter(tags=["driver"])
Fleet = Annotated[FleetService, Depends(runtime.fleet_service)]
Tenancy = Annotated[TenancyService, Depends(runtime.tenancy)]
DriverData = Annotated[Access, guard(requires(Permission.READ_DRIVER_DATA, on="vehicle"))]


@router.get("/vehicles/{vehicleId}/agenda", response_model=m.Agenda, summary="The driver's agenda as the car sees it")
async def get_agenda(access: DriverData, vehicleId: VehicleId, fleet: Fleet) -> Any:
    return await fleet.agenda(vehicleId)


@router.get(
    "/vehicles/{vehicleId}/meetings", response_model=m.MeetingPage, summary="Teams meetings created for the driver"
)
async def list_meetings(
    access: DriverData, vehicleId: VehicleId, query: Annotated[m.PageQuery, Query()], fleet: Fleet
) -> Any:
    return await fleet.meetings(vehicleId, query.limit, query.continuationToken)


@router.patch(
    "/vehicles/{vehicleId}/consent", response_model=m.ConsentResult, summary="Change the driver's privacy choices",
    tags=["privacy"],
)  # fmt: skip
async def change_consent(
    access: Annotated[Access, guard(requires(Permission.CHANGE_CONSENT, on="vehicle"))],
    vehicleId: VehicleId,
    body: m.ConsentChange,
    fleet: Fleet,
) -> Any:
    """location=false: positions are dropped at ingestion and removed from the stored state. calendar=false: no
    calendar sync, Graph subscription removed, agenda cleared from the car."""
    return await fleet.change_consent(vehicleId, body.location, body.calendar)


@router.post(
    "/vehicles/{vehicleId}/driver/invitations", status_code=201, response_model=am.Invitation,
    summary="Invite the car's driver to link themselves",
)  # fmt: skip
async def invite_driver(
    access: Annotated[Access, guard(requires(Permission.INVITE_DRIVER, on="vehicle"))],
    vehicleId: VehicleId,
    body: am.DriverInvitation,
    tenancy: Tenancy,
) -> Any:
    """An operator can no longer point the calendar sync at a mailbox: the invited driver accepts with their own
    sign-in, which links their calendar with their consent."""
    return await tenancy.invite_driver(access, vehicleId, body.invitee, body.inviteeTenant)


@router.post(
    "/invitations/{invitationId}/accept", response_model=am.DriverLinkResult, summary="Accept an invitation to drive"
)
async def accept_invitation(
    access: Annotated[Access, guard(requires(Permission.ACCEPT_INVITATION, on="user"))],
    invitationId: InvitationId,
    body: am.SelfLink,
    tenancy: Tenancy,
) -> Any:
    """The invitee (the caller) becomes the car's driver: a Driver membership and the driver link."""
    return await tenancy.accept_invitation(
        access, invitationId, body.timeZone, body.consent.calendar, body.consent.location
    )


@router.put("/vehicles/{vehicleId}/driver", response_model=am.DriverLinkResult, summary="Link yourself as the driver")
async def link_driver(
    access: Annotated[Access, guard(requires(Permission.LINK_SELF, on="vehicle"))],
    vehicleId: VehicleId,
    body: am.SelfLink,
    tenancy: Tenancy,
) -> Any:
    """The signed-in driver links their own calendar to a car they drive (who they are comes from the token)."""
    return await tenancy.link_self(access, vehicleId, body.timeZone, body.consent.calendar, body.consent.location)


@router.delete("/vehicles/{vehicleId}/driver", status_code=204, summary="Unlink the car's driver")
async def unlink_driver(
    access: Annotated[Access, guard(requires(Permission.UNLINK_DRIVER, on="vehicle"))],
    vehicleId: VehicleId,
    tenancy: Tenancy,
) -> None:
    await tenancy.unlink(access, vehicleId)


@router.delete("/drivers/{userId}", response_model=m.ErasureReceipt, summary="Erase a driver", tags=["privacy"])
async def delete_driver(
    access: Annotated[Access, guard(requires(Permission.ERASE_DRIVER, on="driver"))], userId: UserId, fleet: Fleet
) -> Any:
    """Right to erasure: the driver's calendar data, Teams meetings (deleted in Graph too) and Graph
    subscription; unlinked from every car; their object id leaves the audit log. Idempotent; answers the
    receipt of what this call deleted where."""
    return await fleet.erase_driver(str(userId))
