"""RFC 7807 problem details, and the one table that maps a domain exception to the HTTP status it answers.

Domain code raises the errors of shared/errors.py and never knows a status; the HTTP application
(shared/api/handlers.py) and the Graph webhook (functions/calendar.py) answer through this module. It imports
neither FastAPI nor pydantic, so the webhook's function stays light at cold start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from shared.errors import (
    AccessDeniedError,
    AlreadyExistsError,
    AuthenticationError,
    FeatureDisabledError,
    FleetError,
    InvalidRequestError,
    RateLimitedError,
    RequestError,
    StateConflictError,
    UnknownResourceError,
)

PROBLEM_JSON: Final = "application/problem+json"
REALM: Final = "fleet-api"
RETRY_AFTER_SECONDS: Final = 5
NO_STORE: Final = {"Cache-Control": "no-store"}

# Most specific first: the first class an exception is an instance of decides.
STATUS_OF: Final[tuple[tuple[type[RequestError], int], ...]] = (
    (InvalidRequestError, 400),
    (UnknownResourceError, 404),
    (AlreadyExistsError, 409),
    (StateConflictError, 409),
    (RateLimitedError, 429),
    (FeatureDisabledError, 403),
    (AuthenticationError, 401),
    (AccessDeniedError, 403),
    (RequestError, 400),
)
TITLES: Final = {
    400: "Invalid request",
    401: "Unauthenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Already exists",
    413: "Body too large",
    422: "Invalid body",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


@dataclass(frozen=True)
class Problem(Exception):
    """One problem answer: `errors` lists field problems as {field, message}."""

    status: int
    title: str
    detail: str
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> bytes:
        body: dict[str, Any] = {
            "type": f"https://httpstatuses.io/{self.status}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = self.errors
        return orjson.dumps(body)


@dataclass(frozen=True)
class ProblemAnswer:
    """What to send: the problem and the headers that go with its status (always `Cache-Control: no-store`)."""

    problem: Problem
    headers: dict[str, str]


def status_of(exc: BaseException) -> int:
    """The status an exception answers: its RequestError class, 503 for any other FleetError (a backing service
    failed after the SDKs' retries), a Problem's own status, 500 for anything else."""
    if isinstance(exc, Problem):
        return exc.status
    if isinstance(exc, RequestError):
        return next(status for cls, status in STATUS_OF if isinstance(exc, cls))
    if isinstance(exc, FleetError):
        return 503
    return 500


def www_authenticate(reason: str | None) -> str:
    """RFC 6750 challenge. No error attributes without a token at all (section 3.1); never the token itself."""
    if reason is None:
        return f'Bearer realm="{REALM}"'
    safe = reason.replace("\\", "").replace('"', "'")[:200]
    return f'Bearer realm="{REALM}", error="invalid_token", error_description="{safe}"'


def answer_for(exc: BaseException, *, token_sent: bool = True) -> ProblemAnswer:
    """The problem answer of a domain exception. Details of an unexpected exception or of a failed backing service
    never reach the caller (the caller of this function logs them). `token_sent`: whether the request carried an
    Authorization header; without one a 401's challenge has no error attributes (RFC 6750 section 3.1)."""
    status = status_of(exc)
    headers = dict(NO_STORE)
    if isinstance(exc, Problem):
        return ProblemAnswer(exc, headers)
    if isinstance(exc, RequestError):
        title = exc.title if status == 400 or type(exc).title != RequestError.title else TITLES[status]
        if isinstance(exc, AuthenticationError):
            headers["WWW-Authenticate"] = www_authenticate(exc.detail if token_sent else None)
        if isinstance(exc, RateLimitedError):
            headers["Retry-After"] = str(exc.retry_after)
        return ProblemAnswer(Problem(status, title, exc.detail, list(exc.errors)), headers)
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return ProblemAnswer(Problem(503, TITLES[503], "a backing service failed; retry later"), headers)
    return ProblemAnswer(Problem(500, TITLES[500], "the request failed; it was logged"), headers)
