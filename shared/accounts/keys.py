"""The key that wraps the data keys of drivers' sealed token caches: Azure Key Vault, reached with the app's managed
identity, behind one small interface (`KeyWrapper`) so the envelope code (shared/accounts/vault.py) does not know
where the key lives.

TOKEN_KEY_ID names the key: `https://<vault>.vault.azure.net/keys/<name>[/<version>]` (or the vault host of another
Azure cloud). The managed identity's Key Vault token goes to that host, so it is vetted as GRAPH_BASE_URL is
(shared/graph/endpoints.py): a Key Vault host of an Azure cloud, https, the default port, `/keys/<name>[/<version>]`
and nothing else; or a loopback address, the local stack's Key Vault stand-in (devstack/keyvault). Anything else is
a ConfigurationError before a client or a credential exists, so no token is ever sent to a look-alike host.

Both run the same SDK client (azure-keyvault-keys' async CryptographyClient, RSA-OAEP-256), imported on first use.
Only two things differ for a loopback vault, both LOCAL ONLY and never taken for any other host: the credential is
`LocalVaultCredential` (the stand-in checks the scope the SDK asks for after its challenge, it cannot check an Entra
token), and the SDK's check that the challenge's resource (`https://vault.azure.net`) matches the request's host is
off, since 127.0.0.1 is no subdomain of vault.azure.net. The stand-in's CA comes from AUTH_CA_BUNDLE.

Rotation: a versionless TOKEN_KEY_ID wraps with the key's current version, looked up again every
`refresh_seconds`; each envelope records the exact version that wrapped its data key, and unwrapping goes to that
version, so caches sealed before a rotation stay readable as long as the old version is enabled.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from shared.accounts.sealing import KeyUnavailableError, SealedDataError
from shared.errors import ConfigurationError, FleetError

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken
    from azure.keyvault.keys.crypto.aio import CryptographyClient
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

log = logging.getLogger(__name__)

WRAP_ALGORITHM: Final = "RSA-OAEP-256"
KEY_SETTING: Final = "TOKEN_KEY_ID"


@dataclass(frozen=True, slots=True)
class VaultCloud:
    """One Azure cloud's Key Vault (or Managed HSM) DNS suffix and the Entra authority of its tokens."""

    suffix: str
    authority: str


