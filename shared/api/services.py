"""The interfaces the HTTP application calls, as the identity code implements them: `Gatekeeper` is
shared/auth/access.AccessControl, `AuditLog` shared/audit/log.AuditLog, `TenancyService`
shared/tenancy/service.TenancyService. Tests substitute their own; routes depend on these Protocols only.

Every method raises the errors of shared/errors.py (shared/api/problems.py maps them); none knows HTTP.
`Access` (shared/auth/access.py) is what the gatekeeper granted for one request; routes hand it on to the
services that scope their answer by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from shared.auth.access import Access
    from shared.auth.policy import Requirement
    from shared.auth.principal import Principal


class Gatekeeper(Protocol):
    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of the `Authorization` header's bearer token. Raises AuthenticationError (missing,
        malformed, expired, wrongly signed, other audience or tenant: the reason, never the token)."""
        ...

    async def authorize(self, principal: Principal, requirement: Requirement, params: Mapping[str, str]) -> Access:
        """What `principal` may do under `requirement` for the resource named by the path parameters (vehicleId,
        brandId, fleetId, userId). Raises UnknownResourceError outside the caller's brands (no enumeration) and
        AccessDeniedError inside them with too little role."""
        ...


class AuditLog(Protocol):
    async def record(
        self,
        who: Access | Principal | None,
        requirement: Requirement,
        route_name: str,
        path_params: Mapping[str, str],
        outcome: str,
        status: int,
        client: Mapping[str, str],
    ) -> None:
        """Append one privileged attempt. `who`: the Access when authorized, the Principal when refused.
        `outcome`: "succeeded", "failed" (the operation raised) or "denied" (authorize refused).
        `client`: {"ip", "userAgent"} as the request carried them (either may be absent)."""
        ...

    async def page(self, brand_id: str, limit: int, token: str | None) -> dict[str, Any]:
        """A page of one partition's entries, newest first (a brand id, or "platform" for platform-wide ones)."""
        ...


class TenancyService(Protocol):
    """Brands, fleets, memberships, the caller, and the driver's own link and invitations."""

    async def me(self, access: Access) -> dict[str, Any]: ...

    async def list_brands(self, access: Access) -> dict[str, Any]: ...

    async def get_brand(self, brand_id: str) -> dict[str, Any]: ...

    async def put_brand(
        self, access: Access, brand_id: str, name: str, tenants: list[str], settings: Mapping[str, Any] | None
    ) -> tuple[dict[str, Any], bool]:
        """Create (platform admins only: the route checks MANAGE_BRAND) or update; (brand, created)."""
        ...

    async def list_fleets(self, brand_id: str) -> dict[str, Any]: ...

    async def put_fleet(self, brand_id: str, fleet_id: str, name: str) -> tuple[dict[str, Any], bool]: ...

    async def list_members(self, brand_id: str) -> dict[str, Any]: ...

    async def put_member(
        self,
        access: Access,
        brand_id: str,
        principal_id: str,
        tenant_id: str,
        role: str,
        fleet_id: str | None,
    ) -> dict[str, Any]: ...

    async def delete_member(self, brand_id: str, principal_id: str, membership: str) -> None: ...

    async def invite_driver(
        self, access: Access, vehicle_id: str, invitee: str | None, invitee_tenant: str | None
    ) -> dict[str, Any]: ...

    async def accept_invitation(
        self, access: Access, secret: str, time_zone: str, calendar: bool, location: bool
    ) -> dict[str, Any]: ...

    async def link_self(
        self, access: Access, vehicle_id: str, time_zone: str, calendar: bool, location: bool
    ) -> dict[str, Any]: ...

    async def unlink(self, access: Access, vehicle_id: str) -> None:
        """The link and the driver's membership for the car; UnknownResourceError when the car has no driver."""
        ...
