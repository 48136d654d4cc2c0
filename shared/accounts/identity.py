"""The identity provider behind one small interface: start a device-code flow, poll it once, refresh a token.

`MsalIdentity` is MSAL Python's PublicClientApplication (the same library against Entra and the local
provider). MSAL is synchronous, so each call runs in a worker thread; none of them waits: a poll is one token
request (`exit_condition=lambda flow: True`), and the waiting between polls is a queue message's visibility
delay (shared/accounts/signin.py), never a sleeping function.

Imported only when a sign-in or a delegated Graph call happens (MSAL pulls in `requests`).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

from shared.accounts.authority import is_local_authority
from shared.accounts.ids import SignedInAccount, granted_scopes
from shared.errors import ConfigurationError, FleetError

T = TypeVar("T")
PollStatus = Literal["pending", "slow_down", "signed_in", "expired", "declined", "failed"]
# RFC 8628 §3.5 and Entra's own codes (Entra says `authorization_declined` where the RFC says `access_denied`).
_STATUS: Final[dict[str, PollStatus]] = {
    "authorization_pending": "pending",
    "slow_down": "slow_down",
    "expired_token": "expired",
    "code_expired": "expired",
    "access_denied": "declined",
    "authorization_declined": "declined",
}
# A refresh the identity provider refuses for good: the person must sign in again.
REAUTH_ERRORS: Final = frozenset({"invalid_grant", "interaction_required", "invalid_client", "unauthorized_client"})


class IdentityUnavailableError(FleetError):
    """The identity provider could not be reached or answered with a server error: retry later."""


class ReauthNeededError(FleetError):
    """The refresh token no longer works (password changed, consent revoked, account deleted)."""


@dataclass(frozen=True, slots=True)
class PollOutcome:
    status: PollStatus
    flow: dict[str, Any]  # MSAL's flow, updated (interval after slow_down, last attempt)
    account: SignedInAccount | None = None
    home_account_id: str | None = None
    error: str | None = None  # the provider's error code when failed, for the log (no personal data)


@dataclass(frozen=True, slots=True)
class Refreshed:
    access_token: str  # never logged, never stored
    expires_in: float
    token_cache: bytes | None  # MSAL's cache when it changed (a rotated refresh token): seal and store it


class Identity(ABC):
    @abstractmethod
    async def start(self, authority: str, scopes: Sequence[str]) -> dict[str, Any]:
        """A new device-code flow (user_code, verification_uri, expires_in, interval, device_code, ...)."""

    @abstractmethod
    async def poll(self, authority: str, flow: dict[str, Any]) -> PollOutcome:
        """One token request for the flow; never waits."""

    @abstractmethod
    async def refresh(
        self, authority: str, token_cache: bytes, home_account_id: str, scopes: Sequence[str]
    ) -> Refreshed:
        """An access token from the cached refresh token; ReauthNeededError when it no longer works."""


class MsalIdentity(Identity):
    """MSAL's PublicClientApplication, one per call (its token cache is one driver's), sharing one HTTP cache so
    the authority's metadata is fetched once per process, not per call."""

    def __init__(self, client_id: str, ca_file: str | None = None) -> None:
        self.client_id = client_id
        self.ca_file = ca_file
        self._http_cache: dict[Any, Any] = {}
        self._session: Any = None

    def _app(self, authority: str, cache: Any) -> Any:
        import msal  # type: ignore[import-untyped]

        options: dict[str, Any] = {}
        if is_local_authority(authority):
            if self.ca_file is None:  # a brand's loopback authority in Azure: device codes to whatever listens there
                raise ConfigurationError("a loopback sign-in authority is for the local stack only (AUTH_CA_BUNDLE)")
            # The local provider is not an Entra host: no instance discovery against login.microsoftonline.com,
            # and its certificate is from the local stack's CA. A session of our own rather than `verify=`:
            # requests lets REQUESTS_CA_BUNDLE from the environment override a client's `verify`.
            options["instance_discovery"] = False
            options["http_client"] = self._local_session()
        return msal.PublicClientApplication(
            self.client_id, authority=authority, token_cache=cache, http_cache=self._http_cache, **options
        )

    def _local_session(self) -> Any:
        if self._session is None:
            import requests

            session = requests.Session()
            session.trust_env = False
            session.verify = self.ca_file or True
            self._session = session
        return self._session

    async def start(self, authority: str, scopes: Sequence[str]) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            import msal

            flow: dict[str, Any] = self._app(authority, msal.SerializableTokenCache()).initiate_device_flow(
                scopes=list(scopes)
            )
            return flow

        flow = await _call(run)
        if "user_code" not in flow:
            raise IdentityUnavailableError(f"the identity provider refused the device flow: {flow.get('error')}")
        return flow

    async def poll(self, authority: str, flow: dict[str, Any]) -> PollOutcome:
        def run() -> PollOutcome:
            import msal

            cache = msal.SerializableTokenCache()
            app = self._app(authority, cache)
            mine = dict(flow)
            result: dict[str, Any] = app.acquire_token_by_device_flow(mine, exit_condition=lambda _flow: True)
            error = result.get("error")
            if error is None and "access_token" in result:
                claims = result.get("id_token_claims") or {}
                tenant, oid = str(claims.get("tid") or ""), str(claims.get("oid") or "")
                if not tenant or not oid:
                    return PollOutcome("failed", mine, error="no_tid_or_oid")
                accounts = app.get_accounts()
                account = SignedInAccount(
                    tenant_id=tenant,
                    object_id=oid,
                    username=str(claims.get("preferred_username") or ""),
                    name=str(claims.get("name") or ""),
                    scopes=granted_scopes(result.get("scope")),
                    token_cache=cache.serialize().encode(),
                )
                home = str(accounts[0]["home_account_id"]) if accounts else f"{oid}.{tenant}"
                return PollOutcome("signed_in", mine, account, home)
            status = _STATUS.get(str(error), "failed")
            return PollOutcome(status, mine, error=str(error)[:64])

        return await _call(run)

    async def refresh(
        self, authority: str, token_cache: bytes, home_account_id: str, scopes: Sequence[str]
    ) -> Refreshed:
        def run() -> Refreshed:
            import msal

            cache = msal.SerializableTokenCache()
            cache.deserialize(token_cache.decode())
            app = self._app(authority, cache)
            accounts = [a for a in app.get_accounts() if a.get("home_account_id") == home_account_id]
            if not accounts:
                raise ReauthNeededError("the token cache holds no account")
            result = app.acquire_token_silent_with_error(list(scopes), account=accounts[0])
            if result is None:
                raise ReauthNeededError("the token cache holds no refresh token")
            error = result.get("error")
            if error in REAUTH_ERRORS:
                raise ReauthNeededError(f"the identity provider refused the refresh: {error}")
            if error is not None or "access_token" not in result:
                raise IdentityUnavailableError(f"token refresh failed: {error}")
            changed = cache.serialize().encode() if cache.has_state_changed else None
            return Refreshed(str(result["access_token"]), float(result.get("expires_in", 3600)), changed)

        return await _call(run)


async def _call(run: Callable[[], T]) -> T:
    """Run a blocking MSAL call in a thread; transport failures become IdentityUnavailableError (transient)."""
    try:
        result: T = await asyncio.to_thread(run)
    except (ReauthNeededError, IdentityUnavailableError):
        raise
    except (OSError, ValueError) as exc:  # requests' ConnectionError is an OSError; bad JSON a ValueError
        raise IdentityUnavailableError(f"the identity provider is unreachable: {type(exc).__name__}") from exc
    return result
