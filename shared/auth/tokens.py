"""Entra ID (v2) access tokens in, a validated Principal out — or AuthenticationError with a short reason.

Every check the issue lists, in the order that keeps work and information bounded: the header's size and
shape before any parsing, the pinned algorithm (RS256 only: `none` and HS256-with-the-public-key are refused
before a key is looked up), the signature against the issuer's JWKS (jwks.py), and only then the claims:
`exp`/`nbf`/`iat` with AUTH_CLOCK_SKEW_SECONDS, `aud` in AUTH_AUDIENCE, `iss` equal to the configured issuer
with `{tenantid}` replaced by the token's `tid` (Entra's multi-tenant `common` keys sign every tenant's tokens,
so the issuer check is what binds a token to its tenant), then the tenant allow-list (a user of another tenant is
a guest without roles: shared/auth/principal.py), then scope or role.

Reasons (`Reason`) are fixed strings for `WWW-Authenticate: Bearer error="invalid_token",
error_description="<reason>"`; nothing of the token or its claims is ever echoed or logged.

PyJWT is imported inside the functions that need it: importing the function app stays light (cold start).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

import orjson

from shared.auth.jwks import HttpJsonFetcher, JwksCache, UnknownKeyError, is_allowed_url
from shared.auth.policy import API_SCOPE, Role
from shared.auth.principal import Principal
from shared.errors import AuthenticationError, ConfigurationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

MAX_AUTHORIZATION_CHARS: Final = 16 * 1024
ALGORITHM: Final = "RS256"
TENANT_PLACEHOLDER: Final = "{tenantid}"


class Reason(StrEnum):
    """Why a token is refused: AuthenticationError's `detail`, sent as the WWW-Authenticate error_description."""

    MISSING = "missing_token"
    NOT_BEARER = "not_bearer"
    TOO_LARGE = "token_too_large"
    MALFORMED = "malformed"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_AUDIENCE = "wrong_audience"
    WRONG_ISSUER = "wrong_issuer"
    MISSING_CLAIMS = "missing_claims"
    TENANT_NOT_ALLOWED = "tenant_not_allowed"
    MISSING_SCOPE = "missing_scope"
    MISSING_ROLE = "missing_role"
    INVALID = "invalid_token"  # anything else PyJWT refuses


