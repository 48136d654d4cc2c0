"""The fleet dashboard: one static page (HTML, JS, CSS shipped in the package, no CDN, no map tiles).

Security model: the page and its assets are anonymous and hold no data and no key. The script reads the
function key from the URL fragment (`/api/dashboard#key=...`, never sent to any server, removed from the
address bar at once) or asks for it, keeps it in sessionStorage (this tab only) and sends it as
`x-functions-key` to the API on the same origin. The Content-Security-Policy allows only same-origin script,
style and requests, so nothing else can read the key or the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Final

ASSETS: Final = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}
HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
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
def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def serve(asset: str | None) -> Asset:
    """The page (`asset` None) or one of its assets; anything else is 404 (no path is ever opened from input)."""
    name = asset or "index.html"
    if name not in ASSETS or (name == "index.html" and asset is not None):
        return Asset(404, b"not found", "text/plain", {"X-Content-Type-Options": "nosniff"})
    return Asset(200, _asset(name), ASSETS[name], dict(HEADERS))
