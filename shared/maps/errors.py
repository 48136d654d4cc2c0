"""Errors a MapsClient raises: one base class and the cases the travel planner decides on differently."""

from __future__ import annotations

from shared.errors import FleetError


class MapsError(FleetError):
    """Azure Maps refused or failed a call; `status` is the HTTP status (None: no response), `code` its error
    code when it sent one."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def transient(self) -> bool:
        """Worth trying later (keep the last figures, marked stale): throttling, server errors, no response."""
        return self.status is None or self.status in (408, 429) or self.status >= 500


class MapsThrottledError(MapsError):
    """Still 429 after the client's bounded retries (which honoured Retry-After)."""

    def __init__(self, message: str, retry_after_seconds: float) -> None:
        super().__init__(message, 429, "TooManyRequests")
        self.retry_after_seconds = retry_after_seconds


class NoRouteError(MapsError):
    """No driving route exists between the points (sea between them, unroutable point): permanent."""

    def __init__(self, message: str, status: int | None = 400, code: str | None = "NO_ROUTE_FOUND") -> None:
        super().__init__(message, status, code)

    @property
    def transient(self) -> bool:
        return False
