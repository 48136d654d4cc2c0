"""Drivers' access tokens for delegated Graph calls: from the sealed MSAL cache, refreshed when due.

An access token is kept in memory (per process, per account) until five minutes before it expires, so a sync
round or a `meeting.join` costs no refresh and no Key Vault call. The cache is opened (unwrap: one Key Vault
call, then the data key is cached by the vault) only to refresh; a rotated refresh token is sealed and stored
again on the etag of the read the refresh started from: of two instances refreshing at once either stored cache
works, and a sign-in meanwhile (a newer refresh token) keeps its cache.

A signed-out account (no car left) is still served, never kept in memory, while its Graph subscription is to be
deleted: the `signout` sync job deletes it with the account's token, then the account document with the tokens.

A refresh the identity provider refuses for good (`invalid_grant`: password changed, consent revoked, account
deleted), a cache that cannot be opened (tampered, wrong key), or an account that is not signed in marks the
account `reauth_required` once and raises ReauthRequiredError: the calendar sync stops there and does not
retry; the identity provider is not asked again until the driver signs in again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from shared.accounts.identity import Identity, IdentityUnavailableError, ReauthNeededError
from shared.accounts.ids import GRAPH_RESOURCE
from shared.accounts.profiles import REAUTH_REQUIRED, SIGNED_IN
from shared.accounts.service import Vault
from shared.calendar.documents import ACCOUNT_DOC_ID as ACCOUNT_ID
from shared.calendar.documents import SUBSCRIPTION_ID
from shared.containers import CALENDARS
from shared.errors import NotFoundError, PreconditionFailedError
from shared.graph.exceptions import GraphError, ReauthRequiredError
from shared.stores.base import Document, DocumentStore, strip_system_properties

log = logging.getLogger(__name__)
EARLY_SECONDS: Final = 300.0
SIGNED_OUT: Final = "signed_out"
MAX_CACHED: Final = 10_000


class DelegatedTokenSource:
    """shared/graph/access.py's DelegatedTokens for signed-in driver accounts."""

    def __init__(
        self,
        store: DocumentStore,
        vault: Vault,
        identity: Identity | None,
        mark_reauth_required: Callable[[str], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.vault = vault
        self.identity = identity
        self.mark_reauth_required = mark_reauth_required
        self.clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}

    def forget(self, account_id: str) -> None:
        self._tokens.pop(account_id, None)

    async def access_token(self, user_id: str) -> str:
        cached = self._tokens.get(user_id)
        if cached is not None and cached[1] > self.clock():
            return cached[0]
        stored = await self.store.read(CALENDARS, user_id, ACCOUNT_ID)
        account = stored.document if stored else {}
        state = account.get("state")
        cleaning_up = state == SIGNED_OUT and await self._subscription_left(user_id)
        if stored is None or not account.get("tokenCache") or (state != SIGNED_IN and not cleaning_up):
            if stored is not None and state not in (REAUTH_REQUIRED, SIGNED_OUT):
                await self._reauth(user_id)
            raise ReauthRequiredError("the driver's account is not signed in")
        if self.identity is None:
            raise GraphError("no sign-in client is configured: delegated Graph is off", None, "signin_disabled")
        from shared.accounts.vault import SealedDataError

        try:
            cache = await self.vault.open(account["tokenCache"], user_id)
        except SealedDataError:
            log.warning("a driver's token cache cannot be opened (account %s)", user_id[:12])
            await self._reauth(user_id)
            raise ReauthRequiredError("the driver's token cache cannot be opened") from None
        scopes = [f"{GRAPH_RESOURCE}/{s}" for s in account.get("scopes", []) if s[:1].isupper()]
        try:
            refreshed = await self.identity.refresh(
                str(account["authority"]), cache, str(account["homeAccountId"]), scopes
            )
        except ReauthNeededError as exc:
            log.warning("a driver's refresh token no longer works (account %s): %s", user_id[:12], exc)
            await self._reauth(user_id)
            raise ReauthRequiredError("the driver must sign in again") from None
        except IdentityUnavailableError as exc:
            raise GraphError(f"the identity provider is unavailable: {exc}", None, "identity_unavailable") from exc
        if refreshed.token_cache is not None:
            await self._store_cache(user_id, account, stored.etag, refreshed.token_cache)
        if cleaning_up:  # not kept: the token serves the sign-out's clean-up only
            return refreshed.access_token
        if len(self._tokens) >= MAX_CACHED:
            self._tokens.clear()
        self._tokens[user_id] = (refreshed.access_token, self.clock() + max(0.0, refreshed.expires_in - EARLY_SECONDS))
        return refreshed.access_token

    async def _reauth(self, user_id: str) -> None:
        self.forget(user_id)
        await self.mark_reauth_required(user_id)

    async def _subscription_left(self, user_id: str) -> bool:
        """A signed-out account whose Graph subscription is still to be deleted (the `signout` sync job deletes
        it with this account's token, then the account document with the tokens)."""
        return await self.store.read(CALENDARS, user_id, SUBSCRIPTION_ID) is not None

    async def _store_cache(self, user_id: str, account: Document, etag: str, cache: bytes) -> None:
        """The rotated cache, on the condition that the account is still as read before the refresh: a sign-in
        meanwhile stored a newer cache (another refresh token), which is kept."""
        doc = strip_system_properties(account)
        doc["tokenCache"] = await self.vault.seal(cache, user_id)
        try:
            await self.store.replace(CALENDARS, doc, etag)
        except (PreconditionFailedError, NotFoundError):  # changed or gone since the read: the newer one stands
            return
