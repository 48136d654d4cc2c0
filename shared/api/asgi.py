"""The ASGI callable function_app.py mounts: it builds the FastAPI application on the first HTTP request.

Importing FastAPI, Starlette and the models costs 0.3-0.6 s on this plan's machines; an instance that only runs
the Event Hubs, queue and timer triggers never pays it, and an HTTP instance pays it on its first request
instead of at indexing (docs/performance.md, cold start). Lifespan events are answered here: the application
has no startup work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send


class LazyApp:
    def __init__(self) -> None:
        self._app: ASGIApp | None = None

    @property
    def app(self) -> ASGIApp:
        """The application, built on first use (synchronously: two first requests cannot both build it)."""
        if self._app is None:
            from shared.api.app import create_app

            self._app = create_app()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        await self.app(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: Any = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


asgi_app = LazyApp()
