"""The one dependency that enforces a route's `Requirement`: every route declares it through `guard(...)`.

    @router.get("/vehicles/{vehicleId}")
    async def get_vehicle(access: Annotated[Access, guard(requires(Permission.READ_VEHICLES, on="vehicle"))], ...)

or, for a route that does not need the grant, `dependencies=[guard(PUBLIC)]`. The requirement stays readable
from the route (`requirement_of(route)`), so the route table test, the OpenAPI document and the access matrix
are all built from `app.routes`: a route without a guard fails the suite.

The guard runs before the route's parameters are validated: a caller without a valid token learns nothing about
ids. Every refused attempt is recorded in the audit log; audited requirements (`Requirement.audited`) also record
the outcome of every allowed one.
"""

# No `from __future__ import annotations`: FastAPI reads Guard.__call__'s annotations at runtime, and an
# instance has no module globals to resolve strings against.
import inspect
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute

from shared.api import runtime
from shared.api.problems import NO_STORE, status_of
from shared.auth.policy import AUDIT_DENIED
from shared.errors import AccessDeniedError, UnknownResourceError

if TYPE_CHECKING:
    from shared.api.services import AuditLog, Gatekeeper
    from shared.auth.access import Access
    from shared.auth.policy import Requirement

USER_AGENT_MAX: Final = 256
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
DENIED: Final = AUDIT_DENIED


async def _provided(request: Request, provider: Any) -> Any:
    """The runtime object, honouring `app.dependency_overrides` (resolved here, not as a sub-dependency, so a
    public route never needs a gatekeeper)."""
    found = request.app.dependency_overrides.get(provider, provider)()
    return await found if inspect.isawaitable(found) else found


def client_of(request: Request) -> dict[str, str]:
    """Where the request came from, for the audit log: the first X-Forwarded-For hop (the Functions front end
    sets it) or the socket peer, and the user agent (truncated)."""
    client: dict[str, str] = {}
    forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
    if forwarded:
        client["ip"] = forwarded[:64]
    elif request.client is not None:
        client["ip"] = request.client.host
    agent = request.headers.get("user-agent")
    if agent:
        client["userAgent"] = agent[:USER_AGENT_MAX]
    return client


AUDIT_RESOURCE: Final = "audit_resource"


def audit_resource(request: Request, **ids: str) -> None:
    """Name what the endpoint acted on beyond its path parameters, for the audit entry (ids and names only)."""
    setattr(request.state, AUDIT_RESOURCE, {k: str(v) for k, v in ids.items()})


class Guard:
    """The dependency of one requirement (one instance per route declaration)."""

    def __init__(self, requirement: "Requirement") -> None:
        self.requirement = requirement

    def __repr__(self) -> str:
        return f"Guard({self.requirement!r})"

    async def __call__(self, request: Request, response: Response) -> AsyncIterator["Access | None"]:
        response.headers.update(NO_STORE)
        requirement = self.requirement
        if requirement.target == "public":
            yield None
            return
        gatekeeper: Gatekeeper = await _provided(request, runtime.gatekeeper)
        principal = await gatekeeper.authenticate(request.headers.get("authorization"))
        params = {name: str(value) for name, value in request.path_params.items()}
        route = request.scope.get("route")
        name = getattr(route, "name", "") or request.url.path
        try:
            access = await gatekeeper.authorize(principal, requirement, params)
        except (AccessDeniedError, UnknownResourceError) as refused:
            # Every refusal is recorded, reads included: probing another brand's ids is what the log is for.
            denied: AuditLog = await _provided(request, runtime.audit_log)
            await denied.record(principal, requirement, name, params, DENIED, status_of(refused), client_of(request))
            raise
        audit: AuditLog | None = await _provided(request, runtime.audit_log) if requirement.audited else None
        if audit is None:
            yield access
            return
        try:
            yield access
        except Exception as exc:
            await audit.record(access, requirement, name, params, FAILED, status_of(exc), client_of(request))
            raise
        status = (
            response.status_code or getattr(route, "status_code", None) or 200
        )  # set by the endpoint, or its default
        # What the endpoint created, when the path does not name it (a command's id and name): ids only.
        params |= getattr(request.state, AUDIT_RESOURCE, None) or {}
        await audit.record(access, requirement, name, params, SUCCEEDED, status, client_of(request))


def guard(requirement: "Requirement") -> Any:
    """The route's dependency for `requirement` (the only way a route declares what it needs). Its exit runs when
    the endpoint returns, before the answer is sent, so an audit write that fails is answered (503), not lost."""
    return Depends(Guard(requirement), scope="function")


def _guards(dependant: Dependant) -> Iterator[Guard]:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, Guard):
            yield dependency.call
        yield from _guards(dependency)


def requirement_of(route: APIRoute) -> "Requirement | None":
    """The requirement a route declared; None if it declared none. Two different ones are a mistake."""
    found = {g.requirement for g in _guards(route.dependant)}
    if len(found) > 1:
        raise ValueError(f"{route.path}: more than one requirement: {sorted(map(repr, found))}")
    return next(iter(found), None)


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[tuple[str, APIRoute]]:
    """(full path template, route) of every API route of an app (`app.routes`), included routers flattened."""
    for context in iter_route_contexts(routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            yield str(context.path_format or route.path_format), route


def requirements(routes: Sequence[BaseRoute]) -> "dict[tuple[str, str], Requirement | None]":
    """(METHOD, path) → requirement of every API route of an app (`app.routes`)."""
    table: dict[tuple[str, str], Requirement | None] = {}
    for path, route in api_routes(routes):
        for method in sorted(route.methods or ()):
            table[method, path] = requirement_of(route)
    return table
