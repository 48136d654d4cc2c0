"""The tenancy documents and their ids: a brand (`tenancy`, id `brand`), its fleets (`tenancy`, id
`fleet:{fleetId}`), memberships and invitations (`memberships`, partitioned by the Entra object id).

Ids are deterministic, so granting the same role twice writes the same document (idempotent) and a membership
can be named in a URL. Brand and fleet ids are slugs; membership ids are built from them and a car's safe id.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Final

from shared.auth.policy import Role, role_scope
from shared.brands import BRAND_DOC_ID as BRAND_DOC_ID  # where the brand's configuration lives
from shared.device_messages import safe_id
from shared.errors import InvalidRequestError

KIND_BRAND: Final = "brand"
KIND_FLEET: Final = "fleet"
KIND_MEMBERSHIP: Final = "membership"  # also in shared/auth/access.py, which reads them on every call
KIND_INVITATION: Final = "invitation"
INVITATION_DOC_ID: Final = "invitation"
KIND_COST_SNAPSHOT: Final = "costSnapshot"  # the brand's summed cost meter and its asOf (shared/cost/rollup.py)
COST_SNAPSHOT_DOC_ID: Final = "cost-snapshot"
INVITATION_TTL_SECONDS: Final = 7 * 24 * 3600
SLUG: Final = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
NONE: Final = "-"


def slug(value: str, field: str) -> str:
    """Brand and fleet ids: lowercase letters, digits and inner hyphens, 1-63 characters (URL and id safe)."""
    if not SLUG.match(value):
        raise InvalidRequestError(
            f"{field} must be 1-63 lowercase letters, digits or inner hyphens",
            [{"field": field, "message": "not a slug"}],
        )
    return value


def object_id(value: str, field: str) -> str:
    """An Entra object or tenant id: a GUID, normalised to lowercase."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidRequestError(f"{field} must be a GUID", [{"field": field, "message": "not a GUID"}]) from None


def fleet_doc_id(fleet_id: str) -> str:
    return f"fleet:{fleet_id}"


def membership_id(role: Role, brand_id: str, fleet_id: str | None, vehicle_id: str | None) -> str:
    return "|".join((role.value, brand_id, fleet_id or NONE, safe_id(vehicle_id) if vehicle_id else NONE))


def check_scope(role: Role, fleet_id: str | None, vehicle_id: str | None) -> None:
    """Brand roles name no fleet or car, fleet roles a fleet, the Driver role a car (app_roles.json `scope`)."""
    scope = role_scope(role)
    wanted = {"brand": (False, False), "fleet": (True, False), "vehicle": (False, True)}.get(scope)
    if wanted is None:
        raise InvalidRequestError(f"{role.value} is not granted by membership", [{"field": "role", "message": scope}])
    if (fleet_id is not None, vehicle_id is not None) != wanted:
        need = {"brand": "neither fleetId nor vehicleId", "fleet": "fleetId only", "vehicle": "vehicleId only"}
        raise InvalidRequestError(
            f"a {role.value} membership takes {need[scope]}", [{"field": "scope", "message": need[scope]}]
        )


def invitation_partition(secret: str) -> str:
    """Invitations are found by their secret, stored only as a hash: a leaked database holds no usable one."""
    return f"invitation:{hashlib.sha256(secret.encode()).hexdigest()}"
