"""A local Azure Key Vault, keys only: the wire protocol the app's azure-keyvault-keys client speaks, over https with
the stack's throwaway CA, so the token vault (shared/accounts/keys.py) runs its Azure code path unchanged.

    async with LocalKeyVault(tls) as vault:
        vault.key_id()                   # https://127.0.0.1:PORT/keys/token-key (versionless): TOKEN_KEY_ID
        str(vault.ca_file)               # AUTH_CA_BUNDLE
        new = vault.rotate_key()         # a new current version; older versions still unwrap
        vault.set_enabled(False)         # a disabled key: 403 Forbidden (KeyDisabled) on unwrap, as Key Vault

Served, as Key Vault serves them (REST API 7.x / 2025-07-01, `api-version` required):
- `GET /keys/{name}[/{version}]`: the key bundle (public JWK, attributes), the current version when none is given;
- `POST /keys/{name}/{version}/wrapkey` and `/unwrapkey` with `{"alg": "RSA-OAEP-256" | "RSA-OAEP", "value": b64url}`
  → `{"kid": <versioned id>, "value": b64url}`.
Every request needs a bearer token; without one the answer is Key Vault's 401 challenge
(`WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>", resource="https://vault.azure.net"`)
that the SDK answers by asking its credential for `https://vault.azure.net/.default`. Errors are Key Vault's JSON,
`{"error": {"code", "message"[, "innererror"]}}`: unknown key or version 404 KeyNotFound, a disabled key 403
Forbidden / KeyDisabled on unwrap, bad parameters or a value that does not decrypt 400 BadParameter.

LOCAL LIMITS (where it cannot be Key Vault): it cannot validate an Entra token; it accepts only the token
`shared.accounts.keys.LocalVaultCredential` makes for the scope its challenge names (`local-keyvault:<scope>`), so a
wrong scope still fails as a wrong audience does. A disabled key still answers GET and wrapkey (the public-key
operations; Key Vault refuses only the private-key ones, azure-sdk-for-python issue 45342); expiry dates (`nbf`,
`exp`), rotation policies, key creation over REST, soft delete and RBAC are not modelled; keys are created with the
`create_key` / `rotate_key` methods instead. The message texts of the 400 answers for a missing api-version or an
unsupported algorithm are ours (the codes are Key Vault's).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from devstack.tls import TlsFiles, generate
from shared.accounts.keys import LOCAL_TOKEN_PREFIX

if TYPE_CHECKING:
    from types import TracebackType

RESOURCE: Final = "https://vault.azure.net"
SCOPE: Final = f"{RESOURCE}/.default"
DEFAULT_KEY: Final = "token-key"
# The versions of the keys REST API (azure-keyvault-keys' ApiVersion); anything else is a 400, as in Key Vault.
API_VERSIONS: Final = frozenset({"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01"})
KEY_OPS: Final = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
_PRIVATE_OPERATIONS: Final = frozenset({"unwrapkey"})


@dataclass
class KeyVersion:
    version: str
    private_key: rsa.RSAPrivateKey
    created: int
    enabled: bool = True


@dataclass
class LocalKey:
    name: str
    versions: dict[str, KeyVersion] = field(default_factory=dict)
    current: str = ""


class LocalKeyVault:
    """The stand-in on 127.0.0.1 (`port` 0 = a free one) in the caller's event loop, with one RSA key (`key_name`,
    `key_size` bits, 3072 as infra/ creates it) made at start. `operations` records each answered request as
    `(method-or-operation, name, version, status)` for tests that count Key Vault calls."""

    def __init__(
        self,
        tls: TlsFiles | None = None,
        *,
        port: int = 0,
        key_name: str = DEFAULT_KEY,
        key_size: int = 3072,
        tenant_id: str = "00000000-0000-0000-0000-000000000000",
    ) -> None:
        self._tls = tls
        self._port = port
        self._key_name = key_name
        self._key_size = key_size
        self.tenant_id = tenant_id
        self.keys: dict[str, LocalKey] = {}
        self.operations: list[tuple[str, str, str, int]] = []
        self._runner: web.AppRunner | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.url = ""

    # ---- what the stack and the tests read ----

    @property
    def ca_file(self) -> Path:
        assert self._tls is not None, "the local Key Vault is not running"
        return self._tls.ca_cert

    def key_id(self, name: str | None = None, version: str | None = None) -> str:
        """The key identifier as Key Vault writes it: versionless unless a version is given."""
        assert self.url, "the local Key Vault is not running"
        return f"{self.url}/keys/{name or self._key_name}" + (f"/{version}" if version else "")

    def current_version(self, name: str | None = None) -> str:
        return self.keys[(name or self._key_name).lower()].current

    # ---- what an operator does in the portal ----

    def create_key(self, name: str | None = None, key_size: int | None = None) -> str:
        """A new RSA key, or a new version of an existing one (what rotation does); returns the version."""
        name = name or self._key_name
        key = self.keys.setdefault(name.lower(), LocalKey(name))
        version = secrets.token_hex(16)  # Key Vault versions: 32 hex digits
        private = rsa.generate_private_key(public_exponent=65537, key_size=key_size or self._key_size)
        key.versions[version] = KeyVersion(version, private, int(time.time()))
        key.current = version
        return version

    def rotate_key(self, name: str | None = None) -> str:
        """A new current version of the key; the older versions stay and still unwrap."""
        return self.create_key(name)

    def set_enabled(self, enabled: bool, name: str | None = None, version: str | None = None) -> None:
        """Disable or enable one version (default: the current one)."""
        key = self.keys[(name or self._key_name).lower()]
        key.versions[version or key.current].enabled = enabled

    # ---- the server ----

    async def __aenter__(self) -> LocalKeyVault:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> str:
        """Listen on https://127.0.0.1:PORT with a fresh key; returns the vault URL."""
        if self._tls is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="devstack-keyvault-")
            self._tls = generate(Path(self._workdir.name), [])
        if not self.keys:
            self.create_key()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._tls.server_cert, self._tls.server_key)
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, ssl_context=context)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"https://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
            self._tls = None

    async def _handle(self, request: web.Request) -> web.Response:
        response, operation, name, version = await self._answer(request)
        self.operations.append((operation, name, version, response.status))
        return response

    async def _answer(self, request: web.Request) -> tuple[web.Response, str, str, str]:
        segments = request.path.split("/")[1:]  # "/keys/n//wrapkey" → ["keys", "n", "", "wrapkey"]
        operation = request.method
        if len(segments) == 4 and request.method == "POST":
            operation = segments[3].lower()
        name = segments[1] if len(segments) > 1 else ""
        version = segments[2] if len(segments) > 2 else ""
        auth = self._unauthorized(request)
        if auth is not None:
            return auth, operation, name, version
        if request.query.get("api-version") not in API_VERSIONS:
            bad_version = _error(400, "BadParameter", "The api-version query parameter is missing or not supported.")
            return bad_version, operation, name, version
        route_ok = segments[:1] == ["keys"] and (
            (request.method == "GET" and 2 <= len(segments) <= 3 and name)
            or (request.method == "POST" and len(segments) == 4 and operation in ("wrapkey", "unwrapkey") and name)
        )
        if not route_ok:
            return _error(404, "NotFound", "The requested operation is not supported here."), operation, name, version
        key = self.keys.get(name.lower())
        found = key.versions.get(version.lower() or key.current) if key is not None else None
        if key is None or found is None:
            shown = f"{name}/{version}" if version else name
            return _key_not_found(shown), operation, name, version
        if request.method == "GET":
            return web.json_response(self._bundle(key, found)), operation, name, version
        return await self._crypto(request, operation, key, found), operation, name, found.version

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        """Key Vault's challenge for a request without a token; 401 too for a token not for its resource."""
        header = request.headers.get("Authorization", "")
        if header == f"Bearer {LOCAL_TOKEN_PREFIX}{SCOPE}":
            return None
        challenge = f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", resource="{RESOURCE}"'
        message = (
            "AKV10000: Request is missing a Bearer or PoP token."
            if not header
            else "AKV10022: Invalid audience. (LOCAL: only the local credential's token for the vault's scope)"
        )
        response = _error(401, "Unauthorized", message)
        response.headers["WWW-Authenticate"] = challenge
        return response

    def _bundle(self, key: LocalKey, version: KeyVersion) -> dict[str, Any]:
        numbers = version.private_key.public_key().public_numbers()
        return {
            "key": {
                "kid": self.key_id(key.name, version.version),
                "kty": "RSA",
                "key_ops": KEY_OPS,
                "n": _b64(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
                "e": _b64(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            },
            "attributes": {
                "enabled": version.enabled,
                "created": version.created,
                "updated": version.created,
                "recoveryLevel": "Recoverable",
                "recoverableDays": 90,
                "exportable": False,
            },
            "tags": {},
        }

    async def _crypto(self, request: web.Request, operation: str, key: LocalKey, version: KeyVersion) -> web.Response:
        try:
            body = json.loads(await request.read() or b"null")
        except ValueError:
            return _error(400, "BadParameter", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return _error(400, "BadParameter", "Property 'value' is required.")
        algorithm = body.get("alg")
        if algorithm not in ("RSA-OAEP-256", "RSA-OAEP"):
            return _error(400, "BadParameter", f"Algorithm {str(algorithm)[:40]!r} is not supported for this key.")
        value = _unb64(body.get("value"))
        if value is None:
            return _error(400, "BadParameter", "Content of 'value' is not base64url.")
        if operation in _PRIVATE_OPERATIONS and not version.enabled:
            refused = f"Operation {_OPERATION_NAMES[operation]} is not allowed on a disabled key."
            return _error(403, "Forbidden", refused, inner="KeyDisabled")
        # RSA-OAEP is OAEP with SHA-1, as Key Vault still serves it (not recommended; the app uses RSA-OAEP-256)
        hash_algorithm: hashes.HashAlgorithm = hashes.SHA256() if algorithm == "RSA-OAEP-256" else hashes.SHA1()  # noqa: S303
        oaep = padding.OAEP(mgf=padding.MGF1(hash_algorithm), algorithm=hash_algorithm, label=None)
        kid = self.key_id(key.name, version.version)
        if operation == "wrapkey":
            if len(value) > version.private_key.key_size // 8 - 2 * hash_algorithm.digest_size - 2:
                return _error(400, "BadParameter", "The value is too long for this key and algorithm.")
            return web.json_response({"kid": kid, "value": _b64(version.private_key.public_key().encrypt(value, oaep))})
        try:
            plain = version.private_key.decrypt(value, oaep)
        except ValueError:
            return _error(400, "BadParameter", "Unable to decrypt specified value with this key.")
        return web.json_response({"kid": kid, "value": _b64(plain)})


_OPERATION_NAMES: Final = {"wrapkey": "wrapKey", "unwrapkey": "unwrapKey"}


def _error(status: int, code: str, message: str, inner: str | None = None) -> web.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return web.json_response({"error": error}, status=status)


def _key_not_found(shown: str) -> web.Response:
    return _error(
        404,
        "KeyNotFound",
        f"A key with (name/id) {shown[:200]} was not found in this key vault. If you recently deleted this key you "
        "may be able to recover it using the correct recovery command.",
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(value: object) -> bytes | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if _b64(data) == value.rstrip("=") else None
