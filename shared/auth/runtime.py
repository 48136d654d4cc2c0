"""Process-wide wiring of the API's identity objects from the settings: the gatekeeper (token validation and
access control), the audit log and the tenancy service, each created on first use, once per event loop.

One validator per process matters: its JWKS cache lives inside it. The tenancy service answers the validator's
question "does some brand accept this tenant?" (cached), so customer tenants added to a brand work at once.
"""

from __future__ import annotations

from shared.audit.log import AuditLog
from shared.auth.access import AccessControl
from shared.per_loop import PerLoop
from shared.settings import number_setting
from shared.stores.cosmos import cosmos_store_from_env
from shared.tenancy.service import TenancyService


def _tenancy() -> TenancyService:
    from shared.calendar import runtime as calendar_runtime
    from shared.settings_model import auth_settings

    home = tuple(auth_settings().allowed_tenants)
    return TenancyService(cosmos_store_from_env.get(), calendar_runtime.driver_links.get(), home)


async def _tenant_allowed(tenant_id: str) -> bool:
    return await tenancy.get().tenant_allowed(tenant_id)


def _gatekeeper() -> AccessControl:
    """The AUTH_* settings are read first: without them this raises ConfigurationError before any client exists."""
    from shared.auth.tokens import AccessTokenValidator

    validator = AccessTokenValidator.from_env(extra_tenant_allowed=_tenant_allowed)
    return AccessControl(cosmos_store_from_env.get(), validator.validate, validator.close)


tenancy = PerLoop(_tenancy)
gatekeeper = PerLoop(_gatekeeper)
audit_log = PerLoop(
    lambda: AuditLog(cosmos_store_from_env.get(), retention_days=int(number_setting("AUDIT_RETENTION_DAYS")))
)
