"""Every error the application answers becomes `application/problem+json` here, through the one table in
problems.py; nothing else in the API builds an error response.

- a domain error (shared/errors.py): its status; any other FleetError: 503 + Retry-After
- request validation: 400 for path and query (and a body that is not a JSON object), 422 for body fields
- a body over MAX_BODY_BYTES: 413, before anything reads it (BodyLimit)
- an unknown path or method: 404 / 405
- anything else: 500, logged with its stack trace, which never reaches the body
"""

from __future__ import annotations

import logging
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.api.problems import NO_STORE, PROBLEM_JSON, TITLES, Problem, ProblemAnswer, answer_for
from shared.errors import FleetError

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 4096
PARAMETER_SOURCES: Final = frozenset({"path", "query", "header", "cookie"})
# pydantic error types that say "the body is not a JSON object at all": a 400 like malformed JSON, not a 422
NOT_AN_OBJECT: Final = frozenset({"json_invalid", "model_attributes_type", "model_type", "dict_type"})


def problem_response(answer: ProblemAnswer) -> Response:
    return Response(
        answer.problem.to_json(), status_code=answer.problem.status, headers=answer.headers, media_type=PROBLEM_JSON
    )


def _field_errors(errors: list[Any]) -> list[dict[str, str]]:
    out = []
    for error in errors:
        where = ".".join(str(part) for part in error.get("loc", ())) or "request"
        out.append({"field": where, "message": str(error.get("msg", "invalid"))})
    return out


def validation_problem(exc: RequestValidationError) -> Problem:
    errors = list(exc.errors())
    sources = {str(error.get("loc", ("body",))[0]) for error in errors}
    if sources & PARAMETER_SOURCES:
        bad = sorted(sources & PARAMETER_SOURCES)
        return Problem(
            400, f"Invalid {bad[0]}", f"the {' and '.join(bad)} parameters are invalid", _field_errors(errors)
        )
    if any(error.get("type") in NOT_AN_OBJECT and len(error.get("loc", ())) <= 2 for error in errors):
        if any(error.get("type") == "json_invalid" for error in errors):
            return Problem(400, "Invalid JSON", "the body must be a JSON object")
        if all(len(error.get("loc", ())) == 1 for error in errors):
            return Problem(400, "Invalid body", "the body must be a JSON object")
    return Problem(422, TITLES[422], "the body is invalid", _field_errors(errors))


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return problem_response(ProblemAnswer(validation_problem(exc), dict(NO_STORE)))


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = {404: "no such route", 405: f"{request.method} is not allowed here"}.get(status, str(exc.detail))
    headers = {**NO_STORE, **(exc.headers or {})}
    return problem_response(ProblemAnswer(Problem(status, TITLES.get(status, "Error"), detail), headers))


async def _on_domain(request: Request, exc: Exception) -> Response:
    answer = answer_for(exc, token_sent=bool(request.headers.get("authorization")))
    if answer.problem.status >= 500:
        log.warning("%s %s: %s", request.method, request.scope.get("route", request.url.path), type(exc).__name__)
    return problem_response(answer)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path)
    return problem_response(answer_for(exc))


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(FleetError, _on_domain)
    app.add_exception_handler(Problem, _on_domain)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)


class BodyLimit:
    """Refuse a body over `limit` bytes with 413 before the application reads any of it. Reads the body once and
    hands it on whole (the Functions host delivers it in one piece anyway)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                problem = Problem(413, TITLES[413], f"at most {self.limit} bytes")
                await problem_response(ProblemAnswer(problem, dict(NO_STORE)))(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class Shield:
    """The outermost layer: Starlette answers an unexpected exception through the handler above and then raises it
    again for the server to log; under `func.AsgiFunctionApp` that would fail the invocation and replace our
    answer with the host's bare 500. Here it ends: logged once, answered once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if scope["type"] != "http":
                raise
            if started:  # the handler answered (and logged) it
                return
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            await problem_response(answer_for(exc))(scope, receive, send)
