"""Run a GraphSandbox on a loopback port, in the current event loop (tests) or as a process (the local stack)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from devstack.graph_sandbox.sandbox import GraphSandbox


@contextlib.asynccontextmanager
async def serve(sandbox: GraphSandbox, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve until the block ends; yields the Graph base URL, e.g. http://127.0.0.1:41234/v1.0."""
    runner = web.AppRunner(sandbox.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only here
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield f"http://{host}:{bound}/v1.0"
    finally:
        await runner.cleanup()


async def _main(port: int, seed: bool, jwks_url: str | None, ca_file: str | None) -> None:
    from devstack.graph_sandbox.seed import seed_account_calendars, seed_accounts, seed_demo_calendars

    sandbox = GraphSandbox(jwks_url, ca_file)
    if seed:
        seed_demo_calendars(sandbox)
        seed_account_calendars(sandbox, seed_accounts())
    async with serve(sandbox, port=port) as url:
        print(f"Graph sandbox at {url} (set GRAPH_BASE_URL to it)", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Local Microsoft Graph sandbox for the calendar features")
    parser.add_argument("--port", type=int, default=8095)
    parser.add_argument("--no-seed", action="store_true", help="start with empty calendars")
    parser.add_argument("--jwks-url", help="the identity provider's JWKS, to verify delegated tokens on /me routes")
    parser.add_argument("--ca-file", help="a CA file to trust for the JWKS URL (the local provider's CA)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.port, not args.no_seed, args.jwks_url, args.ca_file))


if __name__ == "__main__":
    main()
