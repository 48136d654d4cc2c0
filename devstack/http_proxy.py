"""A streaming reverse proxy on loopback (aiohttp): the base of the proxies the local stack puts in front of its
stand-ins (devstack/cosmos_proxy.py in front of the Cosmos-compatible server, and a plain one in front of the
local IoT Hub's service API).

Why a proxy at all: the stand-ins are third-party servers (or other engineers' code) that we neither can nor
want to change, yet tests need them to behave like Azure — refuse what Azure refuses, and fail the way Azure
fails. A proxy adds that in one place, for every client of the stack (functions, tests, demo), without a
second code path in the app.

Forwarding is byte-for-byte: request and response bodies are streamed, compressed bodies are not decoded,
and only hop-by-hop headers are dropped. Subclasses decide per request with `handle` (answer, forward, or
forward a rewritten body), and can run the whole thing in a thread of its own (`running_in_thread`) so that
synchronous code (pytest's session fixtures, the stack's exit stack) can own it and a busy test loop never
delays it.

Every proxy carries a `FaultPlan` (devstack/faults.py): before a request is handled, the plan may pick a
fault for it — delay it, reset the connection, hold it unanswered, answer 429/503, or apply it upstream and
then fail towards the client. `classify` says which requests are reads or writes (others are never faulted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
import struct
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Final, TypeVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from devstack.faults import Fault, FaultKind, FaultPlan, Operation

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1 hop-by-hop headers, plus those the client library sets itself for the new connection.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
MAX_BODY_BYTES: Final = 64 * 1024 * 1024  # read limit for bodies a subclass inspects (above any Azure limit)

Rewrite = Callable[[int, CIMultiDict[str], bytes], tuple[bytes, CIMultiDict[str]]]


class ReverseProxy:
    """Forwards every request to `upstream` (an origin such as https://localhost:8081); see the module doc."""

    def __init__(
        self,
        upstream: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        verify_upstream: bool = True,
        faults: FaultPlan | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = faults if faults is not None else FaultPlan()
        self.host = host
        self.port = port
        self.url = ""  # set by start(): this proxy's origin, e.g. https://127.0.0.1:40123
        self.stats: Counter[str] = Counter()
        self._ssl_context = ssl_context
        self._verify_upstream = verify_upstream
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> str:
        connector = aiohttp.TCPConnector(ssl=self._verify_upstream, limit=256)
        # auto_decompress=False: bodies go through as the server encoded them (Content-Encoding kept).
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        scheme = "https" if self._ssl_context is not None else "http"
        self.url = f"{scheme}://{self.host}:{self.port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- per request -------------------------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        try:
            target = self.classify(request)
            fault = self.faults.choose(*target) if target is not None else None
            if fault is not None:
                return await self._inject(request, fault)
            return await self.handle(request)
        except UpstreamError as exc:
            self.stats["upstream_errors"] += 1
            log.warning("%s %s: upstream %s: %s", request.method, request.path, self.upstream, exc)
            return self.upstream_failed(request, exc)

    def classify(self, request: web.Request) -> tuple[Operation, str | None] | None:
        """(read or write, partition key or None) for requests faults may hit; None for the others."""
        return (Operation.READ if request.method in ("GET", "HEAD") else Operation.WRITE), None

    async def handle(self, request: web.Request, discard: bool = False) -> web.StreamResponse:
        """Decide what to do with one request; the base class forwards it unchanged. With `discard` the
        upstream's answer is read and dropped (the caller answers the client itself)."""
        return await self.forward(request, discard=discard)

    def error_answer(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        """An error in the service's shape (subclasses override); the base class answers plain JSON."""
        body = {"code": code, "message": message}
        return web.json_response(body, status=status, headers=dict(headers or {}))

    async def _inject(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        self.stats[f"fault:{fault.kind}"] += 1
        kind = fault.kind
        if kind is FaultKind.LATENCY:
            await asyncio.sleep(fault.latency)
            return await self.handle(request)
        if kind is FaultKind.THROTTLE:
            headers = {"x-ms-retry-after-ms": str(fault.retry_after_ms), "x-ms-substatus": "3200"}
            headers["Retry-After"] = str(max(1, math.ceil(fault.retry_after_ms / 1000)))
            return self.error_answer(429, "TooManyRequests", "Request rate is large (injected fault)", headers)
        if kind is FaultKind.UNAVAILABLE:
            return self.error_answer(503, "ServiceUnavailable", "Service is unavailable (injected fault)")
        if kind is FaultKind.BLACKHOLE:
            while True:  # accepted, never answered while the window lasts (or until the plan is cleared)
                if not self.faults.still_active(fault):
                    return _reset(request)
                await asyncio.sleep(0.05)
        if kind is FaultKind.RESET:
            return _reset(request)
        await self.handle(request, discard=True)  # applied upstream; the client never hears it
        if kind is FaultKind.APPLIED_THEN_503:
            return self.error_answer(503, "ServiceUnavailable", "Service is unavailable (injected after apply)")
        return _reset(request)

    def upstream_failed(self, request: web.Request, exc: Exception) -> web.StreamResponse:
        """What the client sees when the upstream cannot be reached (subclasses answer in the service's shape)."""
        return web.Response(status=502, text=f"upstream unavailable: {type(exc).__name__}")

    async def forward(
        self,
        request: web.Request,
        body: bytes | None = None,
        rewrite: Rewrite | None = None,
        discard: bool = False,
        add_headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        """Send the request upstream (with `body` if the caller already read it, and `add_headers` set on it) and
        stream the answer back.

        `rewrite(status, headers, body)` replaces the answer's body and headers; the answer is then read whole.
        `discard`: read the answer and return it unsent (for faults that apply a request and then fail it).
        """
        assert self._session is not None, "start() the proxy first"
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
        for name, value in (add_headers or {}).items():
            headers[name] = value
        data: Any
        if body is not None:
            headers.popall("Content-Length", None)
            data = body
        elif request.body_exists:
            data = request.content  # streamed; Content-Length (if any) is kept so nothing gets chunked
        else:
            data = None
        url = URL(self.upstream + request.raw_path, encoded=True)
        self.stats["forwarded"] += 1
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=data, allow_redirects=False
            ) as upstream:
                answer_headers = CIMultiDict((k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP)
                if discard:
                    await upstream.read()
                    return web.Response(status=upstream.status)
                if rewrite is not None:
                    raw = await upstream.read()
                    new_body, answer_headers = rewrite(upstream.status, answer_headers, raw)
                    answer_headers.popall("Content-Length", None)
                    return web.Response(status=upstream.status, body=new_body, headers=answer_headers)
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=answer_headers)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamError(str(exc) or type(exc).__name__) from exc


class UpstreamError(Exception):
    """The upstream server could not be reached or broke off its answer."""


def _reset(request: web.Request) -> web.StreamResponse:
    reset_connection(request)
    return web.Response(status=500)  # never sent: the connection is gone


def reset_connection(request: web.Request) -> None:
    """Break the client's connection with a TCP RST (SO_LINGER 0), as a crashed gateway or a dropped
    load-balancer flow does: the client sees "connection reset", not a clean close."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


T = TypeVar("T")


class LoopThread:
    """An event loop in a daemon thread, for servers that synchronous code owns."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Awaitable[T], timeout: float = 30) -> T:
        async def wrapper() -> T:
            return await coroutine

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


P = TypeVar("P", bound=ReverseProxy)


@contextlib.contextmanager
def running_in_thread(proxy: P, name: str = "proxy") -> Iterator[P]:
    """Start `proxy` on an event loop of its own (a daemon thread); stop it and the loop on exit."""
    thread = LoopThread(name)
    try:
        thread.run(proxy.start())
        yield proxy
    finally:
        with contextlib.suppress(Exception):
            thread.run(proxy.stop())
        thread.close()
