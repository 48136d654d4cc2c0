"""Getting tokens from the local provider the way real clients do: a browser signing in through the
authorization code + PKCE flow (the dashboard's flow, driven over HTTP: authorize, the sign-in page, the redirect,
the code redemption) and a daemon using client credentials. No token is ever made here; the provider issues them.

    client = OidcClient("https://127.0.0.1:5443", Path("ca.pem"), load_seed())
    token = await client.user_token("berlin.operator@automotive.example")
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import ssl
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp

from devstack.oidc.seed import Seed, find_daemon, find_user

# Registered for the dashboard client at start: a loopback address nothing listens on. The flow stops at the
# redirect and reads the code from its Location, as MSAL's native loopback flow would.
TOOL_REDIRECT_URI: Final = "http://127.0.0.1/devstack/oidc/callback"
_FORM_ACTION: Final = re.compile(r'<form[^>]*action="([^"]+)"')


class OidcFlowError(RuntimeError):
    """The provider refused a step of a flow (wrong password, bad verifier, unknown client); `error` is OAuth's."""

    def __init__(self, message: str, error: str = "") -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class TokenSet:
    access_token: str
    id_token: str | None
    refresh_token: str | None
    expires_in: int


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode())


class OidcClient:
    """Flows against a running local provider at `base_url` (https://127.0.0.1:PORT), trusting `ca_file`."""

    def __init__(self, base_url: str, ca_file: Path, seed: Seed) -> None:
        self.base_url = base_url.rstrip("/")
        self.ca_file = ca_file
        self.seed = seed
        self._ssl = ssl.create_default_context(cafile=str(ca_file))

    def api_scope(self, name: str = "Fleet.Access") -> str:
        return f"api://{self.seed['api']['clientId']}/{name}"

    def tenant_url(self, tenant_id: str) -> str:
        return f"{self.base_url}/{tenant_id}"

    def _session(self) -> aiohttp.ClientSession:
        # A fresh cookie jar per flow: each sign-in starts without a session, like a private browser window.
        # unsafe=True: the provider's host is an IP address, whose cookies aiohttp drops by default.
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl), cookie_jar=aiohttp.CookieJar(unsafe=True)
        )

    async def authorize(
        self,
        username: str,
        pkce: Pkce,
        *,
        password: str | None = None,
        scope: str | None = None,
        redirect_uri: str = TOOL_REDIRECT_URI,
    ) -> str:
        """Sign `username` in at their tenant's authorize endpoint and return the authorization code."""
        user = find_user(self.seed, username)
        state = secrets.token_urlsafe(16)
        query = {
            "client_id": self.seed["dashboard"]["clientId"],
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": scope or f"{self.api_scope()} openid profile offline_access",
            "code_challenge": pkce.challenge,
            "code_challenge_method": "S256",
            "state": state,
            "nonce": secrets.token_urlsafe(16),
            "login_hint": user["username"],
        }
        url = f"{self.tenant_url(user['tenantId'])}/oauth2/v2.0/authorize?{urlencode(query)}"
        async with self._session() as session:
            response = await self._browse(session, "GET", url, None, redirect_uri)
            if isinstance(response, dict):
                return self._code(response, state)
            page_url, html = response
            action = _FORM_ACTION.search(html)
            if action is None:
                raise OidcFlowError(f"no sign-in form at {page_url}")
            form = {"login": user["username"], "password": self.seed["password"] if password is None else password}
            response = await self._browse(session, "POST", urljoin(page_url, unescape(action.group(1))), form,
                                          redirect_uri)  # fmt: skip
            if isinstance(response, dict):
                return self._code(response, state)
            raise OidcFlowError(f"sign-in of {username} refused", "access_denied")

    async def _browse(
        self, session: aiohttp.ClientSession, method: str, url: str, form: dict[str, str] | None, redirect_uri: str
    ) -> tuple[str, str] | dict[str, list[str]]:
        """Follow redirects like a browser until a page (url, html) or the redirect to the client (its query)."""
        for _ in range(10):
            async with session.request(method, url, data=form, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308):
                    location = urljoin(url, response.headers["Location"])
                    if location.startswith(redirect_uri):
                        parts = urlsplit(location)
                        return parse_qs(parts.query or parts.fragment)
                    method, url, form = "GET", location, None
                    continue
                body = await response.text()
                if response.status != 200:
                    raise OidcFlowError(f"{method} {url} answered {response.status}: {body[:300]}")
                return url, body
        raise OidcFlowError(f"too many redirects from {url}")

    @staticmethod
    def _code(params: dict[str, list[str]], state: str) -> str:
        if "error" in params:
            error = params["error"][0]
            raise OidcFlowError(f"authorization failed: {error}: {params.get('error_description', [''])[0]}", error)
        if params.get("state") != [state]:
            raise OidcFlowError("state mismatch in the authorization response")
        return params["code"][0]

    async def redeem(
        self, tenant_id: str, code: str, verifier: str, *, redirect_uri: str = TOOL_REDIRECT_URI
    ) -> TokenSet:
        return await self._token(
            tenant_id,
            {
                "grant_type": "authorization_code",
                "client_id": self.seed["dashboard"]["clientId"],
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
        )

    async def refresh(self, tenant_id: str, refresh_token: str, scope: str | None = None) -> TokenSet:
        return await self._token(
            tenant_id,
            {
                "grant_type": "refresh_token",
                "client_id": self.seed["dashboard"]["clientId"],
                "refresh_token": refresh_token,
                "scope": scope or f"{self.api_scope()} openid profile offline_access",
            },
        )

    async def user_tokens(self, username: str, *, password: str | None = None) -> TokenSet:
        """The whole sign-in: authorize with PKCE, sign in on the provider's page, redeem the code."""
        pkce = Pkce.new()
        code = await self.authorize(username, pkce, password=password)
        return await self.redeem(find_user(self.seed, username)["tenantId"], code, pkce.verifier)

    async def user_token(self, username: str) -> str:
        return (await self.user_tokens(username)).access_token

    async def app_token(self, client_id: str, *, secret: str | None = None) -> str:
        """Client credentials for a seeded daemon, asking for `api://{api}/.default` as Entra daemons do."""
        daemon = find_daemon(self.seed, client_id)
        tokens = await self._token(
            daemon["tenantId"],
            {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": daemon["secret"] if secret is None else secret,
                "scope": self.api_scope(".default"),
            },
        )
        return tokens.access_token

    async def _token(self, tenant_id: str, form: dict[str, str]) -> TokenSet:
        async with (
            self._session() as session,
            session.post(f"{self.tenant_url(tenant_id)}/oauth2/v2.0/token", data=form) as response,
        ):
            body: dict[str, Any] = await response.json(content_type=None)
        if response.status != 200 or "access_token" not in body:
            error = str(body.get("error", ""))
            raise OidcFlowError(f"token request refused ({response.status}): {error}: {body.get('error_description')}",
                                error)  # fmt: skip
        return TokenSet(
            access_token=str(body["access_token"]),
            id_token=body.get("id_token"),
            refresh_token=body.get("refresh_token"),
            expires_in=int(body.get("expires_in", 0)),
        )

    async def admin(self, admin_token: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST to the provider's loopback admin routes (key rotation, redirect URIs)."""
        headers = {"Authorization": f"Bearer {admin_token}"}
        async with (
            self._session() as session,
            session.post(f"{self.base_url}/_admin/{path}", json=body or {}, headers=headers) as response,
        ):
            result: dict[str, Any] = await response.json(content_type=None)
            if response.status != 200:
                raise OidcFlowError(f"admin {path} answered {response.status}: {result}")
            return result
