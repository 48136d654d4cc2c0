"""One Graph access for the whole app, two credential kinds, chosen by the user id of each call.

- Application permission (company fleets): the user id is an Entra object id (a GUID); calls go to
  `/users/{id}/...` with the function app's managed-identity token, exactly as before drivers could sign in.
- Delegated (a driver signed in from the car, issue 13): the user id is the account id
  `"acct-" + sha256(tid + "\\x1f" + oid)[:40]` (docs/messages.md); calls go to `/me/...` with that driver's own
  access token, which a `DelegatedTokens` (shared/accounts) hands out and may refuse with ReauthRequiredError.

The domain (calendar sync, subscriptions, meetings, erasure) keeps calling one GraphClient with a user id and
never learns which kind it was. Each kind has one MsGraphClient per process (one connection pool); the
delegated one's authentication provider reads the account of the call in flight from a context variable
(`acting_for`), so concurrent calls for different drivers each carry their own token and never another's.

Importing this module imports no SDK (cold start).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Final, Protocol

from shared.errors import ConfigurationError
from shared.graph.base import GraphClient
from shared.graph.types import DeltaPage, OnlineMeeting, Subscription

DELEGATED_PREFIX: Final = "acct-"

_acting_for: ContextVar[str | None] = ContextVar("graph_delegated_account", default=None)


def is_delegated_user(user_id: str) -> bool:
    """A signed-in driver's account (reached with their own token), not an Entra object id of the app's tenant."""
    return user_id.startswith(DELEGATED_PREFIX)


class DelegatedTokens(Protocol):
    """Where the delegated Graph client gets a driver's access token (implemented by shared/accounts)."""

    async def access_token(self, user_id: str) -> str:
        """A current Graph access token for the account `user_id` (`acct-...`), refreshed as needed.
        Raises ReauthRequiredError when none can be had without the driver signing in again."""
        ...


@contextlib.contextmanager
def acting_for(user_id: str) -> Iterator[None]:
    """Mark the Graph calls made inside the block (in this task) as calls for `user_id`'s delegated token."""
    token = _acting_for.set(user_id)
    try:
        yield
    finally:
        _acting_for.reset(token)


def current_account() -> str | None:
    """The account the delegated call in flight is for (None outside `acting_for`)."""
    return _acting_for.get()


class GraphAccess(GraphClient):
    """Routes every call by its user id: `app` for Entra object ids, `delegated` for `acct-` accounts.

    `delegated` None: sign-in from the car is not configured, and a delegated id is a configuration error.
    Example:
        access = GraphAccess(MsGraphClient.create(base, client_id), MsGraphClient.create_delegated(base, tokens))
        await access.calendar_delta("acct-3f2a...", start=..., end=...)   # GET /me/calendarView/delta
    """

    def __init__(self, app: GraphClient, delegated: GraphClient | None = None) -> None:
        self.app = app
        self.delegated = delegated

    def client_for(self, user_id: str) -> GraphClient:
        if not is_delegated_user(user_id):
            return self.app
        if self.delegated is None:
            raise ConfigurationError("a driver account's Graph call, but no delegated Graph access is configured")
        return self.delegated

    async def calendar_delta(
        self,
        user_id: str,
        *,
        start: str | None = None,
        end: str | None = None,
        link: str | None = None,
        page_size: int = 50,
    ) -> DeltaPage:
        client = self.client_for(user_id)
        return await client.calendar_delta(user_id, start=start, end=end, link=link, page_size=page_size)

    async def create_or_get_meeting(
        self, user_id: str, external_id: str, subject: str, start: str, end: str
    ) -> OnlineMeeting:
        return await self.client_for(user_id).create_or_get_meeting(user_id, external_id, subject, start, end)

    async def delete_meeting(self, user_id: str, meeting_id: str) -> bool:
        return await self.client_for(user_id).delete_meeting(user_id, meeting_id)

    async def send_mail(self, user_id: str, to: str, subject: str, text: str) -> None:
        await self.client_for(user_id).send_mail(user_id, to, subject, text)

    async def create_subscription(
        self, user_id: str, resource: str, notification_url: str, client_state: str, expires_at: str
    ) -> Subscription:
        client = self.client_for(user_id)
        return await client.create_subscription(user_id, resource, notification_url, client_state, expires_at)

    async def renew_subscription(self, user_id: str, subscription_id: str, expires_at: str) -> Subscription:
        return await self.client_for(user_id).renew_subscription(user_id, subscription_id, expires_at)

    async def reauthorize_subscription(self, user_id: str, subscription_id: str) -> None:
        await self.client_for(user_id).reauthorize_subscription(user_id, subscription_id)

    async def delete_subscription(self, user_id: str, subscription_id: str) -> None:
        await self.client_for(user_id).delete_subscription(user_id, subscription_id)

    async def close(self) -> None:
        await self.app.close()
        if self.delegated is not None:
            await self.delegated.close()
