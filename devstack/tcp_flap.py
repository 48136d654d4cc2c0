"""A TCP relay whose link can be cut: the network between a car and its hub, flapping on demand.

The device SDK speaks MQTT over TLS end to end with the hub, so a plain byte relay in between changes nothing the
two ends see until it is cut. `down()` is what a tunnel or a dead cell does to the car: every relayed connection
is reset (both ends see the TCP connection die, as when a NAT or a gateway drops the flow) and new connections
are refused (the listener is closed) until `up()`. The HTTP proxies (devstack/http_proxy.py) fault requests; this
cuts the link under a protocol they do not speak.

    flap = TcpFlap(("127.0.0.9", 8883))
    await flap.start("127.0.0.8", 8883)   # the address the device dials
    await flap.down(); ...; await flap.up()
    await flap.stop()

Unlike a real network, a cut here is always noticed at once (a reset, never a silent black hole where the client
only notices at its keep-alive); what the client does about it is the thing under test, not how long it takes
to notice.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class TcpFlap:
    upstream: tuple[str, int]
    connections: int = 0  # relayed connections accepted while up
    cuts: int = 0  # times `down()` was called
    reset: int = 0  # connections reset by `down()`
    _server: asyncio.Server | None = None
    _listen: tuple[str, int] | None = None
    _links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def is_up(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The port listened on (useful with port 0); only while up."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port and relay to `upstream`."""
        self._listen = (host, port)
        await self.up()

    async def up(self) -> None:
        """Accept connections again (no-op while up)."""
        if self._server is not None or self._listen is None:
            return
        host, port = self._listen
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        if port == 0:
            self._listen = (host, self.port)  # the same port after a flap

    async def down(self) -> None:
        """Reset every relayed connection and refuse new ones until `up()`."""
        self.cuts += 1
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1)
        for client, upstream in list(self._links):
            self.reset += 1
            client.transport.abort()
            upstream.transport.abort()
        self._links.clear()

    async def flap(self, seconds: float) -> None:
        """Down for `seconds`, then up."""
        await self.down()
        await asyncio.sleep(seconds)
        await self.up()

    async def stop(self) -> None:
        await self.down()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        if self._server is None:  # cut while connecting upstream
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.connections += 1
        link = (writer, up_writer)
        self._links.add(link)
        pumps = [asyncio.create_task(_pump(reader, up_writer)), asyncio.create_task(_pump(up_reader, writer))]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self._tasks.difference_update(pumps)
            self._links.discard(link)
            for w in link:
                w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
