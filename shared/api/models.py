"""Models of the identity routes (the caller, brands, fleets, memberships, invitations, audit) and the driver's
self link. The car and history models stay in shared/fleet/models.py. Request models forbid unknown fields and
are strict about JSON types, as the fleet models are.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.fleet.models import Consent, Driver, PageQuery
from shared.tenancy.documents import SLUG

NAME_MAX: Final = 100
MAX_TENANTS: Final = 50

BrandId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=SLUG.pattern,
        description="A brand's id: lowercase letters, digits and inner hyphens (1-63).",
        examples=["contoso-cars"],
    ),
]
FleetId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=SLUG.pattern,
        description="A fleet's id within its brand: lowercase letters, digits and inner hyphens (1-63).",
        examples=["berlin-pool"],
    ),
]
ObjectId = Annotated[uuid.UUID, Field(description="An Entra object id (oid) of a user or service principal.")]
TenantId = Annotated[uuid.UUID, Field(description="An Entra tenant id.")]
MembershipId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=512,
        pattern=r"^[^/\\?#\s]{1,512}$",
        description="A membership's id as listed by GET /api/brands/{brandId}/members.",
    ),
]
InvitationId = Annotated[
    str,
    Field(
        min_length=16,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]{16,128}$",
        description="The invitation's secret id, as handed to the driver.",
    ),
]
# Driver is not granted: a driver is made by accepting an invitation with their own sign-in.
MemberRole = Literal["Brand.Admin", "Fleet.Operator", "Fleet.Reader"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- requests -------------------------------------------------------------------------------------------------


class VehicleListQuery(PageQuery):
    brandId: BrandId | None = Field(None, description="Only this brand's cars.")
    fleetId: FleetId | None = Field(None, description="Only this fleet's cars.")


class AuditQuery(PageQuery):
    pass


class PlatformAuditQuery(PageQuery):
    brandId: BrandId | None = Field(None, description="One brand's entries; default: the platform-wide ones.")


class ConsentChoice(_Request):
    calendar: bool = Field(description="Sync the driver's Outlook calendar to the car.")
    location: bool = Field(description="Keep the car's positions.")


class SelfLink(_Request):
    """The driver links themselves: who they are comes from their token, not from the body."""

    timeZone: str = Field(min_length=1, max_length=64, description="An IANA time zone.", examples=["Europe/Berlin"])
    consent: ConsentChoice


class DriverInvitation(_Request):
    """Invite the driver of a car; they accept with their own sign-in (POST /api/invitations/{id}/accept)."""

    invitee: str | None = Field(
        None, description="The driver's Entra object id: only they may accept. Default: whoever holds the id."
    )
    inviteeTenant: str | None = Field(None, description="The driver's Entra tenant id; default: one the brand accepts.")


class BrandSpec(_Request):
    """A brand's name, Entra tenants and setting overrides (PUT replaces them)."""

    name: str = Field(min_length=1, max_length=NAME_MAX)
    tenants: list[str] = Field(
        default_factory=list, max_length=MAX_TENANTS, description="Entra tenant ids its users and drivers belong to."
    )
    settings: dict[str, Any] | None = Field(
        None, description="Per-brand overrides of the app settings that may differ per brand (docs/api.md)."
    )


class FleetSpec(_Request):
    name: str = Field(min_length=1, max_length=NAME_MAX)


class MembershipGrant(_Request):
    """Grant a role in the brand: brand roles name no fleet, fleet roles a fleet. Drivers are invited instead."""

    principalId: str = Field(min_length=1, max_length=64, description="The member's Entra object id.")
    tenantId: str = Field(min_length=1, max_length=64, description="The member's Entra tenant id.")
    role: MemberRole
    fleetId: FleetId | None = None


# --- responses ------------------------------------------------------------------------------------------------


class GrantView(_Response):
    role: str
    brandId: str | None = None
    fleetId: str | None = None
    vehicleId: str | None = None


class Me(_Response):
    objectId: str
    tenantId: str
    clientId: str
    kind: Literal["user", "application"]
    name: str | None = None
    username: str | None = None
    roles: list[str]
    grants: list[GrantView]


class Brand(_Open):
    brandId: str
    name: str
    tenants: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)


class BrandPage(_Response):
    items: list[Brand]


class Fleet(_Open):
    brandId: str
    fleetId: str
    name: str


class FleetPage(_Response):
    items: list[Fleet]


class Membership(_Open):
    membershipId: str
    principalId: str
    role: str
    tenantId: str | None = None
    brandId: str | None = None
    fleetId: str | None = None
    vehicleId: str | None = None


class MemberPage(_Response):
    items: list[Membership]


class Invitation(_Response):
    invitationId: str = Field(description="The secret the driver accepts with: shown once, stored only as a hash.")
    vehicleId: str
    expiresAt: str


class DriverLinkResult(_Response):
    vehicleId: str
    driver: Driver
    consent: Consent


class AuditEntry(_Open):
    id: str
    brandId: str
    at: str
    action: str
    permission: str | None = None
    outcome: str
    status: int
    resource: dict[str, str] = Field(default_factory=dict)
    actor: dict[str, Any] | None = Field(None, description="objectId, tenantId, kind: never names or addresses.")


class AuditPage(_Response):
    items: list[AuditEntry]
    continuationToken: str | None = None


class ParkedQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stream: str | None = Field(None, min_length=1, max_length=256, description="telemetry (default) or outbox.")
    vehicleId: str | None = Field(None, min_length=1, max_length=256)
    reason: str | None = Field(None, min_length=1, max_length=256)
    limit: int = Field(100, ge=1, le=10_000)


class ParkedItem(_Response):
    name: str
    vehicleId: str | None = None
    reason: str | None = None
    bytes: int


class ParkedPage(_Response):
    stream: str
    count: int
    items: list[ParkedItem]


class Redrive(_Request):
    stream: str | None = Field(None, min_length=1, max_length=256)
    vehicleId: str | None = Field(None, min_length=1, max_length=256)
    reason: str | None = Field(None, min_length=1, max_length=256)
    limit: int = Field(100, ge=1, le=10_000)
    dryRun: bool = False


class RedriveReport(BaseModel):
    model_config = ConfigDict(extra="allow")

    stream: str
    dryRun: bool