# The allow-list (Key Vault DNS suffixes per cloud, from the Key Vault and Managed HSM docs).
VAULT_CLOUDS: Final[tuple[VaultCloud, ...]] = (
    VaultCloud("vault.azure.net", "login.microsoftonline.com"),
    VaultCloud("vault.usgovcloudapi.net", "login.microsoftonline.us"),
    VaultCloud("vault.azure.cn", "login.chinacloudapi.cn"),
    VaultCloud("managedhsm.azure.net", "login.microsoftonline.com"),
)
_BY_SUFFIX: Final = {cloud.suffix: cloud for cloud in VAULT_CLOUDS}
_NAME: Final = r"(?P<name>[A-Za-z0-9-]{1,127})"
_VERSION: Final = r"(?:/(?P<version>[0-9a-fA-F]{32}))?"
# Whole-string matches: no userinfo, no port but 443 (cloud), no query, fragment, backslash or extra path.
_CLOUD_KEY: Final = re.compile(
    r"https://(?P<vault>[a-z][a-z0-9-]{1,22}[a-z0-9])\.(?P<suffix>[a-z.]+)(?::443)?/keys/" + _NAME + _VERSION + "/?",
    re.ASCII | re.IGNORECASE,
)
_LOOPBACK_KEY: Final = re.compile(
    r"https://(?P<host>localhost|[0-9.]+|\[[0-9a-fA-F:]+\])(?::(?P<port>[0-9]{1,5}))?/keys/" + _NAME + _VERSION + "/?",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A vetted Key Vault key: the vault's URL, the key's name and, when pinned, its version."""

    vault_url: str  # https://<host>[:port], no trailing slash
    name: str
    version: str | None
    cloud: VaultCloud | None  # None: a loopback stand-in (local stack, tests)

    @property
    def key_id(self) -> str:
        """The key identifier as Key Vault writes it (versionless when no version is pinned)."""
        return f"{self.vault_url}/keys/{self.name}" + (f"/{self.version}" if self.version else "")

    def same_key(self, other: KeyRef) -> bool:
        """Same vault and same key (names are case-insensitive in Key Vault), whatever the version."""
        return self.vault_url.lower() == other.vault_url.lower() and self.name.lower() == other.name.lower()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_key_id(raw: str) -> KeyRef | None:
    """The key a key identifier names, or None when it is not on the allow-list (no logging: envelopes call it)."""
    loopback = _LOOPBACK_KEY.fullmatch(raw)
    if loopback and _is_loopback(loopback["host"]):
        port = loopback["port"]
        if port is not None and not 0 < int(port) < 65536:
            return None
        vault_url = f"https://{loopback['host']}" + (f":{int(port)}" if port else "")
        return KeyRef(vault_url, loopback["name"], _lower(loopback["version"]), None)
    match = _CLOUD_KEY.fullmatch(raw)
    cloud = _BY_SUFFIX.get(match["suffix"].lower()) if match else None
    if match is None or cloud is None:
        return None
    # Host names are case-insensitive; the key name is kept as written (Key Vault keeps its case).
    return KeyRef(f"https://{match['vault'].lower()}.{cloud.suffix}", match["name"], _lower(match["version"]), cloud)


def _lower(version: str | None) -> str | None:
    return version.lower() if version else None


def token_key(raw: str | None) -> KeyRef:
    """Vet TOKEN_KEY_ID. Unset, or anything off the allow-list, is logged once (escaped, bounded) and raised as
    ConfigurationError before any client or credential exists."""
    if not raw:
        raise ConfigurationError(
            f"{KEY_SETTING} is not set: the Key Vault key that wraps drivers' token caches "
            "(https://<vault>.vault.azure.net/keys/<name>)"
        )
    ref = parse_key_id(raw.strip())
    if ref is None:
        allowed = ", ".join(f"*.{c.suffix}" for c in VAULT_CLOUDS)
        message = (
            f"{KEY_SETTING} {raw[:160]!r} is not a Key Vault key identifier: use https://<vault>.<suffix>/keys/<name>"
            f"[/<version>] with a suffix of {allowed}, or a loopback https URL for the local stand-in; "
            "no Key Vault request is sent"
        )
        log.error("%s", message)
        raise ConfigurationError(message)
    return ref


# ---- the interface the envelope code uses ----


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key wrapped by one exact key version."""

    key_id: str  # versioned key identifier
    algorithm: str
    wrapped: bytes


class KeyWrapper(Protocol):
    """Wraps fresh data keys with the current key version, unwraps with the version an envelope names.

    `unwrap` raises SealedDataError when the wrapped key can never be opened (not ours, another key or version,
    tampered: Key Vault's 400 and 404) and KeyUnavailableError when Key Vault cannot answer now (unreachable,
    throttled, 5xx, 401/403 including a disabled key: an operator may re-enable it)."""

    def owns(self, key_id: str) -> bool:
        """Whether `key_id` (from an envelope) is a version of this wrapper's key; nothing else is ever sent."""
        ...

    async def wrap(self, data_key: bytes) -> WrappedKey: ...

    async def unwrap(self, key_id: str, algorithm: str, wrapped: bytes) -> bytes: ...

    async def close(self) -> None: ...


# ---- Azure Key Vault (and the local stand-in), through azure-keyvault-keys ----

LOCAL_TOKEN_PREFIX: Final = "local-keyvault:"  # noqa: S105 - a label, not a secret (LOCAL ONLY)


class LocalVaultCredential:
    """LOCAL ONLY: the credential for a loopback Key Vault stand-in. Its token is `local-keyvault:<scope>`, which
    the stand-in (devstack/keyvault) accepts for exactly the scope its challenge names; it is not an Entra token
    and `KeyVaultKeyWrapper` never builds it for a non-loopback vault."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.core.credentials import AccessToken

        return AccessToken(LOCAL_TOKEN_PREFIX + " ".join(scopes), int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> LocalVaultCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None


class KeyVaultKeyWrapper:
    """RSA-OAEP-256 wrap/unwrap with a Key Vault key through the async CryptographyClient.

    Wrapping uses the current version's public key, fetched with `get_key` (keys/read; the SDK then wraps locally,
    as it does for any RSA key whose public part it has) and looked up again every `refresh_seconds` so a rotation
    is picked up; unwrapping is always Key Vault's (`POST /keys/<name>/<version>/unwrapkey`, keys/unwrapKey): the
    private key never leaves the vault. One client per key version, kept until `close()`."""

    def __init__(
        self,
        key: KeyRef,
        credential: Any,
        *,
        connection_verify: bool | str = True,
        refresh_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self._credential = credential
        self._client_options: dict[str, Any] = {}
        if key.cloud is None:  # LOCAL ONLY (loopback): see the module docstring
            self._client_options = {"verify_challenge_resource": False, "connection_verify": connection_verify}
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._current: tuple[float, CryptographyClient] | None = None
        self._by_version: dict[str, CryptographyClient] = {}
        self._retired: list[Any] = []

    @classmethod
    def from_key_id(
        cls, raw: str | None, client_id: str | None = None, ca_bundle: str | None = None
    ) -> KeyVaultKeyWrapper:
        """Vet TOKEN_KEY_ID first (shared/accounts/keys.py `token_key`), then the credential: the managed identity
        (`DefaultAzureCredential` with AZURE_CLIENT_ID, the authority of the vault's cloud) for an Azure vault,
        `LocalVaultCredential` and the CA in `ca_bundle` for a loopback stand-in."""
        key = token_key(raw)
        credential: Any
        if key.cloud is None:
            credential = LocalVaultCredential()
            return cls(key, credential, connection_verify=ca_bundle or True)
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential(managed_identity_client_id=client_id, authority=key.cloud.authority)
        return cls(key, credential)

    def owns(self, key_id: str) -> bool:
        ref = parse_key_id(key_id) if isinstance(key_id, str) else None
        return ref is not None and ref.version is not None and ref.same_key(self.key)

    async def wrap(self, data_key: bytes) -> WrappedKey:
        from azure.keyvault.keys.crypto import KeyWrapAlgorithm

        client = await self._current_client()
        try:
            result = await client.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, data_key)
        except Exception as exc:
            raise _vault_error(exc, f"wrap with {self.key.key_id}", unwrapping=False) from exc
        ref = parse_key_id(result.key_id or "")
        if ref is None or ref.version is None or not ref.same_key(self.key):
            raise KeyUnavailableError(f"wrap with {self.key.key_id}: Key Vault named no key version")
        return WrappedKey(ref.key_id, WRAP_ALGORITHM, result.encrypted_key)

    async def unwrap(self, key_id: str, algorithm: str, wrapped: bytes) -> bytes:
        from azure.keyvault.keys.crypto import KeyWrapAlgorithm

        ref = parse_key_id(key_id)
        if ref is None or ref.version is None or not ref.same_key(self.key) or algorithm != WRAP_ALGORITHM:
            raise SealedDataError("the data key was wrapped by another key or algorithm")
        client = self._version_client(ref)
        try:
            result = await client.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
        except Exception as exc:
            raise _vault_error(exc, f"unwrap with {ref.key_id}", unwrapping=True) from exc
        return bytes(result.key)

    async def _current_client(self) -> CryptographyClient:
        now = self._clock()
        if self._current is not None and now - self._current[0] < self._refresh_seconds:
            return self._current[1]
        from azure.keyvault.keys.aio import KeyClient
        from azure.keyvault.keys.crypto.aio import CryptographyClient

        keys = KeyClient(self.key.vault_url, self._credential, **self._client_options)
        try:
            key = await keys.get_key(self.key.name, self.key.version)
        except Exception as exc:
            raise _vault_error(exc, f"get {self.key.key_id}", unwrapping=False) from exc
        finally:
            await keys.close()
        if key.properties.enabled is False:
            raise KeyUnavailableError(f"{key.id} is disabled: no new token cache can be sealed")
        client = CryptographyClient(key, self._credential, **self._client_options)
        ref = parse_key_id(key.id)
        if ref is None or ref.version is None or not ref.same_key(self.key):
            await client.close()
            raise KeyUnavailableError(f"get {self.key.key_id}: Key Vault answered for another key")
        if self._current is not None:
            self._retired.append(self._current[1])
        self._current = (now, client)
        # Unwrapping with the current version needs no second lookup: Key Vault does it with this client.
        self._by_version.setdefault(ref.version, client)
        return client

    def _version_client(self, ref: KeyRef) -> CryptographyClient:
        assert ref.version is not None
        client = self._by_version.get(ref.version)
        if client is None:
            from azure.keyvault.keys.crypto.aio import CryptographyClient

            client = CryptographyClient(
                f"{self.key.vault_url}/keys/{self.key.name}/{ref.version}", self._credential, **self._client_options
            )
            self._by_version[ref.version] = client
        return client

    async def close(self) -> None:
        clients = {id(c): c for c in [*self._by_version.values(), *self._retired]}
        if self._current is not None:
            clients[id(self._current[1])] = self._current[1]
        self._current, self._by_version, self._retired = None, {}, []
        for client in clients.values():
            await client.close()
        close = getattr(self._credential, "close", None)
        if close is not None:
            await close()


def _vault_error(exc: Exception, operation: str, *, unwrapping: bool) -> FleetError:
    """A Key Vault answer as SealedDataError (this envelope can never be opened: 400 bad ciphertext, 404 no such
    key version, when unwrapping) or KeyUnavailableError (everything about the vault rather than the envelope:
    no answer, 401/403 including a disabled key, 408, 429, 5xx); a missing configured key is a ConfigurationError."""
    from azure.core.exceptions import HttpResponseError

    status = exc.status_code if isinstance(exc, HttpResponseError) else None
    code = _error_code(exc)
    where = f"{operation}: HTTP {status} {code}".rstrip() if status else f"{operation}: {type(exc).__name__}"
    if unwrapping and status in (400, 404):
        return SealedDataError(f"{where}: the wrapped data key cannot be opened")
    if not unwrapping and status == 404:
        return ConfigurationError(f"{where}: {KEY_SETTING} names no key in that vault")
    return KeyUnavailableError(where)


def _error_code(exc: Exception) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    return code if isinstance(code, str) else ""


# ---- in memory: the same contract without a vault (unit tests) ----


class MemoryKeyWrapper:
    """RSA-OAEP-256 with RSA keys held in this process: the contract of `KeyWrapper` with Key Vault's semantics
    (versions, rotation, a disabled version refuses to unwrap) and no server. For tests of what sits on top; the
    app always runs KeyVaultKeyWrapper, locally against devstack/keyvault."""

    def __init__(self, name: str = "tokens", key_size: int = 2048) -> None:
        self.name = name
        self._key_size = key_size
        self._keys: dict[str, RSAPrivateKey] = {}
        self.disabled: set[str] = set()
        self.unwrap_calls = 0
        self.current = self.rotate()

    def key_id(self, version: str) -> str:
        return f"memory://keys/{self.name}/{version}"

    def rotate(self) -> str:
        """A new current version; older ones still unwrap."""
        from cryptography.hazmat.primitives.asymmetric import rsa

        version = secrets.token_hex(16)
        self._keys[version] = rsa.generate_private_key(public_exponent=65537, key_size=self._key_size)
        self.current = version
        return version

    def owns(self, key_id: str) -> bool:
        return isinstance(key_id, str) and self._version(key_id) is not None

    def _version(self, key_id: str) -> str | None:
        prefix = f"memory://keys/{self.name}/"
        return key_id[len(prefix) :] if key_id.startswith(prefix) and key_id[len(prefix) :] in self._keys else None

    async def wrap(self, data_key: bytes) -> WrappedKey:
        public = self._keys[self.current].public_key()
        return WrappedKey(self.key_id(self.current), WRAP_ALGORITHM, public.encrypt(data_key, _oaep256()))

    async def unwrap(self, key_id: str, algorithm: str, wrapped: bytes) -> bytes:
        self.unwrap_calls += 1
        version = self._version(key_id)
        if version is None or algorithm != WRAP_ALGORITHM:
            raise SealedDataError("the data key was wrapped by another key or algorithm")
        if version in self.disabled:
            raise KeyUnavailableError(f"{key_id} is disabled (Key Vault: 403 Forbidden, KeyDisabled)")
        try:
            return self._keys[version].decrypt(wrapped, _oaep256())
        except ValueError:
            raise SealedDataError("the wrapped data key does not open with this key version") from None

    async def close(self) -> None:
        return None


def _oaep256() -> Any:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
