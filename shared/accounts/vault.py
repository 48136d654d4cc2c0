"""Drivers' refresh tokens (their MSAL token caches) sealed at rest with envelope encryption.

Each `seal` draws a fresh 256-bit data key, encrypts the bytes with AES-256-GCM and has the Key Vault key wrap the
data key (RSA-OAEP-256, shared/accounts/keys.py); the stored envelope holds only the wrapped data key, so reading
a token cache needs Key Vault (the managed identity's keys/unwrapKey), and a database copy alone reveals nothing.
The `context` (the driver's account id) is the AEAD's associated data: a cache copied onto another account does
not open. Tampering with any field, another key or key version, or a format this code does not know all end in
SealedDataError (permanent: the caller marks the account `reauth_required`); a vault that cannot answer now ends
in KeyUnavailableError (transient: retry later, the cache is intact). Plaintext is never logged.

Envelope (JSON-safe, binary fields base64url without padding):
    {"version": 1, "keyId": "https://<vault>.vault.azure.net/keys/<name>/<version>", "wrapAlgorithm": "RSA-OAEP-256",
     "algorithm": "A256GCM", "wrappedKey": "...", "nonce": "...", "ciphertext": "..."}

Unwrapped data keys are kept in a small LRU (by key id and wrapped key, for `cache_seconds`), so reading the same
cache again, or right after sealing it, costs no Key Vault call; a disabled key takes effect within that time.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

# Re-exported: callers catch them as the vault's errors.
from shared.accounts.sealing import KeyUnavailableError as KeyUnavailableError
from shared.accounts.sealing import SealedDataError as SealedDataError

if TYPE_CHECKING:
    from shared.accounts.keys import KeyWrapper

FORMAT_VERSION: Final = 1
ALGORITHM: Final = "A256GCM"
DATA_KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
MAX_PLAINTEXT_BYTES: Final = 1_000_000  # an MSAL cache is a few KB; a Cosmos DB item is at most 2 MB
MAX_WRAPPED_KEY_BYTES: Final = 1024  # RSA 4096: 512 bytes
_FIELDS: Final = frozenset({"version", "keyId", "wrapAlgorithm", "algorithm", "wrappedKey", "nonce", "ciphertext"})
# Associated data: a fixed label, then the context. The label pins the purpose and format; the context (the rest
# of the bytes, so no separator can be forged) pins the account.
_AAD_LABEL: Final = b"automotive-cloud token cache v1\x00"


class TokenVault:
    """Seals and opens byte strings (token caches) for one context (account id) each. One per process
    (shared/accounts/vault_runtime.py); safe to share between concurrent tasks of one event loop."""

    def __init__(
        self,
        keys: KeyWrapper,
        *,
        cache_size: int = 1024,
        cache_seconds: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self._cache: OrderedDict[tuple[str, bytes], tuple[float, bytes]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_seconds = cache_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> TokenVault:
        """The vault of TOKEN_KEY_ID (vetted first: ConfigurationError before any request), with the managed
        identity (AZURE_CLIENT_ID) in Azure, or the local stand-in's credential and CA (AUTH_CA_BUNDLE) on loopback."""
        from shared.accounts.keys import KeyVaultKeyWrapper
        from shared.settings import setting

        return cls(
            KeyVaultKeyWrapper.from_key_id(
                setting("TOKEN_KEY_ID", environ),
                setting("AZURE_CLIENT_ID", environ),
                setting("AUTH_CA_BUNDLE", environ),
            )
        )

    async def seal(self, plaintext: bytes, context: str) -> dict[str, Any]:
        """The envelope of `plaintext` for `context`. KeyUnavailableError when Key Vault cannot wrap now."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not isinstance(plaintext, bytes | bytearray) or len(plaintext) > MAX_PLAINTEXT_BYTES:
            raise ValueError(f"plaintext must be at most {MAX_PLAINTEXT_BYTES} bytes")
        data_key = AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(data_key).encrypt(nonce, bytes(plaintext), _aad(context))
        wrapped = await self.keys.wrap(data_key)
        self._remember((wrapped.key_id, wrapped.wrapped), data_key)
        return {
            "version": FORMAT_VERSION,
            "keyId": wrapped.key_id,
            "wrapAlgorithm": wrapped.algorithm,
            "algorithm": ALGORITHM,
            "wrappedKey": _b64(wrapped.wrapped),
            "nonce": _b64(nonce),
            "ciphertext": _b64(ciphertext),
        }

    async def open(self, sealed: Mapping[str, Any], context: str) -> bytes:
        """The plaintext sealed for `context`. SealedDataError for anything that can never open (checked before
        Key Vault is asked, which only ever hears of versions of our own key); KeyUnavailableError when Key Vault
        cannot unwrap now."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not isinstance(sealed, Mapping) or set(sealed) != _FIELDS:
            raise SealedDataError("not a sealed token cache")
        version, key_id, wrap_algorithm = sealed["version"], sealed["keyId"], sealed["wrapAlgorithm"]
        if type(version) is not int or version != FORMAT_VERSION or sealed["algorithm"] != ALGORITHM:
            raise SealedDataError("unknown sealed format")
        if not isinstance(key_id, str) or not isinstance(wrap_algorithm, str) or not self.keys.owns(key_id):
            raise SealedDataError("sealed under another key")
        wrapped = _unb64(sealed["wrappedKey"], 1, MAX_WRAPPED_KEY_BYTES)
        nonce = _unb64(sealed["nonce"], NONCE_BYTES, NONCE_BYTES)
        ciphertext = _unb64(sealed["ciphertext"], TAG_BYTES, MAX_PLAINTEXT_BYTES + TAG_BYTES)
        aad = _aad_or_sealed_error(context)
        data_key = self._recall((key_id, wrapped))
        if data_key is None:
            data_key = await self.keys.unwrap(key_id, wrap_algorithm, wrapped)
            if len(data_key) != DATA_KEY_BYTES:
                raise SealedDataError("the wrapped data key is not an AES-256 key")
            self._remember((key_id, wrapped), data_key)
        try:
            return AESGCM(data_key).decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise SealedDataError("the token cache does not open for this account (tampered or moved)") from None

    async def close(self) -> None:
        self._cache.clear()
        await self.keys.close()

    def _remember(self, key: tuple[str, bytes], data_key: bytes) -> None:
        self._cache[key] = (self._clock() + self._cache_seconds, data_key)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _recall(self, key: tuple[str, bytes]) -> bytes | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._cache[key]
            return None
        self._cache.move_to_end(key)
        return entry[1]


def _aad(context: str) -> bytes:
    if not isinstance(context, str) or not context:
        raise ValueError("context must be a non-empty string (the account id)")
    return _AAD_LABEL + context.encode("utf-8")


def _aad_or_sealed_error(context: str) -> bytes:
    try:
        return _aad(context)
    except (ValueError, UnicodeError):
        raise SealedDataError("no account to open the token cache for") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(value: object, low: int, high: int) -> bytes:
    """Strict base64url without padding, of a length in [low, high] bytes; anything else is SealedDataError."""
    if not isinstance(value, str) or not value.isascii() or len(value) > (high * 4 + 2) // 3 + 1:
        raise SealedDataError("malformed sealed field")
    try:
        data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise SealedDataError("malformed sealed field") from None
    if not low <= len(data) <= high or _b64(data) != value:
        raise SealedDataError("malformed sealed field")
    return data
