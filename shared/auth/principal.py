"""The caller of an API route, as a validated Entra ID access token (v2) describes them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """A validated caller. `object_id` (oid) is the stable id of the user or of the client's service principal;
    `client_id` (azp) the application that asked for the token. `name` and `username` are personal data: shown
    back to the caller, never logged or written to the audit log."""

    object_id: str
    tenant_id: str
    client_id: str
    roles: frozenset[str]
    scopes: frozenset[str]
    is_app: bool
    name: str | None = None
    username: str | None = None
    # A user of a tenant neither the platform nor any brand accepts (a driver's personal Microsoft account, their
    # employer's tenant): no roles, whatever the token says, and only the routes of their own sign-ins at cars
    # (policy.GUEST_PERMISSIONS); anything else is refused as from a tenant not allowed (401).
    guest: bool = False
    # Of the platform's own tenants (AUTH_ALLOWED_TENANTS). A brand's customer tenant is not: its memberships
    # count only in the brands that list it now (access.AccessControl), its Platform.Admin never (tokens.py).
    home: bool = True

    def has_role(self, role: str) -> bool:
        return role in self.roles
