"""Getting tokens from the local provider the way real clients do: a browser signing in through the
authorization code + PKCE flow (the dashboard's flow, driven over HTTP: authorize, the sign-in page, the redirect,
the code redemption) and a daemon using client credentials. No token is ever made here; the provider issues them.
`approve_device_code` is the person at the other end of a device-code sign-in (RFC 8628): the verification page, the
code, the sign-in, Accept or Decline, over HTTP as a browser would.

    client = OidcClient("https://127.0.0.1:5443", Path("ca.pem"), load_seed())
    token = await client.user_token("berlin.operator@automotive.example")
    await approve_device_code(flow["verification_uri"], flow["user_code"], "ada@outlook.example", password,
                              ca_file=oidc.ca_file)
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import ssl
from dataclasses import dataclass, field
from html import unescape
from html.parser import HTMLParser
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


class DeviceApprovalError(OidcFlowError):
    """A page of the device sign-in was not what a person would see next. `error` names the step that failed:
    `code_refused` (wrong, expired or used code), `sign_in_refused` (wrong password, or an account the authority
    does not admit), `unexpected_page`; `page_message` is what the page told the person."""

    def __init__(self, message: str, error: str, page_message: str = "") -> None:
        super().__init__(message, error)
        self.page_message = page_message


@dataclass
class _Form:
    action: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)


class _Page(HTMLParser):
    """What a person reads on a provider page: its name (the `data-page` of <main>), its alert, its forms."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.name = ""
        self.alert = ""
        self.text: list[str] = []
        self.forms: list[_Form] = []
        self._in_alert = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "main":
            self.name = a.get("data-page", "")
        elif a.get("role") == "alert":
            self._in_alert = True
        elif tag == "form":
            self.forms.append(_Form(unescape(a.get("action", ""))))
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1].fields[a["name"]] = a.get("value", "")
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1].buttons.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "p":
            self._in_alert = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_alert:
            self.alert += data

    def form_with(self, name: str) -> _Form:
        for form in self.forms:
            if name in form.fields or any(button == name for button, _ in form.buttons):
                return form
        raise KeyError(name)


async def approve_device_code(
    verification_uri: str,
    user_code: str,
    username: str,
    password: str,
    *,
    ca_file: Path | str,
    decline: bool = False,
) -> None:
    """Be the person who got a device code: open `verification_uri`, enter `user_code`, sign in, then Accept (or
    Decline) the permissions, following the pages and forms as a browser does (one fresh cookie jar). Returns once
    the provider shows that the sign-in is done (or declined); raises DeviceApprovalError at the first page that is
    not the expected next one, with what it said."""
    context = ssl.create_default_context(cafile=str(ca_file))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=context), cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as session:
        url, page = await _open(session, "GET", verification_uri, None)
        _expect(page, "code", url, "the code form")
        form = page.form_with("user_code")
        url, page = await _open(session, "POST", urljoin(url, form.action), {**form.fields, "user_code": user_code})
        if page.name == "code":
            raise DeviceApprovalError(f"the code {user_code} was refused: {page.alert}", "code_refused", page.alert)
        _expect(page, "signin", url, "the sign-in form")
        form = page.form_with("password")
        url, page = await _open(
            session, "POST", urljoin(url, form.action), {**form.fields, "login": username, "password": password}
        )
        if page.name == "signin":
            raise DeviceApprovalError(f"the sign-in of {username} was refused: {page.alert}", "sign_in_refused",
                                      page.alert)  # fmt: skip
        _expect(page, "consent", url, "the permissions page")
        form = page.form_with("decision")
        decision = "decline" if decline else "accept"
        if ("decision", decision) not in form.buttons:
            raise DeviceApprovalError(f"the permissions page at {url} has no {decision} button", "unexpected_page")
        url, page = await _open(session, "POST", urljoin(url, form.action), {**form.fields, "decision": decision})
        _expect(page, "declined" if decline else "done", url, "the end of the sign-in")


async def _open(
    session: aiohttp.ClientSession, method: str, url: str, form: dict[str, str] | None
) -> tuple[str, _Page]:
    """Follow redirects like a browser until a page; any status but 200 is not a page a person should see."""
    for _ in range(10):
        async with session.request(method, url, data=form, allow_redirects=False) as response:
            if response.status in (301, 302, 303, 307, 308):
                method, url, form = "GET", urljoin(url, response.headers["Location"]), None
                continue
            body = await response.text()
            if response.status != 200:
                raise DeviceApprovalError(f"{method} {url} answered {response.status}: {body[:300]}", "unexpected_page")
            return url, _Page(body)
    raise DeviceApprovalError(f"too many redirects from {url}", "unexpected_page")


def _expect(page: _Page, name: str, url: str, what: str) -> None:
    if page.name != name:
        said = page.alert or " ".join(" ".join(page.text).split())[:300]
        raise DeviceApprovalError(f"expected {what} at {url}, got the {page.name or 'unknown'} page: {said}",
                                  "unexpected_page", said)  # fmt: skip


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

    async def admin_get(self, admin_token: str, path: str) -> dict[str, Any]:
        """GET a loopback admin route (counters)."""
        headers = {"Authorization": f"Bearer {admin_token}"}
        async with self._session() as session, session.get(f"{self.base_url}/_admin/{path}", headers=headers) as got:
            result: dict[str, Any] = await got.json(content_type=None)
            if got.status != 200:
                raise OidcFlowError(f"admin {path} answered {got.status}: {result}")
            return result

    async def admin(self, admin_token: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST to the provider's loopback admin routes (key rotation, redirect URIs, revoking an account's grants)."""
        headers = {"Authorization": f"Bearer {admin_token}"}
        async with (
            self._session() as session,
            session.post(f"{self.base_url}/_admin/{path}", json=body or {}, headers=headers) as response,
        ):
            result: dict[str, Any] = await response.json(content_type=None)
            if response.status != 200:
                raise OidcFlowError(f"admin {path} answered {response.status}: {result}")
            return result
