"""The caller, brands, fleets, memberships and the audit log (shared/api/services.py: TenancyService, AuditLog)."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Response

from shared.api import models as am
from shared.api import runtime
from shared.api.guard import guard
from shared.api.routes.params import BrandId, FleetId, MembershipId, PrincipalId
from shared.api.services import AuditLog, TenancyService
from shared.auth.access import Access
from shared.auth.policy import AUDIT_PLATFORM_BRAND, SIGNED_IN, Permission, requires

router = APIRouter()
Tenancy = Annotated[TenancyService, Depends(runtime.tenancy)]
Audit = Annotated[AuditLog, Depends(runtime.audit_log)]
BrandReader = Annotated[Access, guard(requires(Permission.READ_BRAND, on="brand"))]
MemberManager = Annotated[Access, guard(requires(Permission.MANAGE_MEMBERS, on="brand"))]
CREATED: Final[dict[int | str, dict[str, Any]]] = {201: {"description": "Created"}}


def _created(response: Response, result: tuple[dict[str, Any], bool]) -> dict[str, Any]:
    body, created = result
    response.status_code = 201 if created else 200
    return body


@router.get("/me", response_model=am.Me, summary="Who am I: ids, roles and where each applies", tags=["identity"])
async def get_me(access: Annotated[Access, guard(SIGNED_IN)], tenancy: Tenancy) -> Any:
    return await tenancy.me(access)


@router.get("/brands", response_model=am.BrandPage, summary="The caller's brands", tags=["brands"])
async def list_brands(access: Annotated[Access, guard(SIGNED_IN)], tenancy: Tenancy) -> Any:
    return await tenancy.list_brands(access)


@router.get("/brands/{brandId}", response_model=am.Brand, summary="A brand's configuration", tags=["brands"])
async def get_brand(access: BrandReader, brandId: BrandId, tenancy: Tenancy) -> Any:
    return await tenancy.get_brand(brandId)


@router.put(
    "/brands/{brandId}", response_model=am.Brand, summary="Create or configure a brand", tags=["brands"],
    responses=CREATED,
)  # fmt: skip
async def put_brand(
    access: Annotated[Access, guard(requires(Permission.MANAGE_BRAND, on="brand"))],
    brandId: BrandId,
    body: am.BrandSpec,
    tenancy: Tenancy,
    response: Response,
) -> Any:
    """Replaces the brand's name, tenants and setting overrides (200). Creating a brand (201) is for platform
    admins only (`brands.create`); to anyone else a brand that does not exist is 404."""
    return _created(response, await tenancy.put_brand(access, brandId, body.name, list(body.tenants), body.settings))


@router.get("/brands/{brandId}/fleets", response_model=am.FleetPage, summary="A brand's fleets", tags=["brands"])
async def list_fleets(access: BrandReader, brandId: BrandId, tenancy: Tenancy) -> Any:
    return await tenancy.list_fleets(brandId)


@router.put(
    "/brands/{brandId}/fleets/{fleetId}", response_model=am.Fleet, summary="Create or rename a fleet", tags=["brands"],
    responses=CREATED,
)  # fmt: skip
async def put_fleet(
    access: Annotated[Access, guard(requires(Permission.MANAGE_FLEETS, on="brand"))],
    brandId: BrandId,
    fleetId: FleetId,
    body: am.FleetSpec,
    tenancy: Tenancy,
    response: Response,
) -> Any:
    return _created(response, await tenancy.put_fleet(brandId, fleetId, body.name))


@router.get(
    "/brands/{brandId}/members", response_model=am.MemberPage, summary="A brand's memberships", tags=["members"]
)
async def list_members(access: MemberManager, brandId: BrandId, tenancy: Tenancy) -> Any:
    return await tenancy.list_members(brandId)


@router.put(
    "/brands/{brandId}/members", response_model=am.Membership, summary="Grant a role in the brand", tags=["members"]
)
async def put_member(access: MemberManager, brandId: BrandId, body: am.MembershipGrant, tenancy: Tenancy) -> Any:
    """Idempotent: the membership's id is its role and scope, so granting twice changes nothing."""
    return await tenancy.put_member(access, brandId, body.principalId, body.tenantId, body.role, body.fleetId)


@router.delete(
    "/brands/{brandId}/members/{principalId}/{membershipId}", status_code=204, summary="Revoke a membership",
    tags=["members"],
)  # fmt: skip
async def delete_member(
    access: MemberManager, brandId: BrandId, principalId: PrincipalId, membershipId: MembershipId, tenancy: Tenancy
) -> None:
    await tenancy.delete_member(brandId, str(principalId), membershipId)


@router.get("/brands/{brandId}/audit", response_model=am.AuditPage, summary="A brand's audit log", tags=["audit"])
async def read_brand_audit(
    access: Annotated[Access, guard(requires(Permission.READ_AUDIT, on="brand"))],
    brandId: BrandId,
    query: Annotated[am.AuditQuery, Query()],
    audit: Audit,
) -> Any:
    return await audit.page(brandId, query.limit, query.continuationToken)


@router.get("/audit", response_model=am.AuditPage, summary="The platform's audit log", tags=["audit"])
async def read_audit(
    access: Annotated[Access, guard(requires(Permission.READ_AUDIT, on="platform"))],
    query: Annotated[am.PlatformAuditQuery, Query()],
    audit: Audit,
) -> Any:
    """Platform-wide entries (platform admins' own actions), or one brand's with `brandId`."""
    return await audit.page(query.brandId or AUDIT_PLATFORM_BRAND, query.limit, query.continuationToken)
