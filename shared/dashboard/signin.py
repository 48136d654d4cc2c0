"""How the dashboard signs in: the MSAL.js configuration it is served (`config.json`) and the Content-Security-Policy
that lets the page talk to exactly two origins, its own (the API) and the authority's (MSAL's token requests).

Both are derived from the AUTH_* settings (shared/settings.py), so the page holds no address of its own and the same
files serve Entra ID in Azure and the local OpenID Connect provider (devstack/oidc) on a developer's machine.

>>> content_security_policy("https://login.microsoftonline.com/organizations").split("; ")[3]
"connect-src 'self' https://login.microsoftonline.com"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from shared.auth.policy import ROLE_PERMISSIONS, Permission

if TYPE_CHECKING:
    from shared.settings_model import AuthSettings

# Entra ID's own hosts: MSAL's AAD protocol mode (instance discovery, client_info, Entra's cache keys) applies to
# them only; any other authority (the local provider, another OpenID Connect issuer) is plain OIDC to MSAL.
ENTRA_HOSTS: Final = frozenset({"login.microsoftonline.com"})
# What the page decides with: it shows an action only where a grant of one of these roles covers the car. The
# server checks every request anyway; hiding buttons is for the operator's sake, not security.
PAGE_PERMISSIONS: Final = (Permission.ACK_ALERT, Permission.READ_DRIVER_DATA, Permission.READ_BRAND)


def authority_origin(authority: str) -> str:
    """`https://host[:port]` of the authority: the one origin besides 'self' the page may send requests to."""
    parts = urlsplit(authority)
    return f"{parts.scheme}://{parts.netloc}".lower()


def content_security_policy(authority: str) -> str:
    """Same-origin script and style only (MSAL is served from here, never a CDN); requests to the API and to the
    authority (discovery, token endpoint). The sign-in itself is a top-level navigation, which CSP does not govern;
    no frames, so a silent renewal that would need a hidden iframe fails and the page redirects instead."""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"connect-src 'self' {authority_origin(authority)}; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def roles_with(permission: Permission) -> list[str]:
    return sorted(role.value for role, granted in ROLE_PERMISSIONS.items() if permission in granted)


def client_config(auth: AuthSettings) -> dict[str, Any]:
    """The public MSAL.js settings (nothing secret: a SPA is a public client; PKCE protects the code).

    `knownAuthorities` names the authority's host so MSAL trusts its discovery document without asking Entra's
    instance discovery; `protocolMode` is OIDC for any authority that is not Entra ID.
    """
    authority = auth.dashboard_authority.rstrip("/")
    host = urlsplit(authority).netloc.lower()
    return {
        "clientId": auth.dashboard_client_id,
        "authority": authority,
        "knownAuthorities": [host],
        "protocolMode": "AAD" if urlsplit(authority).hostname in ENTRA_HOSTS else "OIDC",
        "scopes": [auth.api_scope],
        "permissions": {p.value: roles_with(p) for p in PAGE_PERMISSIONS},
    }
