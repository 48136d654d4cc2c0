"""The issuer's signing keys: the OpenID configuration and its JWKS, fetched, cached and refreshed.

Why a cache of our own around PyJWT: the validator must answer from memory on the hot path, rotate keys when
the issuer does (Entra rolls its signing keys without notice, so a token with an unknown `kid` makes us look
again), and stay up when the issuer is briefly unreachable (the last good keys keep working). It also must
not let callers drive our traffic to the issuer: an unknown `kid` refetches at most once per
`KID_MISS_REFETCH_SECONDS`, a failed fetch is not retried before `RETRY_AFTER_FAILURE_SECONDS`, and concurrent
callers share one fetch (single-flight). Key rotation and rate limits follow Microsoft.IdentityModel's
ConfigurationManager (refresh interval 1 day, a requested refresh at most every 5 minutes).

The transport is a callable `fetch_json(url) -> dict` (`HttpJsonFetcher` in production: aiohttp, HTTPS, an
extra trusted CA for the local provider), so tests count fetches without a network.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import orjson

from shared.errors import ConfigurationError, FleetError

if TYPE_CHECKING:
    import ssl

    import aiohttp
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

log = logging.getLogger(__name__)

FetchJson = Callable[[str], Awaitable[dict[str, Any]]]

KID_MISS_REFETCH_SECONDS: Final = 300.0  # an unknown kid refetches the JWKS at most this often
RETRY_AFTER_FAILURE_SECONDS: Final = 10.0  # after a failed fetch, callers use what we have (or fail) this long
MAX_DOCUMENT_BYTES: Final = 1 << 20  # Entra's JWKS is ~10 KB; anything near this is not a key set
MIN_RSA_BITS: Final = 2048
FETCH_TIMEOUT_SECONDS: Final = 10.0


class IssuerUnavailableError(FleetError):
    """The issuer's metadata or keys could not be fetched (or made no sense) and no usable key is cached.

    Transient: the caller's token may be fine, we cannot tell yet. The HTTP layer answers 503."""


class UnknownKeyError(FleetError):
    """The token's `kid` is not among the issuer's keys, even after the allowed refetch (the validator turns
    this into AuthenticationError("unknown_key"))."""


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_allowed_url(url: str) -> bool:
    """HTTPS anywhere; plain HTTP only to a loopback host (the tests' and local stack's servers)."""
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        return False
    return scheme == "https" or (scheme == "http" and is_loopback_url(url))


@dataclass(frozen=True, slots=True)
class OpenIdMetadata:
    """The two facts we use from the OpenID configuration document. `issuer` may hold Entra's `{tenantid}`
    placeholder (the `common` and `organizations` documents), which the validator fills with the token's tid."""

    issuer: str
    jwks_uri: str

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> OpenIdMetadata:
        issuer, jwks_uri = document.get("issuer"), document.get("jwks_uri")
        if not isinstance(issuer, str) or not issuer or not isinstance(jwks_uri, str) or not is_allowed_url(jwks_uri):
            raise IssuerUnavailableError("the OpenID configuration lacks a usable issuer or https jwks_uri")
        return cls(issuer, jwks_uri)


