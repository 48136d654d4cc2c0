"""The fleet dashboard: one static page (HTML, JS, CSS and MSAL.js shipped in the package, no CDN, no map tiles).

Security model: the page and its assets are anonymous and hold no data, no key and no address. The page signs the
operator in with MSAL.js (authorization code + PKCE, shared/dashboard/signin.py) against the authority named in
`config.json` (built from the AUTH_* settings), keeps the tokens in MSAL's sessionStorage cache (this tab only)
and sends the access token as `Authorization: Bearer` to the API on the same origin, which decides what the caller
sees. The Content-Security-Policy allows same-origin script and style, and requests to this origin and the
authority's only, so no other origin can read a token or the data.

The MSAL.js bundle (static/vendor/msal-browser.min.js, MIT, licence beside it) is the npm package's browser build
at the version package.json pins; `make dashboard-vendor` copies it again after an upgrade and a unit test fails
while the two differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Final

from shared.dashboard.signin import client_config, content_security_policy

ASSETS: Final = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
    "msal-browser.min.js": "text/javascript",
    "config.json": "application/json",
}
# Where each file asset lives under static/ (config.json is built from the settings instead).
FILES: Final = {
    "index.html": "index.html",
    "app.js": "app.js",
    "app.css": "app.css",
    "msal-browser.min.js": "vendor/msal-browser.min.js",
}
HEADERS: Final = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """What to answer for one asset (the HTTP layer turns it into its response type)."""

    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


@cache
def _file(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", *FILES[name].split("/")).read_bytes()


def _config() -> bytes:
    """The MSAL.js configuration; ConfigurationError (503 at the HTTP layer) while AUTH_AUDIENCE is not set."""
    from shared.settings_model import auth_settings

    return json.dumps(client_config(auth_settings()), separators=(",", ":")).encode()


def _headers() -> dict[str, str]:
    from shared.settings_model import app_settings

    policy = content_security_policy(str(app_settings().auth_dashboard_authority))
    return {"Content-Security-Policy": policy, **HEADERS}


def serve(asset: str | None) -> Asset:
    """The page (`asset` None) or one of its assets; anything else is 404 (no path is ever opened from input).

    >>> serve("../function_app.py").status
    404
    """
    name = asset or "index.html"
    if name not in ASSETS or (name == "index.html" and asset is not None):
        return Asset(404, b"not found", "text/plain", {"X-Content-Type-Options": "nosniff"})
    body = _config() if name == "config.json" else _file(name)
    return Asset(200, body, ASSETS[name], _headers())
