"""Where the app may send Azure Maps requests, and with which token: the allow-list of Azure Maps hosts.

The client attaches the managed identity's Entra token (scope https://atlas.microsoft.com/.default) to every
request it sends to MAPS_BASE_URL, so a setting pointing anywhere else would hand that token to a stranger. The
base URL must be one of Azure Maps' public-cloud endpoints (the global host or the US / EU geographic ones that
keep data in that geography; https, default port, no path), or a loopback address for the local sandbox (http
allowed, no token sent). National clouds are not listed: their Maps host and token audience could not be
verified for this release (docs/travel.md, "Azure Maps calls"); add them here when they are.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from shared.errors import ConfigurationError
from shared.graph.endpoints import is_loopback_url

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://atlas.microsoft.com"
MAPS_SCOPE: Final = "https://atlas.microsoft.com/.default"
MAPS_HOSTS: Final = ("atlas.microsoft.com", "us.atlas.microsoft.com", "eu.atlas.microsoft.com")

_CLOUD_URL: Final = re.compile(r"https://(?P<host>[a-z0-9.-]+)(?::443)?/?", re.ASCII)


@dataclass(frozen=True, slots=True)
class MapsEndpoint:
    """A vetted MAPS_BASE_URL; `scope` None means the loopback sandbox (no token)."""

    base_url: str
    host: str
    scope: str | None


def _is_plain_loopback(raw: str) -> bool:
    """http(s) to a loopback host, with nothing that could smuggle another host: no userinfo, query, fragment."""
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    plain = parts.scheme in ("http", "https") and "@" not in parts.netloc and not (parts.query or parts.fragment)
    return plain and "\\" not in raw and is_loopback_url(raw)


def maps_endpoint(base_url: str | None) -> MapsEndpoint:
    """Vet MAPS_BASE_URL (unset = the global host). Off the allow-list: logged once (escaped, bounded) and raised
    as ConfigurationError before any session or credential exists."""
    raw = base_url if base_url else DEFAULT_BASE_URL
    if _is_plain_loopback(raw):
        base = raw.rstrip("/")
        return MapsEndpoint(base, urlsplit(base).netloc, None)
    match = _CLOUD_URL.fullmatch(raw.lower())
    if match is None or match["host"] not in MAPS_HOSTS:
        allowed = ", ".join(f"https://{host}" for host in MAPS_HOSTS)
        message = (
            f"MAPS_BASE_URL {raw[:120]!r} is not an Azure Maps endpoint: use one of {allowed}, or a loopback "
            f"address for the local sandbox; no Maps request is sent"
        )
        log.error("%s", message)
        raise ConfigurationError(message)
    return MapsEndpoint(f"https://{match['host']}", match["host"], MAPS_SCOPE)
