"""The local OpenID Connect provider: a real one (npm `oidc-provider`, devstack/oidc/provider.mjs) shaped like
Microsoft Entra ID, so the API's token validation, the dashboard's MSAL sign-in and the tests run against a real
issuer, JWKS and key rotation instead of tokens we make ourselves.

    async with LocalOidcProvider(tls) as oidc:
        oidc.authority                      # https://127.0.0.1:PORT/{home tenant}/v2.0 (the home issuer)
        token = await oidc.user_token("berlin.operator@automotive.example")
        await oidc.rotate_keys()            # new key signs; the old one stays published
        await oidc.retire_old_keys()        # the old one is gone from the JWKS

The car sign-in (device authorization grant, RFC 8628) as Entra serves it: MSAL's PublicClientApplication with
`oidc.signin_client_id` and authority `oidc.common_authority` (or /organizations, /consumers, /{tenant}), a person
approving at the verification page with `approve_device_code`, and `await oidc.revoke_grants(username)` for what a
password reset does. Its Graph access tokens verify against `oidc.graph_jwks_url`.

The identities are in devstack/oidc/seed.json (`oidc.seed`). HTTPS only (MSAL.js refuses http authorities), with
the stack's throwaway CA from devstack/tls.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from devstack.oidc.client import (
    TOOL_REDIRECT_URI,
    DeviceApprovalError,
    OidcClient,
    OidcFlowError,
    Pkce,
    TokenSet,
    approve_device_code,
)
from devstack.oidc.seed import SEED_PATH, Seed, SeedAccount, SeedTenant, home_tenant, load_seed
from devstack.servers import ServerError, port_in_use
from devstack.tls import TlsFiles, generate

__all__ = [
    "GRAPH_RESOURCE",
    "STATE_FILE",
    "DeviceApprovalError",
    "LocalOidcProvider",
    "OidcClient",
    "OidcFlowError",
    "Pkce",
    "TokenSet",
    "approve_device_code",
    "load_seed",
]

SCRIPT: Final = Path(__file__).with_name("provider.mjs")
# Where a long-running stack (make dev) tells `python -m devstack.oidc token ...` how to reach its provider.
STATE_FILE: Final = Path(tempfile.gettempdir()) / "automotive-cloud-oidc.json"
START_TIMEOUT_SECONDS: Final = 60.0
GRAPH_RESOURCE: Final = "https://graph.microsoft.com"  # the aud of the delegated Graph tokens


class LocalOidcProvider:
    """Runs provider.mjs on 127.0.0.1 (`port` 0 = a free one) until the context exits.

    `redirect_uris` are the dashboard's (more can be added later with `add_redirect_uris`, e.g. once the function
    host's port is known); the token helpers' own loopback redirect URI is always registered.
    `device_code_ttl_seconds` (Entra: 900) and `device_poll_interval_seconds` (Entra: 5) shape the device flow;
    tests shorten them so that an expiry or the next poll does not take minutes.
    """

    def __init__(
        self,
        tls: TlsFiles | None = None,
        *,
        port: int = 0,
        redirect_uris: Sequence[str] = (),
        seed_path: Path = SEED_PATH,
        state_file: Path | None = None,
        device_code_ttl_seconds: int = 900,
        device_poll_interval_seconds: int = 5,
        graph_token_ttl_seconds: int = 3600,
    ) -> None:
        if device_code_ttl_seconds < 1 or device_poll_interval_seconds < 1:
            raise ValueError("the device code's lifetime and poll interval are whole seconds >= 1")
        self.device_code_ttl_seconds = device_code_ttl_seconds
        self.device_poll_interval_seconds = device_poll_interval_seconds
        self.graph_token_ttl_seconds = graph_token_ttl_seconds  # short ones make every Graph call refresh (tests)
        self.seed: Seed = load_seed(seed_path)
        self._seed_path = seed_path
        self._tls = tls
        self._port = port
        self._redirect_uris = [TOOL_REDIRECT_URI, *redirect_uris]
        self._state_file = state_file
        self._admin_token = secrets.token_urlsafe(32)
        self._workdir: Path | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._client: OidcClient | None = None
        self.base_url = ""
        self.log_file: Path | None = None

    # ---- what the stack and the tests read ----

    @property
    def home_tenant(self) -> str:
        return home_tenant(self.seed)["id"]

    @property
    def tenants(self) -> list[SeedTenant]:
        return list(self.seed["tenants"])

    def issuer(self, tenant_id: str) -> str:
        return f"{self.base_url}/{tenant_id}/v2.0"

    @property
    def authority(self) -> str:
        """The home tenant's issuer; MSAL accepts it as authority (it ends in v2.0/, so no second v2.0 is added)."""
        return self.issuer(self.home_tenant)

    @property
    def msal_authority(self) -> str:
        """The home tenant as MSAL wants it, the shape of https://login.microsoftonline.com/{tenant}: MSAL adds
        /v2.0/.well-known/openid-configuration itself (MSAL.js also accepts `authority`)."""
        return f"{self.base_url}/{self.home_tenant}"

    def config_url(self, tenant_id: str) -> str:
        return f"{self.issuer(tenant_id)}/.well-known/openid-configuration"

    @property
    def common_config_url(self) -> str:
        return f"{self.base_url}/common/v2.0/.well-known/openid-configuration"

    @property
    def ca_file(self) -> Path:
        assert self._tls is not None, "the provider is not running"
        return self._tls.ca_cert

    @property
    def api_client_id(self) -> str:
        return self.seed["api"]["clientId"]

    @property
    def api_scope(self) -> str:
        return f"api://{self.api_client_id}/Fleet.Access"

    @property
    def dashboard_client_id(self) -> str:
        return self.seed["dashboard"]["clientId"]

    # ---- the car sign-in (device flow, delegated Graph) ----

    @property
    def common_authority(self) -> str:
        """MSAL's authority for any Microsoft account, work, school or personal: https://127.0.0.1:PORT/common."""
        return f"{self.base_url}/common"

    @property
    def signin_client_id(self) -> str:
        """The car sign-in app registration (public client, device code)."""
        return self.seed["signinClient"]["clientId"]

    @property
    def graph_jwks_url(self) -> str:
        """The keys of the delegated Graph tokens (the provider's one key set, Entra's common JWKS address)."""
        return f"{self.base_url}/common/discovery/v2.0/keys"

    @property
    def device_login_url(self) -> str:
        """The verification page a person opens (Entra's is https://microsoft.com/devicelogin)."""
        return f"{self.base_url}/devicelogin"

    @property
    def accounts(self) -> list[SeedAccount]:
        return list(self.seed["accounts"])

    async def revoke_grants(self, username: str) -> int:
        """Every grant and refresh token of the account stops working, as after a password reset in Entra: their
        refresh answers invalid_grant (AADSTS50173). Returns how many grants were revoked."""
        result = await self.client.admin(self._admin_token, "revoke-grants", {"username": username})
        return int(result["revokedGrants"])

    async def token_requests(self) -> dict[str, int]:
        """How many token requests the sign-in client made, by "<grant type> <username>" (device code polls,
        refreshes): tests see that an account whose refresh was refused is not asked about again."""
        return {str(k): int(v) for k, v in (await self.client.admin_get(self._admin_token, "token-requests")).items()}

    @property
    def client(self) -> OidcClient:
        assert self._client is not None, "the provider is not running"
        return self._client

    # ---- tokens and keys ----

    async def user_token(self, username: str) -> str:
        """An access token for the API, from the real authorization code + PKCE flow with the seeded password."""
        return await self.client.user_token(username)

    async def app_token(self, client_id: str) -> str:
        """An app-only access token (client credentials) for a seeded daemon client."""
        return await self.client.app_token(client_id)

    async def rotate_keys(self) -> str:
        """A new signing key signs from now on; the previous ones stay in the JWKS. Returns the new `kid`."""
        result = await self.client.admin(self._admin_token, "keys/rotate")
        return str(result["active"])

    async def retire_old_keys(self) -> list[str]:
        """Only the active key stays published; tokens signed with the others no longer verify. Returns the JWKS
        kids."""
        result = await self.client.admin(self._admin_token, "keys/retire")
        return [str(kid) for kid in result["published"]]

    async def add_redirect_uris(self, *uris: str) -> None:
        await self.client.admin(self._admin_token, "redirect-uris", {"add": list(uris)})

    # ---- the process ----

    async def __aenter__(self) -> LocalOidcProvider:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _start(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise ServerError("node is not on PATH (the local OpenID Connect provider needs Node 20+)")
        if not (SCRIPT.parents[2] / "node_modules" / "oidc-provider").exists():
            raise ServerError("node_modules/oidc-provider is missing: run `npm ci` (make setup does)")
        if self._port and port_in_use(self._port):
            raise ServerError(f"local OpenID Connect provider: port {self._port} is already in use")
        self._workdir = Path(tempfile.mkdtemp(prefix="devstack-oidc-"))
        if self._tls is None:
            self._tls = generate(self._workdir / "tls", [])
        self.log_file = self._workdir / "oidc-provider.log"
        argv = [str(SCRIPT), "--port", str(self._port), "--cert", str(self._tls.server_cert),
                "--key", str(self._tls.server_key), "--seed", str(self._seed_path), "--exit-with-stdin"]  # fmt: skip
        for uri in self._redirect_uris:
            argv += ["--redirect-uri", uri]
        argv += ["--device-code-ttl", str(self.device_code_ttl_seconds),
                 "--device-poll-interval", str(self.device_poll_interval_seconds),
                 "--graph-token-ttl", str(self.graph_token_ttl_seconds)]  # fmt: skip
        env = {**os.environ, "OIDC_ADMIN_TOKEN": self._admin_token}
        with self.log_file.open("wb") as out:
            self._process = await asyncio.create_subprocess_exec(
                node, *argv, stdin=asyncio.subprocess.PIPE, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        port = await self._wait_ready()
        self.base_url = f"https://127.0.0.1:{port}"
        self._client = OidcClient(self.base_url, self._tls.ca_cert, self.seed)
        if self._state_file is not None:
            self._write_state()

    async def _wait_ready(self) -> int:
        """Waits for the provider's ready line. The log is read once more after the deadline: a test loop that was
        busy elsewhere for the whole wait must not turn a provider that did start into a failure."""
        assert self._process is not None
        assert self.log_file is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            port = self._ready_port()
            if port is not None:
                return port
            if self._process.returncode is not None or loop.time() - started > START_TIMEOUT_SECONDS:
                break
            await asyncio.sleep(0.05)
        state = "running" if self._process.returncode is None else f"exited with {self._process.returncode}"
        output = self.log_file.read_text(errors="replace")[-2000:]
        raise ServerError(
            f"the local OpenID Connect provider did not start within {loop.time() - started:.1f}s ({state}):\n{output}"
        )

    def _ready_port(self) -> int | None:
        assert self.log_file is not None
        for line in self.log_file.read_text(errors="replace").splitlines():
            if line.startswith('{"ready"'):
                port: int = json.loads(line)["port"]
                return port
        return None

    def _write_state(self) -> None:
        assert self._state_file is not None
        assert self._tls is not None
        state: dict[str, Any] = {
            "baseUrl": self.base_url,
            "caFile": str(self._tls.ca_cert),
            "adminToken": self._admin_token,
            "seed": str(self._seed_path),
            "pid": os.getpid(),
        }
        self._state_file.write_text(json.dumps(state))
        self._state_file.chmod(0o600)  # it holds the admin token

    async def __aexit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if self._state_file is not None:
            with contextlib.suppress(FileNotFoundError):
                if json.loads(self._state_file.read_text()).get("pid") == os.getpid():
                    self._state_file.unlink()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
