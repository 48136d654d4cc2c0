"""Public by design: the OpenAPI document, the dashboard's page and assets (they hold no data) and readiness."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Request, Response

from shared.api.guard import guard
from shared.api.openapi import build_openapi
from shared.auth.policy import PUBLIC
from shared.dashboard import ASSETS, serve
from shared.observability.readiness import CachedReadiness
from shared.per_loop import PerLoop

router = APIRouter()
ASSET_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The asset",
        "content": {
            "text/javascript": {"schema": {"type": "string"}},
            "text/css": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},  # config.json: the sign-in configuration
        },
    },
    404: {"description": "No such asset", "content": {"text/plain": {"schema": {"type": "string"}}}},
}
ASSET_NAMES = [name for name in ASSETS if name != "index.html"]
Asset = Annotated[str, Path(description="The page's script or style sheet.", json_schema_extra={"enum": ASSET_NAMES})]
PAGE: dict[int | str, dict[str, Any]] = {
    200: {"description": "The dashboard page", "content": {"text/html": {"schema": {"type": "string"}}}}
}


@router.get("/openapi.json", dependencies=[guard(PUBLIC)], summary="This document", tags=["meta"])
async def get_openapi(request: Request) -> Any:
    return build_openapi(request.app)


def _answer(asset: str | None) -> Response:
    found = serve(asset)
    return Response(found.body, status_code=found.status, headers=found.headers, media_type=found.content_type)


@router.get(
    "/dashboard", dependencies=[guard(PUBLIC)], response_class=Response, responses=PAGE, tags=["dashboard"],
    summary="The fleet dashboard (the page signs in; it holds no data and no key)",
)  # fmt: skip
async def get_dashboard() -> Response:
    return _answer(None)


@router.get("/dashboard/", dependencies=[guard(PUBLIC)], response_class=Response, include_in_schema=False)
async def get_dashboard_slash() -> Response:
    return _answer(None)


@router.get(
    "/dashboard/{asset}", dependencies=[guard(PUBLIC)], response_class=Response, tags=["dashboard"],
    summary="The dashboard's script and style sheet",
    responses=ASSET_ANSWERS,
)  # fmt: skip
async def get_dashboard_asset(asset: Asset) -> Response:
    return _answer(asset)


READY: dict[int | str, dict[str, Any]] = {
    200: {"description": "Every dependency answered: `{status: ready, checks: {cosmos: ok, queues: ok, iothub: ok}}`"},
    503: {"description": "A dependency did not answer in time: `status: not_ready`, the ones `down` named"},
}
_readiness = PerLoop(CachedReadiness)


async def readiness_checker() -> CachedReadiness:
    """The process's readiness checker (a dependency: tests give the route their own probes). Async, so FastAPI
    runs it on the event loop, whose checker it is (a plain function would run in a worker thread)."""
    return _readiness.get()


@router.get(
    "/health/ready", dependencies=[guard(PUBLIC)], tags=["meta"], responses=READY,
    summary="Readiness for the platform's probes: can the app reach Cosmos DB, its queues and IoT Hub",
)  # fmt: skip
async def get_readiness(checker: Annotated[CachedReadiness, Depends(readiness_checker)]) -> Response:
    """Public, as the platform's probes (load balancers, Front Door, a stamp router) carry no token; the answer
    names dependencies and ok/down only, and is cached for a few seconds (shared/observability/readiness.py)."""
    answer = await checker.get()
    return Response(
        orjson.dumps(answer.to_json()),
        status_code=200 if answer.ready else 503,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
