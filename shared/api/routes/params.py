"""Path parameter types shared by the routers (the same constraints as the models that validate bodies)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Path

from shared.api import models as am
from shared.fleet import models as m

VehicleId = Annotated[m.VehicleId, Path()]
AlertId = Annotated[m.AlertId, Path()]
UserId = Annotated[uuid.UUID, Path(description="The driver's Entra object id (a GUID).")]
BrandId = Annotated[am.BrandId, Path()]
FleetId = Annotated[am.FleetId, Path()]
PrincipalId = Annotated[uuid.UUID, Path(description="The member's Entra object id (a GUID).")]
MembershipId = Annotated[am.MembershipId, Path()]
InvitationId = Annotated[am.InvitationId, Path()]
CommandId = Annotated[uuid.UUID, Path(description="A command id as POST /vehicles/{vehicleId}/commands returned it.")]
