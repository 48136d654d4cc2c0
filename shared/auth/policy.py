"""Roles, permissions and where they apply: the one table every route's requirement is checked against.

Roles are Entra app roles (app_roles.json, also read by infra/). A role held in the token applies where a
membership scopes it (a brand, a fleet, a car); Platform.Admin needs no membership. Platform admins hold
every permission except the driver's own (their calendar, their consent, linking themselves): those belong
to the driver alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Final, Literal

import orjson

APP_ROLES_PATH: Final = Path(__file__).with_name("app_roles.json")


class Role(StrEnum):
    PLATFORM_ADMIN = "Platform.Admin"
    BRAND_ADMIN = "Brand.Admin"
    FLEET_OPERATOR = "Fleet.Operator"
    FLEET_READER = "Fleet.Reader"
    DRIVER = "Driver"


# The delegated scope a user's token must carry (apps calling as themselves carry roles, no scope).
API_SCOPE: Final = "Fleet.Access"


class Permission(StrEnum):
    READ_VEHICLES = "vehicles.read"  # state, history (telemetry, trips) and alerts of a car
    REGISTER_VEHICLE = "vehicles.register"
    ACK_ALERT = "alerts.ack"
    ERASE_VEHICLE = "vehicles.erase"
    REVOKE_VEHICLE = "vehicles.revoke"  # a stolen or scrapped car: refused at provisioning, disabled on its hub
    CHANGE_CONSENT = "consent.change"  # the driver's own decisions (shared/privacy/consent.py)
    READ_CONSENT = "consent.read"  # a car's consent state and its driver's records
    RECORD_CONSENT = "consent.record"  # an operator records a driver's decision on a documented basis
    READ_DRIVER_DATA = "driver.read"  # the driver's agenda and meetings
    INVITE_DRIVER = "drivers.invite"
    LINK_SELF = "drivers.link"  # a driver links their own calendar to a car they drive
    ACCEPT_INVITATION = "invitations.accept"  # any signed-in user (never an app) becomes the invited car's driver
    UNLINK_DRIVER = "drivers.unlink"
    ERASE_DRIVER = "drivers.erase"
    EXPORT_DRIVER_DATA = "drivers.export"  # everything stored about a driver and their car (access, portability)
    READ_BRAND = "brands.read"
    MANAGE_BRAND = "brands.manage"
    CREATE_BRAND = "brands.create"
    MANAGE_FLEETS = "fleets.manage"
    MANAGE_MEMBERS = "members.manage"
    READ_AUDIT = "audit.read"
    MANAGE_PARKED = "parked.manage"
    SEND_COMMAND = "commands.send"  # act on a car (shared/commands/catalogue.json says which role may send which)
    MANAGE_GEOFENCES = "geofences.manage"  # a fleet's geofences, or a driver's own for their car
    MANAGE_OWN_ACCOUNT = "accounts.own"  # a driver's own sign-ins at cars (shared/accounts): list, sign out


P = Permission
# What a guest (a user of a tenant no brand accepts: a driver's own Microsoft account) may do: their sign-ins only.
GUEST_PERMISSIONS: Final = frozenset({Permission.MANAGE_OWN_ACCOUNT})
DRIVER_OWN: Final = frozenset(
    {P.READ_DRIVER_DATA, P.CHANGE_CONSENT, P.LINK_SELF, P.ACCEPT_INVITATION, P.MANAGE_OWN_ACCOUNT}
)

ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.PLATFORM_ADMIN: frozenset(Permission) - DRIVER_OWN,
    Role.BRAND_ADMIN: frozenset({
        P.READ_VEHICLES, P.REGISTER_VEHICLE, P.ACK_ALERT, P.ERASE_VEHICLE, P.REVOKE_VEHICLE, P.INVITE_DRIVER,
        P.UNLINK_DRIVER, P.ERASE_DRIVER, P.EXPORT_DRIVER_DATA, P.READ_BRAND, P.MANAGE_BRAND, P.MANAGE_FLEETS,
        P.MANAGE_MEMBERS, P.READ_AUDIT, P.READ_CONSENT, P.RECORD_CONSENT, P.SEND_COMMAND, P.MANAGE_GEOFENCES,
    }),
    Role.FLEET_OPERATOR: frozenset({
        P.READ_VEHICLES, P.REGISTER_VEHICLE, P.REVOKE_VEHICLE, P.ACK_ALERT, P.INVITE_DRIVER, P.UNLINK_DRIVER,
        P.READ_CONSENT, P.RECORD_CONSENT, P.SEND_COMMAND, P.MANAGE_GEOFENCES,
    }),
    Role.FLEET_READER: frozenset({P.READ_VEHICLES}),
    Role.DRIVER: frozenset({
        P.READ_VEHICLES, P.CHANGE_CONSENT, P.READ_DRIVER_DATA, P.LINK_SELF, P.UNLINK_DRIVER, P.READ_CONSENT,
        P.SEND_COMMAND, P.MANAGE_GEOFENCES,
    }),
}  # fmt: skip

# Privileged permissions: every use and every refused attempt is written to the audit log.
AUDITED: Final = frozenset(Permission) - {
    P.READ_VEHICLES, P.READ_DRIVER_DATA, P.READ_BRAND, P.READ_AUDIT, P.READ_CONSENT,
}  # fmt: skip
# The audit log's brand (its partition) of an entry no brand's route or car names: a platform-wide action, or a
# driver's own (their account, their export).
AUDIT_PLATFORM_BRAND: Final = "platform"
AUDIT_DENIED: Final = "denied"  # the outcome of a refused attempt (the others: succeeded, failed)

# Where a requirement finds the resource it is checked against:
#   public   - nobody needs to be signed in (the Graph webhook, the dashboard's assets, the OpenAPI document)
#   caller   - any signed-in caller; the answer is scoped to what they may see (lists, "me")
#   user     - any signed-in user acting as themselves; an application is refused (403)
#   platform - platform admins only
#   brand    - path parameter brandId;  fleet - brandId and fleetId;  vehicle - vehicleId (its brand and fleet)
#   driver   - path parameter userId: the driver themselves, or an admin of a brand they drive for
Target = Literal["public", "caller", "user", "platform", "brand", "fleet", "vehicle", "driver"]


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a route needs: a permission on a target. Every route declares one (the route table test fails
    otherwise); `shared/auth/access.py` is the one place that checks it."""

    target: Target
    permission: Permission | None = None  # None only for public and caller

    @property
    def audited(self) -> bool:
        return self.permission is not None and self.permission in AUDITED


PUBLIC: Final = Requirement("public")
SIGNED_IN: Final = Requirement("caller")


def requires(permission: Permission, on: Target) -> Requirement:
    return Requirement(on, permission)


@cache
def app_roles() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(APP_ROLES_PATH.read_bytes())
    return data


def role_scope(role: Role) -> str:
    """platform, brand, fleet or vehicle: where a membership of this role applies (app_roles.json)."""
    return str(next(r["scope"] for r in app_roles()["appRoles"] if r["value"] == role.value))
