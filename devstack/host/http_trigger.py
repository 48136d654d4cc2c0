"""HTTP triggers on `http://localhost:7071/api/...`, as `func start` serves them.

Route templates (`cars/{id}`, `{id:int}`, optional `{id?}`, catch-all `{*route}` as `func.AsgiFunctionApp`
registers it), allowed methods, `func.HttpRequest` with `route_params` and every request header
(Authorization included), and a `func.Context` for functions that take a `context` parameter. When several
templates match, the most specific wins as in ASP.NET Core routing: literal segments before parameters before
a catch-all, so `graph/notifications` reaches its own function and not the API's `{*route}`. Function keys are
not checked locally, exactly as Core Tools does not check them (see docs/local-stack.md).
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from aiohttp import web

from devstack.host.bindings import FunctionSpec
from devstack.host.retry import call

log = logging.getLogger(__name__)
_PARAM = re.compile(
    r"\{(?P<catchall>\*{1,2})?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<constraint>[a-z]+))?(?P<optional>\?)?\}"
)
_CONSTRAINTS = {"int": r"-?\d+", "long": r"-?\d+", "guid": r"[0-9a-fA-F-]{36}", "bool": r"(?i:true|false)"}


def route_regex(template: str) -> re.Pattern[str]:
    """`cars/{id}/trips/{n:int?}` → a regex with named groups (optional last segments may be absent);
    `{*rest}` takes the rest of the path, slashes included, and may be empty."""
    pattern, last = "", 0
    for match in _PARAM.finditer(template):
        pattern += re.escape(template[last : match.start()])
        body = ".*" if match["catchall"] else _CONSTRAINTS.get(match["constraint"] or "", r"[^/]+")
        group = f"(?P<{match['name']}>{body})"
        if match["catchall"] and pattern.endswith("/"):
            pattern = pattern[:-1] + f"(?:/{group})?"
        elif match["optional"]:
            if pattern.endswith("/"):
                pattern = pattern[:-1] + f"(?:/{group})?"
            else:
                pattern += f"{group}?"
        else:
            pattern += group
        last = match.end()
    pattern += re.escape(template[last:])
    return re.compile(pattern, re.IGNORECASE)


def precedence(template: str) -> tuple[int, ...]:
    """Sort key of a template, most specific first: per segment a literal (0) before a parameter (1) before a
    catch-all (2); a template that has run out of segments sorts after one with a literal there."""
    kinds = []
    for segment in template.strip("/").split("/"):
        match = _PARAM.search(segment)
        kinds.append(0 if match is None else 2 if match["catchall"] else 1)
    return (*kinds, 3)


@dataclass(frozen=True)
class HttpRoute:
    spec: FunctionSpec
    regex: re.Pattern[str]
    methods: frozenset[str] | None  # None = every method
    template: str = ""

    @classmethod
    def of(cls, spec: FunctionSpec) -> HttpRoute:
        template = str(spec.trigger.get("route") or spec.name).strip("/")
        methods = spec.trigger.get("methods")
        allowed = frozenset(m.upper() for m in methods) if methods else None
        return cls(spec, route_regex(template), allowed, template)

    @property
    def takes_context(self) -> bool:
        """The Python worker hands a `func.Context` to a parameter named `context`."""
        return "context" in inspect.signature(self.spec.user_function).parameters


class LocalContext(func.Context):
    """The invocation context the Python worker passes (id, function name and directory)."""

    def __init__(self, function_name: str) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._local = threading.local

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return ""

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


def sort_routes(routes: list[HttpRoute]) -> list[HttpRoute]:
    """Most specific template first (stable: equal ones keep the app's order)."""
    return sorted(routes, key=lambda route: precedence(route.template))


def match_route(routes: list[HttpRoute], method: str, path: str) -> tuple[HttpRoute, dict[str, str]] | str | None:
    """The route and its parameters; "method" if the path matched but not the method; None if nothing did."""
    wrong_method = False
    for route in routes:
        match = route.regex.fullmatch(path)
        if match is None:
            continue
        if route.methods is not None and method.upper() not in route.methods:
            wrong_method = True
            continue
        return route, {k: v for k, v in match.groupdict().items() if v is not None}
    return "method" if wrong_method else None


class HttpHost:
    def __init__(self, specs: list[FunctionSpec], stats: Counter[str], route_prefix: str = "api") -> None:
        self.routes = sort_routes([HttpRoute.of(s) for s in specs])
        self.stats = stats
        self.prefix = route_prefix.strip("/")
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        # Local only, beside the host's own /admin API: the app's metrics as the local stack sees them.
        app.router.add_get("/admin/metrics", _metrics)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.strip("/")
        if self.prefix:
            if not (path == self.prefix or path.startswith(self.prefix + "/")):
                return web.Response(status=404)
            path = path[len(self.prefix) :].strip("/")
        found = match_route(self.routes, request.method, path)
        if found is None:
            return web.Response(status=404)
        if found == "method":
            return web.Response(status=405)
        assert not isinstance(found, str)
        route, params = found
        body = await request.read()
        http_request = func.HttpRequest(
            request.method,
            str(request.url),
            headers=dict(request.headers),
            params=dict(request.query),
            route_params=params,
            body=body,
        )
        arguments: dict[str, Any] = {route.spec.arg_name: http_request}
        if route.takes_context:
            arguments["context"] = LocalContext(route.spec.name)
        try:
            result = await call(route.spec.user_function, arguments)
        except Exception:
            self.stats[f"{route.spec.name}:failed"] += 1
            log.exception("%s failed", route.spec.name)
            return web.Response(status=500)
        self.stats[f"{route.spec.name}:ok"] += 1
        return to_aiohttp(result)


async def _metrics(request: web.Request) -> web.Response:
    """`GET /admin/metrics`: every catalogue metric recorded since the stack started (counters by attribute set,
    histograms with count, sum, min, max and p50/p95/p99), from shared/observability/metrics.py's local view."""
    from shared.observability.metrics import as_json, snapshot

    return web.json_response(as_json(snapshot()))


def to_aiohttp(result: Any) -> web.Response:
    if result is None:
        return web.Response(status=204)
    if isinstance(result, func.HttpResponse):
        headers: Mapping[str, str] = dict(result.headers)
        response = web.Response(status=result.status_code, body=result.get_body(), headers=headers)
        if result.mimetype and "Content-Type" not in headers:
            response.content_type = result.mimetype
            if result.charset:
                response.charset = result.charset
        return response
    if isinstance(result, (str, bytes)):
        return web.Response(body=result.encode("utf-8") if isinstance(result, str) else result)
    raise TypeError(f"an HTTP function returned {type(result).__name__}")
