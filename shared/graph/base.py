"""The GraphClient interface: exactly the Graph calls the app makes, nothing more.

Every call names the user whose calendar or meetings it is about, because that also says whose credential
pays for it: an Entra object id is reached with the application permission (`/users/{id}/...`), a signed-in
driver's account id (`acct-...`, shared/graph/access.py) with that driver's own delegated token (`/me/...`).

Implementations: `MsGraphClient` (msgraph-sdk, one per credential kind; Azure, and the local sandbox through
GRAPH_BASE_URL), `GraphAccess` (routes each call to the right one) and test doubles. Every method raises
GraphError subclasses, never SDK exceptions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from shared.graph.types import DeltaPage, OnlineMeeting, Subscription


class GraphClient(ABC):
    @abstractmethod
    async def calendar_delta(
        self,
        user_id: str,
        *,
        start: str | None = None,
        end: str | None = None,
        link: str | None = None,
        page_size: int = 50,
    ) -> DeltaPage:
        """One page of `/users/{id}/calendarView/delta` (`/me/...` for a driver account): a new round for
        [start, end), or the page at `link` (a nextLink or a stored deltaLink).
        Raises SyncStateGoneError when the link is no longer valid."""

    @abstractmethod
    async def create_or_get_meeting(
        self, user_id: str, external_id: str, subject: str, start: str, end: str
    ) -> OnlineMeeting:
        """`POST /users/{id}/onlineMeetings/createOrGet`: the same external_id always yields the same meeting."""

    @abstractmethod
    async def create_subscription(
        self, user_id: str, resource: str, notification_url: str, client_state: str, expires_at: str
    ) -> Subscription:
        """`POST /subscriptions` for created/updated/deleted changes of `resource` (user_id's events, see
        shared.calendar.subscriptions.resource_of) with user_id's credential; lifecycle events go to the same
        URL."""

    @abstractmethod
    async def renew_subscription(self, user_id: str, subscription_id: str, expires_at: str) -> Subscription:
        """`PATCH /subscriptions/{id}` with a new expiry. GraphNotFoundError if it is gone."""

    @abstractmethod
    async def reauthorize_subscription(self, user_id: str, subscription_id: str) -> None:
        """`POST /subscriptions/{id}/reauthorize` (answer to a `reauthorizationRequired` lifecycle event)."""

    @abstractmethod
    async def delete_subscription(self, user_id: str, subscription_id: str) -> None:
        """`DELETE /subscriptions/{id}`; a subscription already gone is not an error."""

    async def delete_meeting(self, user_id: str, meeting_id: str) -> bool:
        """`DELETE /users/{id}/onlineMeetings/{meetingId}` (erasure); False if it was already gone (404).
        Not abstract so test doubles that never erase need not implement it."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete online meetings")

    async def send_mail(self, user_id: str, to: str, subject: str, text: str) -> None:
        """`POST /users/{id}/sendMail` (or `/me/sendMail`): a plain-text message from the driver's mailbox, kept
        in Sent Items. Not abstract so test doubles that never mail need not implement it."""
        raise NotImplementedError(f"{type(self).__name__} cannot send mail")

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