_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
TenantCheck = Callable[[str], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """What the validator trusts: the issuer's OpenID configuration, the accepted audiences and tenants."""

    openid_config_url: str
    audiences: frozenset[str]
    allowed_tenants: frozenset[str] = frozenset()
    clock_skew_seconds: int = 60
    jwks_refresh_minutes: int = 1440
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        if not self.audiences:
            raise ConfigurationError("AUTH_AUDIENCE is not set: the API's client id (and api://<id>)")
        if not is_allowed_url(self.openid_config_url):
            raise ConfigurationError("AUTH_OPENID_CONFIG_URL must be https (http only on loopback)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthConfig:
        """The AUTH_* settings as the typed settings model validated them (ConfigurationError otherwise)."""
        from shared.settings_model import auth_settings

        auth = auth_settings(environ)
        return cls(
            openid_config_url=auth.openid_config_url,
            audiences=frozenset(auth.audiences),
            allowed_tenants=frozenset(auth.allowed_tenants),
            clock_skew_seconds=auth.clock_skew_seconds,
            jwks_refresh_minutes=auth.jwks_refresh_minutes,
            ca_bundle=auth.ca_bundle or None,
        )


def _refuse(reason: Reason) -> AuthenticationError:
    return AuthenticationError(reason.value)


def _b64url_json(segment: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):  # orjson.JSONDecodeError is a ValueError
        raise _refuse(Reason.MALFORMED) from None


def _bearer_token(authorization: str | None) -> str:
    if not authorization or not authorization.strip():
        raise _refuse(Reason.MISSING)
    if len(authorization) > MAX_AUTHORIZATION_CHARS:
        raise _refuse(Reason.TOO_LARGE)
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise _refuse(Reason.NOT_BEARER)
    token = token.strip()
    if not token:
        raise _refuse(Reason.MISSING)
    return token


def _unverified_kid(token: str) -> str:
    """The header's kid, after the shape and the pinned algorithm are checked (nothing trusted yet)."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts) or not parts[0] or not parts[1]:
        raise _refuse(Reason.MALFORMED)
    header = _b64url_json(parts[0])
    if not isinstance(header, dict):
        raise _refuse(Reason.MALFORMED)
    if header.get("alg") != ALGORITHM:
        raise _refuse(Reason.ALG_NOT_ALLOWED)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or not parts[2]:
        raise _refuse(Reason.MALFORMED)
    return kid


def _text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


class AccessTokenValidator:
    """Validates the Authorization header of an API request.

    `extra_tenant_allowed(tid)` is asked only for tenants outside AUTH_ALLOWED_TENANTS: the tenancy code
    answers whether a brand lists that tenant (its errors propagate: a store outage is a 503, not a 401).

    Example:
        validator = AccessTokenValidator.from_env(extra_tenant_allowed=tenancy.tenant_allowed)
        principal = await validator.validate(request.headers.get("Authorization"))
    """

    def __init__(self, config: AuthConfig, keys: JwksCache, extra_tenant_allowed: TenantCheck | None = None) -> None:
        self._config = config
        self._keys = keys
        self._extra_tenant_allowed = extra_tenant_allowed
        self._audiences = sorted(config.audiences)

    @classmethod
    def from_env(
        cls, extra_tenant_allowed: TenantCheck | None = None, environ: Mapping[str, str] | None = None
    ) -> AccessTokenValidator:
        config = AuthConfig.from_env(environ)
        keys = JwksCache(
            config.openid_config_url,
            HttpJsonFetcher(config.ca_bundle),
            refresh_seconds=config.jwks_refresh_minutes * 60.0,
        )
        return cls(config, keys, extra_tenant_allowed)

    async def close(self) -> None:
        await self._keys.close()

    async def validate(self, authorization: str | None) -> Principal:
        """The caller the header's bearer token proves, or AuthenticationError(reason); IssuerUnavailableError
        when the issuer's keys cannot be had (transient)."""
        token = _bearer_token(authorization)
        kid = _unverified_kid(token)
        try:
            key = await self._keys.key(kid)
        except UnknownKeyError:
            raise _refuse(Reason.UNKNOWN_KEY) from None
        claims = self._verified_claims(token, key)
        tenant, object_id, client_id = _text(claims, "tid"), _text(claims, "oid"), _text(claims, "azp")
        if tenant is None or object_id is None or client_id is None:
            raise _refuse(Reason.MISSING_CLAIMS)
        issuer = (await self._keys.metadata()).issuer.replace(TENANT_PLACEHOLDER, tenant)
        if claims.get("iss") != issuer:
            raise _refuse(Reason.WRONG_ISSUER)
        if tenant in self._config.allowed_tenants:
            return _principal(claims, tenant, object_id, client_id)
        if self._extra_tenant_allowed is not None and await self._extra_tenant_allowed(tenant):
            # A customer tenant a brand lists: its own admins assign our app roles there (docs/identity.md), so
            # the platform-wide one is not theirs to give; what the others reach, memberships decide.
            return replace(_principal(_without_platform_admin(claims), tenant, object_id, client_id), home=False)
        # Drivers signed in at cars with accounts of any tenant may manage those sign-ins, and nothing else:
        # a guest, whose app roles (assigned by an admin of a tenant we do not trust) are ignored.
        if claims.get("idtyp") == "app" or claims.get("scp") is None:
            raise _refuse(Reason.TENANT_NOT_ALLOWED)
        return replace(_principal({**claims, "roles": []}, tenant, object_id, client_id), guest=True, home=False)

    def _verified_claims(self, token: str, key: RSAPublicKey) -> dict[str, Any]:
        """Signature first, then exp/nbf/iat (with skew) and aud, by PyJWT; each failure mapped to its reason."""
        import jwt

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audiences,
                leeway=self._config.clock_skew_seconds,
                options={"require": ["exp", "iss", "aud"], "verify_iss": False},
            )
        except jwt.InvalidSignatureError:
            raise _refuse(Reason.BAD_SIGNATURE) from None
        except jwt.ExpiredSignatureError:
            raise _refuse(Reason.EXPIRED) from None
        except jwt.ImmatureSignatureError:
            raise _refuse(Reason.NOT_YET_VALID) from None
        except jwt.InvalidAudienceError:
            raise _refuse(Reason.WRONG_AUDIENCE) from None
        except jwt.MissingRequiredClaimError:
            raise _refuse(Reason.MISSING_CLAIMS) from None
        except jwt.InvalidAlgorithmError:
            raise _refuse(Reason.ALG_NOT_ALLOWED) from None
        except jwt.DecodeError:
            raise _refuse(Reason.MALFORMED) from None
        except jwt.PyJWTError:
            raise _refuse(Reason.INVALID) from None
        return claims


def _without_platform_admin(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    """The claims with Platform.Admin taken out of `roles` (a malformed claim is left for `_principal` to refuse)."""
    roles = claims.get("roles")
    if not isinstance(roles, list):
        return claims
    return {**claims, "roles": [r for r in roles if r != Role.PLATFORM_ADMIN]}


def _principal(claims: Mapping[str, Any], tenant: str, object_id: str, client_id: str) -> Principal:
    roles_claim = claims.get("roles", [])
    scope_claim = claims.get("scp")
    if not isinstance(roles_claim, list) or not all(isinstance(r, str) for r in roles_claim):
        raise _refuse(Reason.MALFORMED)
    if scope_claim is not None and not isinstance(scope_claim, str):
        raise _refuse(Reason.MALFORMED)
    roles = frozenset(roles_claim)
    scopes = frozenset(scope_claim.split()) if scope_claim else frozenset[str]()
    is_app = claims.get("idtyp") == "app" or scope_claim is None
    if is_app and not roles:
        raise _refuse(Reason.MISSING_ROLE)
    if not is_app and API_SCOPE not in scopes:
        raise _refuse(Reason.MISSING_SCOPE)
    return Principal(
        object_id=object_id,
        tenant_id=tenant,
        client_id=client_id,
        roles=roles,
        scopes=scopes,
        is_app=is_app,
        name=None if is_app else _text(claims, "name"),
        username=None if is_app else _text(claims, "preferred_username"),
    )
