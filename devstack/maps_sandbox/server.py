"""Run a MapsSandbox on a loopback port, in the current event loop (tests) or as a process (the local stack)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp.test_utils import TestServer

from devstack.maps_sandbox.sandbox import MapsSandbox


@contextlib.asynccontextmanager
async def serve(sandbox: MapsSandbox, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve until the block ends; yields the MAPS_BASE_URL, e.g. http://127.0.0.1:41234 (port 0: a free one)."""
    server = TestServer(sandbox.app(), host=host, port=port or None)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def _main(port: int) -> None:
    async with serve(MapsSandbox(), port=port) as url:
        print(f"Azure Maps sandbox at {url} (set MAPS_BASE_URL to it)", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Local Azure Maps sandbox (geocoding, routes, EV charging)")
    parser.add_argument("--port", type=int, default=7076)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port))


if __name__ == "__main__":
    main()
