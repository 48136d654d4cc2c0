"""The dashboard's sign-in configuration, its Content-Security-Policy and the MSAL.js bundle it ships."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared.dashboard import ASSETS, FILES, serve
from shared.dashboard.signin import client_config, content_security_policy
from shared.settings_model import auth_settings

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "shared" / "dashboard" / "static"
BUNDLE = STATIC / "vendor" / "msal-browser.min.js"
API_ID = "12266ee6-2f2c-44ab-b5af-6c88a9473a92"


def test_in_azure_the_page_signs_in_with_entra_id_for_the_api_scope() -> None:
    config = client_config(auth_settings({"AUTH_AUDIENCE": f"{API_ID},api://{API_ID}"}))
    assert config == {
        "clientId": API_ID,
        "authority": "https://login.microsoftonline.com/organizations",
        "knownAuthorities": ["login.microsoftonline.com"],
        "protocolMode": "AAD",
        "scopes": [f"api://{API_ID}/Fleet.Access"],
        "permissions": {
            "alerts.ack": ["Brand.Admin", "Fleet.Operator", "Platform.Admin"],
            "driver.read": ["Driver"],
            "brands.read": ["Brand.Admin", "Platform.Admin"],  # the brand's cost meter
        },
    }


def test_any_other_authority_is_plain_openid_connect_to_msal() -> None:
    environ = {
        "AUTH_AUDIENCE": API_ID,
        "AUTH_DASHBOARD_CLIENT_ID": "1376a8eb-c8af-477c-9eb1-d2182d0e780d",
        "AUTH_DASHBOARD_AUTHORITY": "https://127.0.0.1:7443/c6ff6b67-55a2-4c4f-b9eb-9336aee82323/",
    }
    config = client_config(auth_settings(environ))
    assert config["authority"] == "https://127.0.0.1:7443/c6ff6b67-55a2-4c4f-b9eb-9336aee82323"
    assert config["knownAuthorities"] == ["127.0.0.1:7443"]
    assert config["protocolMode"] == "OIDC"
    assert config["clientId"] == "1376a8eb-c8af-477c-9eb1-d2182d0e780d"


@pytest.mark.parametrize(
    ("authority", "origin"),
    [
        ("https://login.microsoftonline.com/organizations", "https://login.microsoftonline.com"),
        ("https://127.0.0.1:7443/c6ff6b67/v2.0", "https://127.0.0.1:7443"),
    ],
)
def test_the_page_may_send_requests_to_itself_and_the_authority_only(authority: str, origin: str) -> None:
    directives = dict(d.split(" ", 1) for d in content_security_policy(authority).split("; "))
    assert directives["connect-src"] == f"'self' {origin}"
    assert directives["script-src"] == "'self'"
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"


def test_every_asset_is_served_with_the_policy_and_nothing_else_is() -> None:
    for name in FILES:
        found = serve(None if name == "index.html" else name)
        assert found.status == 200
        assert found.content_type == ASSETS[name]
        assert "connect-src 'self' https://" in found.headers["Content-Security-Policy"]
    for name in ("index.html", "../app.js", "vendor/msal-browser.min.js", "msal-browser.LICENSE.txt", ".."):
        assert serve(name).status == 404


def test_no_key_is_read_or_sent_by_the_page() -> None:
    script = (STATIC / "app.js").read_text()
    page = (STATIC / "index.html").read_text()
    for old in ("x-functions-key", "#key", "functionKey", "key-form"):
        assert old not in script
        assert old not in page
    assert "Authorization: `Bearer ${await accessToken()}`" in script
    assert 'cacheLocation: "sessionStorage"' in script


def test_the_shipped_msal_bundle_is_the_pinned_npm_release() -> None:
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]["@azure/msal-browser"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "pin an exact version"
    header = BUNDLE.read_text()[:100]
    assert header.startswith(f"/*! @azure/msal-browser v{pinned} ")
    assert (BUNDLE.parent / "msal-browser.LICENSE.txt").read_text().startswith("MIT License")
    installed = ROOT / "node_modules" / "@azure" / "msal-browser" / "lib" / "msal-browser.min.js"
    if installed.exists():  # after `npm ci`: byte for byte the package's browser build (make dashboard-vendor)
        assert installed.read_bytes() == BUNDLE.read_bytes()