def parse_jwks(document: Mapping[str, Any]) -> dict[str, RSAPublicKey]:
    """The RSA signing keys of a JWKS by kid. Keys we cannot use (other types, encryption keys, malformed,
    shorter than 2048 bits) are skipped, not fatal: one odd key must not take the others down."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from jwt import PyJWK
    from jwt.exceptions import PyJWTError

    entries = document.get("keys")
    if not isinstance(entries, list):
        raise IssuerUnavailableError("the JWKS document has no key list")
    keys: dict[str, RSAPublicKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        try:
            key = PyJWK(entry, algorithm="RS256").key
        except (PyJWTError, ValueError, TypeError):
            continue
        if isinstance(key, RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
            keys[kid] = key
    return keys


class JwksCache:
    """The issuer's metadata and signing keys, for one process.

    `key(kid)` answers from memory while the keys are fresh (`refresh_seconds`); stale keys are refreshed
    first, and if that fails the last good ones are used. An unknown kid triggers one JWKS refetch, at most
    once per `KID_MISS_REFETCH_SECONDS`. One fetch at a time: concurrent callers wait for the one in flight.

    Example:
        cache = JwksCache(metadata_url, HttpJsonFetcher(), refresh_seconds=86_400)
        key = await cache.key(kid)            # RSAPublicKey, or UnknownKeyError / IssuerUnavailableError
        issuer = (await cache.metadata()).issuer
    """

    def __init__(
        self,
        metadata_url: str,
        fetch_json: FetchJson,
        refresh_seconds: float = 86_400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metadata_url = metadata_url
        self._fetch_json = fetch_json
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._metadata: OpenIdMetadata | None = None
        self._keys: dict[str, RSAPublicKey] | None = None
        self._fetched_at = 0.0  # last successful fetch of everything (metadata and keys)
        self._failed_at: float | None = None  # last failed fetch
        self._miss_refetch_at: float | None = None  # last refetch caused by an unknown kid
        self._inflight: asyncio.Future[None] | None = None

    async def close(self) -> None:
        """Close the transport's connections (an HttpJsonFetcher's session) when the process or loop ends."""
        close = getattr(self._fetch_json, "close", None)
        if close is not None:
            await close()

    async def metadata(self) -> OpenIdMetadata:
        await self._ensure_loaded()
        assert self._metadata is not None
        return self._metadata

    async def key(self, kid: str) -> RSAPublicKey:
        await self._ensure_loaded()
        assert self._keys is not None
        key = self._keys.get(kid)
        if key is not None:
            return key
        now = self._clock()
        if self._miss_refetch_at is None or now - self._miss_refetch_at >= KID_MISS_REFETCH_SECONDS:
            self._miss_refetch_at = now
            await self._refresh(with_metadata=False)  # failure: IssuerUnavailableError (we cannot tell)
            key = self._keys.get(kid)
        if key is None:
            raise UnknownKeyError("no signing key with this kid")
        return key

    async def _ensure_loaded(self) -> None:
        """Fetch on first use; refresh stale keys but keep the last good ones if the issuer is down."""
        if self._inflight is not None:  # someone is fetching: wait for it rather than fetch again
            await self._join()
        now = self._clock()
        if self._keys is not None and now - self._fetched_at < self._refresh_seconds:
            return
        if self._failed_at is not None and now - self._failed_at < RETRY_AFTER_FAILURE_SECONDS:
            if self._keys is None:
                raise IssuerUnavailableError("the issuer's keys are unavailable (recent fetch failed)")
            return
        try:
            await self._refresh(with_metadata=True)
        except IssuerUnavailableError:
            if self._keys is None:
                raise
            log.warning("signing keys could not be refreshed; using the last good keys")

    async def _join(self) -> None:
        inflight = self._inflight
        if inflight is not None:
            with contextlib.suppress(IssuerUnavailableError):  # the caller decides from the state it left
                await asyncio.shield(inflight)

    async def _refresh(self, with_metadata: bool) -> None:
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch(with_metadata))
        await asyncio.shield(self._inflight)

    async def _fetch(self, with_metadata: bool) -> None:
        try:
            metadata = self._metadata
            if with_metadata or metadata is None:
                metadata = OpenIdMetadata.from_document(await self._fetch_json(self._metadata_url))
            keys = parse_jwks(await self._fetch_json(metadata.jwks_uri))
            if not keys:
                raise IssuerUnavailableError("the JWKS holds no usable RSA signing key")
        except IssuerUnavailableError:
            self._failed_at = self._clock()
            log.warning("the issuer's metadata or keys could not be fetched")
            raise
        except Exception as exc:  # a fetcher's own error: still transient, never a stack trace to the caller
            self._failed_at = self._clock()
            log.warning("the issuer's metadata or keys could not be fetched: %s", type(exc).__name__)
            raise IssuerUnavailableError("the issuer's keys could not be fetched") from exc
        finally:
            self._inflight = None
        self._metadata, self._keys = metadata, keys
        self._fetched_at, self._failed_at = self._clock(), None


class HttpJsonFetcher:
    """GET a JSON object over HTTPS (HTTP only to loopback), trusting `ca_bundle` in addition to the system's
    CAs (AUTH_CA_BUNDLE: the local provider's throwaway CA; unset in Azure). Any failure is
    IssuerUnavailableError; a URL that is neither https nor loopback is a ConfigurationError."""

    def __init__(self, ca_bundle: str | None = None, timeout_seconds: float = FETCH_TIMEOUT_SECONDS) -> None:
        self._ca_bundle = ca_bundle
        self._timeout = timeout_seconds
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        import ssl

        context = ssl.create_default_context()
        if self._ca_bundle:
            context.load_verify_locations(cafile=self._ca_bundle)
        return context

    def _client(self) -> aiohttp.ClientSession:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # a session belongs to the loop it was made on; a new loop (a test, a host restart) gets a new one
            self._loop = loop
            connector = aiohttp.TCPConnector(ssl=self._ssl_context())
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
        return self._session

    async def __call__(self, url: str) -> dict[str, Any]:
        import aiohttp

        if not is_allowed_url(url):
            raise ConfigurationError("the issuer's URLs must be https (http only on loopback)")
        try:
            async with self._client().get(url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise IssuerUnavailableError(f"the issuer answered {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise IssuerUnavailableError("the issuer's document is too large")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise IssuerUnavailableError(f"the issuer could not be reached: {type(exc).__name__}") from exc
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise IssuerUnavailableError("the issuer's document is not JSON") from None
        if not isinstance(document, dict):
            raise IssuerUnavailableError("the issuer's document is not a JSON object")
        return document

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
