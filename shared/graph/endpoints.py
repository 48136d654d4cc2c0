"""Where the app may send Graph requests, and for which token: the one allow-list of Graph hosts.

The Graph client attaches the managed identity's Graph token to every request it sends to GRAPH_BASE_URL. A
setting that pointed anywhere else (a typo, a look-alike such as `graph.microsoft.com.evil.example`, an
attacker who can edit app settings) would hand that token to a stranger, who could then read every driver's
calendar. So the base URL must be one of the Microsoft Graph endpoints of the Azure clouds below (https, the
default port, `/v1.0` or `/beta`, nothing else), or a loopback address for the local sandbox (the only place
plain http is allowed, and where no token is sent at all). The token scope and the Entra authority follow the
cloud: a US Gov token is for `https://graph.microsoft.us/.default`, never the public one.

National clouds: https://learn.microsoft.com/graph/deployments
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from shared.errors import ConfigurationError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://graph.microsoft.com/v1.0"


@dataclass(frozen=True, slots=True)
class GraphCloud:
    """One Azure cloud's Microsoft Graph host and the Entra authority that issues tokens for it."""

    name: str
    host: str
    authority: str

    @property
    def scope(self) -> str:
        return f"https://{self.host}/.default"


# The allow-list. Hosts from the Graph national-cloud deployments page; authorities from azure-identity's
# AzureAuthorityHosts (DoD shares the US Gov authority).
GRAPH_CLOUDS: Final[tuple[GraphCloud, ...]] = (
    GraphCloud("public", "graph.microsoft.com", "login.microsoftonline.com"),
    GraphCloud("usgov", "graph.microsoft.us", "login.microsoftonline.us"),
    GraphCloud("usgov-dod", "dod-graph.microsoft.us", "login.microsoftonline.us"),
    GraphCloud("china", "microsoftgraph.chinacloudapi.cn", "login.chinacloudapi.cn"),
)
GRAPH_VERSIONS: Final = ("v1.0", "beta")

_BY_HOST: Final = {cloud.host: cloud for cloud in GRAPH_CLOUDS}
# Whole-string match: no userinfo, no port other than 443, no query, fragment, backslash or extra path.
_CLOUD_URL: Final = re.compile(r"https://(?P<host>[a-z0-9.-]+)(?::443)?/(?P<version>v1\.0|beta)/?", re.ASCII)
_LOOPBACK_URL: Final = re.compile(
    r"https?://(?:localhost|[0-9.]+|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?(?:/[\w.~-]*)*/?", re.ASCII
)


@dataclass(frozen=True, slots=True)
class GraphEndpoint:
    """A vetted GRAPH_BASE_URL: the base to send requests to and, outside loopback, the cloud it belongs to."""

    base_url: str
    cloud: GraphCloud | None  # None: the local sandbox on loopback, no token

    @property
    def scope(self) -> str | None:
        return self.cloud.scope if self.cloud else None


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def graph_endpoint(base_url: str | None) -> GraphEndpoint:
    """Vet GRAPH_BASE_URL (unset = the public cloud's v1.0). Anything not on the allow-list is logged once, with
    the value escaped and bounded, and raised as ConfigurationError before any client or token exists."""
    raw = base_url if base_url else DEFAULT_BASE_URL
    base = raw.rstrip("/")
    if _LOOPBACK_URL.fullmatch(raw) and is_loopback_url(raw):
        return GraphEndpoint(base, None)
    match = _CLOUD_URL.fullmatch(raw.lower())
    cloud = _BY_HOST.get(match["host"]) if match else None
    if match is None or cloud is None:
        allowed = ", ".join(f"https://{c.host}" for c in GRAPH_CLOUDS)
        message = (
            f"GRAPH_BASE_URL {raw[:120]!r} is not a Microsoft Graph endpoint: use one of {allowed} with "
            f"/v1.0 or /beta, or a loopback address for the local sandbox; no Graph request is sent"
        )
        log.error("%s", message)
        raise ConfigurationError(message)
    return GraphEndpoint(f"https://{cloud.host}/{match['version']}", cloud)
