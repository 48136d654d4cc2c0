"""Microsoft's MSAL.js, in a real browser, signs in against the local OpenID Connect provider exactly as the
dashboard does against Entra: loginRedirect (authorization code + PKCE) to the provider's sign-in page, back to
the page with the code, the token from the provider's token endpoint (CORS), then a silent refresh.

Needs Debian's `chromium` and Playwright for Python (as tests/e2e/test_dashboard.py). The browser does not
know the stack's throwaway CA, so the page context ignores certificate errors; the token is checked with PyJWT.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from aiohttp import web

from devstack.oidc import LocalOidcProvider

playwright = pytest.importorskip("playwright.async_api", reason="requirements-dev.txt needs playwright")

ROOT = Path(__file__).resolve().parents[2]
MSAL_JS = ROOT / "node_modules" / "@azure" / "msal-browser" / "lib" / "msal-browser.min.js"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
USER = "munich.operator@automotive.example"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="apt-get install -y chromium"),
    pytest.mark.skipif(not MSAL_JS.exists(), reason="npm ci (node_modules/@azure/msal-browser)"),
]

PAGE = """<!doctype html><html><head><title>start</title><script src="/msal.js"></script></head><body><script>
const cfg = JSON.parse(sessionStorage.getItem("cfg") || new URLSearchParams(location.search).get("cfg"));
sessionStorage.setItem("cfg", JSON.stringify(cfg));
const pca = new msal.PublicClientApplication({
  auth: {clientId: cfg.clientId, authority: cfg.authority, knownAuthorities: [cfg.host], redirectUri: cfg.redirectUri},
  cache: {cacheLocation: "sessionStorage"},
});
(async () => {
  await pca.initialize();
  const result = await pca.handleRedirectPromise();
  if (!result) return pca.loginRedirect({scopes: [cfg.scope], loginHint: cfg.user});
  const refreshed = await pca.acquireTokenSilent({scopes: [cfg.scope], account: result.account, forceRefresh: true});
  window.outcome = {accessToken: result.accessToken, refreshed: refreshed.accessToken,
                    homeAccountId: result.account.homeAccountId, username: result.account.username};
  document.title = "done";
})().catch((e) => { window.outcome = {error: String(e)}; document.title = "error"; });
</script></body></html>"""


async def serve_page() -> tuple[web.AppRunner, str]:
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def script(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(MSAL_JS)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/msal.js", script)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/"


async def test_msal_js_signs_in_and_refreshes_against_the_local_provider() -> None:
    runner, page_url = await serve_page()
    try:
        async with LocalOidcProvider(redirect_uris=[page_url]) as oidc:
            user = next(u for u in oidc.seed["users"] if u["username"] == USER)
            config = {
                "clientId": oidc.dashboard_client_id,
                "authority": oidc.msal_authority,
                "host": oidc.base_url.removeprefix("https://"),
                "redirectUri": page_url,
                "scope": oidc.api_scope,
                "user": USER,
            }
            async with playwright.async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    page = await (await browser.new_context(ignore_https_errors=True)).new_page()
                    await page.goto(f"{page_url}?cfg={quote(json.dumps(config))}")
                    await page.wait_for_selector("#password", timeout=15_000)  # the provider's sign-in page
                    assert await page.input_value("#login") == USER  # login_hint honoured
                    await page.fill("#password", oidc.seed["password"])
                    await page.click("#submit")
                    await page.wait_for_function("window.outcome !== undefined", timeout=15_000)
                    outcome: dict[str, Any] = await page.evaluate("window.outcome")
                finally:
                    await browser.close()
    finally:
        await runner.cleanup()

    assert "error" not in outcome, outcome.get("error")
    assert outcome["homeAccountId"] == f"{user['oid']}.{user['tenantId']}"  # from client_info, as with Entra
    assert outcome["username"] == USER
    for token in (outcome["accessToken"], outcome["refreshed"]):
        claims = jwt.decode(token, options={"verify_signature": False})  # signature: test_oidc_provider.py
        assert (claims["oid"], claims["scp"], claims["roles"]) == (user["oid"], "Fleet.Access", user["roles"])
