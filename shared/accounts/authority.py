"""Where drivers sign in: the vetted Entra authority of a car's brand.

The authority decides which accounts may sign in: `common` (work, school and personal Microsoft accounts, the
default), `organizations` (work and school only), `consumers` (personal only) or one tenant (its id or a
verified domain). MSAL sends the device code, and later the driver's refresh token, to this host, so only the
Entra hosts of the Azure clouds are allowed, or a loopback address for the local identity provider.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

from shared.errors import ConfigurationError
from shared.graph.endpoints import is_loopback_url

DEFAULT_AUTHORITY: Final = "https://login.microsoftonline.com/common"
AUTHORITY_HOSTS: Final = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
    }
)
_TENANT: Final = re.compile(r"^(common|organizations|consumers|[0-9a-f-]{36}|[a-z0-9][a-z0-9.-]{0,253}\.[a-z]{2,63})$")


def vet_authority(raw: str | None) -> str:
    """`https://<entra host or loopback>[:port]/<tenant>` without query, fragment or more path; else ConfigurationError
    (raised before MSAL exists, so nothing is ever sent to an unvetted host)."""
    value = (raw or DEFAULT_AUTHORITY).strip().rstrip("/")
    parts = urlsplit(value)
    segments = parts.path.strip("/").split("/")
    host_ok = (parts.hostname or "") in AUTHORITY_HOSTS and parts.port in (None, 443)
    if (
        parts.scheme != "https"
        or not (host_ok or is_loopback_url(value))
        or parts.query
        or parts.fragment
        or parts.username
        or len(segments) != 1
        or not _TENANT.match(segments[0].lower())
    ):
        raise ConfigurationError(
            f"sign-in authority {value[:120]!r} is not an Entra authority: use https://login.microsoftonline.com/"
            "<common|organizations|consumers|tenant> (or another Azure cloud's login host)"
        )
    return value


def is_local_authority(authority: str) -> bool:
    """The local identity provider (loopback): MSAL must skip Entra's instance discovery and trust the local CA."""
    return is_loopback_url(authority)
