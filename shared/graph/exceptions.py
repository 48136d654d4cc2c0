"""Errors a GraphClient raises: one base class, and the cases the domain code decides on differently."""

from __future__ import annotations

from shared.errors import FleetError


class GraphError(FleetError):
    """Graph refused or failed a call; `status` is the HTTP status (None when no response came back)."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def transient(self) -> bool:
        """Worth retrying later: throttling, server errors, no response at all."""
        return self.status is None or self.status in (408, 429) or self.status >= 500


class SyncStateGoneError(GraphError):
    """The delta token is no longer valid (`410 Gone`, `syncStateNotFound`, `resyncRequired`): full resync."""


class ThrottledError(GraphError):
    """Still throttled (429/503) after the SDK's own retries, which already honoured `Retry-After`."""

    def __init__(self, message: str, status: int, retry_after_seconds: float) -> None:
        super().__init__(message, status, "throttled")
        self.retry_after_seconds = retry_after_seconds


class GraphNotFoundError(GraphError):
    """The resource (subscription, user, event) does not exist (404)."""


class GraphForbiddenError(GraphError):
    """403: the credential lacks the permission, or the account cannot do this at all (a personal Microsoft
    account has no Teams `onlineMeetings`). Not transient: asking again gets the same answer."""


class ReauthRequiredError(GraphError):
    """A driver's delegated token cannot be had (refresh token revoked or expired, token cache unreadable) or
    Graph refused it with 401 InvalidAuthenticationToken. Only the driver signing in again fixes it, so it is
    not transient (status 401) and must not be retried in a loop. Application-permission 401s stay GraphError."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 401, "reauth_required")
