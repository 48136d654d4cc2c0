"""Development device keys for symmetric-key enrollment groups: derived, never stored.

A symmetric-key enrollment group holds one group key; each car's device key is HMAC-SHA256 of its registration id
with the base64-decoded group key, base64 (docs: "How to provision devices using symmetric key enrollment groups",
the same derivation DPS checks). Only when PROVISIONING_DEVELOPMENT_KEYS is true does registration hand one out,
marked as a development key; production cars carry certificates (X.509 CA enrollment) and get no secret from the API.

`EnrollmentKeys` gives the group key: `MemoryEnrollmentKeys` in tests, `DpsEnrollmentKeys` from DPS's service API
(`POST https://<dps>/enrollmentGroups/{id}/attestationmechanism?api-version=2021-10-01`, which answers the group's
`{"type": "symmetricKey", "symmetricKey": {"primaryKey", "secondaryKey"}}`) with the app's managed identity (a
token for `https://azure-devices-provisioning.net/.default`; the identity needs a DPS data-plane role that may read
enrollments, e.g. "Device Provisioning Service Data Reader"). The key is read per call and never kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import orjson

from shared.errors import ConfigurationError, FleetError

if TYPE_CHECKING:
    import aiohttp

API_VERSION: Final = "2021-10-01"
DPS_SCOPE: Final = "https://azure-devices-provisioning.net/.default"
# The symmetric-key enrollment group of development and test fleets (the postprovision hook's DPS_DEVELOPMENT_GROUP).
SYMMETRIC_KEY_GROUP_ID: Final = "development-fleet"


class EnrollmentKeyError(FleetError):
    """The enrollment group's key could not be read (DPS unavailable, no such group, not a symmetric-key group)."""


def derive_device_key(group_key: str, registration_id: str) -> str:
    """base64(HMAC-SHA256(base64decode(group key), registration id)): the car's device key."""
    try:
        secret = base64.b64decode(group_key, validate=True)
    except (binascii.Error, ValueError):
        raise EnrollmentKeyError("the enrollment group key is not base64") from None
    digest = hmac.new(secret, registration_id.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class EnrollmentKeys(ABC):
    @abstractmethod
    async def group_key(self, group_id: str = SYMMETRIC_KEY_GROUP_ID) -> str:
        """The symmetric-key enrollment group's primary key (base64); EnrollmentKeyError when unavailable."""

    async def device_key(self, registration_id: str, group_id: str = SYMMETRIC_KEY_GROUP_ID) -> str:
        return derive_device_key(await self.group_key(group_id), registration_id)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


@dataclass
class MemoryEnrollmentKeys(EnrollmentKeys):
    keys: dict[str, str] = field(default_factory=dict)  # group id → primary key

    async def group_key(self, group_id: str = SYMMETRIC_KEY_GROUP_ID) -> str:
        key = self.keys.get(group_id)
        if key is None:
            raise EnrollmentKeyError(f"no symmetric-key enrollment group {group_id}")
        return key


class TokenSource(ABC):
    @abstractmethod
    async def token(self) -> str: ...


class ManagedIdentityToken(TokenSource):
    """A token for DPS's service API from the app's managed identity (azure-identity, async)."""

    def __init__(self, client_id: str | None) -> None:
        self._client_id = client_id
        self._credential: Any = None

    async def token(self) -> str:
        if self._credential is None:
            from azure.identity.aio import DefaultAzureCredential

            self._credential = DefaultAzureCredential(managed_identity_client_id=self._client_id)
        return str((await self._credential.get_token(DPS_SCOPE)).token)

    async def close(self) -> None:
        if self._credential is not None:
            await self._credential.close()
            self._credential = None


class DpsEnrollmentKeys(EnrollmentKeys):
    """Reads the group's attestation from DPS's service API (the documented REST call, bearer token)."""

    def __init__(self, endpoint: str, tokens: TokenSource, timeout_seconds: float = 10.0) -> None:
        self._base = endpoint if "://" in endpoint else f"https://{endpoint}"
        self._base = self._base.rstrip("/")
        self._tokens = tokens
        self._timeout = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DpsEnrollmentKeys:
        from shared.settings import setting

        host = setting("DPS_HOSTNAME", environ)
        if not host:
            raise ConfigurationError("DPS_HOSTNAME is not set")
        return cls(host, ManagedIdentityToken(setting("AZURE_CLIENT_ID", environ)))

    async def group_key(self, group_id: str = SYMMETRIC_KEY_GROUP_ID) -> str:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        url = f"{self._base}/enrollmentGroups/{quote(group_id, safe='')}/attestationmechanism"
        try:
            headers = {"Authorization": f"Bearer {await self._tokens.token()}", "Content-Type": "application/json"}
            async with self._session.post(url, params={"api-version": API_VERSION}, headers=headers) as resp:
                body = await resp.read()
                status = resp.status
                code = resp.headers.get("x-ms-error-code")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise EnrollmentKeyError(f"DPS did not answer: {type(exc).__name__}") from None
        except FleetError:
            raise
        except Exception as exc:  # the credential: no identity, no token
            raise EnrollmentKeyError(f"no token for DPS: {type(exc).__name__}") from None
        if status != 200:
            raise EnrollmentKeyError(f"DPS answered {status} {code or ''} for enrollment group {group_id}".strip())
        try:
            mechanism = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise EnrollmentKeyError("DPS answered no JSON") from None
        symmetric = mechanism.get("symmetricKey") if isinstance(mechanism, dict) else None
        key = symmetric.get("primaryKey") if isinstance(symmetric, dict) else None
        if not isinstance(key, str) or not key:
            raise EnrollmentKeyError(f"enrollment group {group_id} is not a symmetric-key group")
        return key

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if isinstance(self._tokens, ManagedIdentityToken):
            await self._tokens.close()


def enrollment_keys_from_env(environ: Mapping[str, str] | None = None) -> EnrollmentKeys | None:
    """DPS's service API when DPS_HOSTNAME is set; None otherwise (no development keys can be derived)."""
    from shared.settings import setting

    return DpsEnrollmentKeys.from_env(environ) if setting("DPS_HOSTNAME", environ) else None
