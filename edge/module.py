"""The module: source → collector (policy) → outbox → IoT Hub, and the twin's policy and agenda back.

`Transport` is the only thing that talks to IoT Hub. `IoTHubTransport` is the real one on
`azure.iot.device.aio.IoTHubModuleClient` (`create_from_edge_environment()` in a car, a module connection string
locally); tests use any object with the same methods. `send` returning is the acknowledgement the outbox waits
for: the SDK's `send_message` returns once the hub (edgeHub in a car, IoT Hub directly) accepted the message.

Each flush (every `intervalSeconds` of the policy):
1. when the link was down, a reported-property patch probes it first; nothing is framed while it is down;
2. messages framed earlier and not acknowledged are sent again as they are (same seq, same body): at most the
   one or two in flight when the link dropped, and queued requests; sent first so seqs arrive in order;
3. live first: the newest batch of samples that arrived since the last flush goes out as one message, before
   any of the backlog;
4. gaps (queued requests went with 3);
5. the backlog (samples left from an outage) drains oldest first at `backlog_per_second` messages per second.
While sending fails nothing new is framed, so the samples of an outage stay evictable by priority and the first
flush after reconnecting sends what is current, not what was current when the link dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge import contract, policy
from edge.commands import ModuleCommands, Outcome, command_id_of, report_id
from edge.outbox import Outbox, Outgoing
from edge.sources import Reading, Source, valid_ts

log = logging.getLogger("edge")

DesiredHandler = Callable[[dict[str, Any]], None]
MessageHandler = Callable[[bytes, dict[str, str]], None]
# A direct method to the module: (method name, payload) -> (status, payload answered).
MethodHandler = Callable[[str, Any], Awaitable[tuple[int, Any]]]
REPLY_METHOD = "reply"
KEPT_REPLIES = 256  # request ids whose replies the module keeps (the oldest forgotten first)


class Transport(Protocol):
    async def connect(self) -> None:
        """Connect and deliver twin patches and messages to the handlers given to `on_desired` / `on_message`."""

    async def send(self, kind: str, body: bytes) -> None:
        """Return only when the hub accepted the message; raise when it did not."""

    async def report(self, patch: dict[str, Any]) -> None: ...

    async def desired(self) -> dict[str, Any]: ...

    def on_desired(self, handler: DesiredHandler) -> None: ...

    def on_message(self, handler: MessageHandler) -> None: ...

    def on_method(self, handler: MethodHandler) -> None: ...

    async def close(self) -> None: ...


class IoTHubTransport:
    """The real SDK: one `IoTHubModuleClient`.

    Handlers are set after connecting, from another thread (the SDK's setter waits for the subscription, which
    would block the loop), and the SDK calls them on its own threads: they are handed to the module's loop, so
    the outbox and the collector have one owner.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._desired: DesiredHandler | None = None
        self._message: MessageHandler | None = None
        self._method: MethodHandler | None = None
        self._subscribed = False

    @classmethod
    def from_environment(cls, connection_string: str | None, ca_pem: str | None = None) -> IoTHubTransport:
        """In a car, from the IoT Edge environment; locally, a module connection string (and the local hub's CA)."""
        from azure.iot.device.aio import IoTHubModuleClient

        if connection_string:
            kwargs: dict[str, Any] = {"server_verification_cert": ca_pem} if ca_pem else {}
            return cls(IoTHubModuleClient.create_from_connection_string(connection_string, **kwargs))
        return cls(IoTHubModuleClient.create_from_edge_environment())

    async def connect(self) -> None:
        await self.client.connect()
        if self._subscribed:
            return
        loop = asyncio.get_running_loop()
        if self._desired is not None:
            desired = self._desired

            def on_patch(patch: dict[str, Any]) -> None:
                loop.call_soon_threadsafe(desired, {k: v for k, v in patch.items() if k != "$version"})

            await asyncio.to_thread(setattr, self.client, "on_twin_desired_properties_patch_received", on_patch)
        if self._message is not None and os.environ.get("IOTEDGE_MODULEID"):  # inputs exist only under edgeHub
            handler = self._message

            def received(message: Any) -> None:
                data = message.data if isinstance(message.data, bytes) else str(message.data).encode()
                props = {str(k): str(v) for k, v in (message.custom_properties or {}).items()}
                loop.call_soon_threadsafe(handler, data, props)

            await asyncio.to_thread(setattr, self.client, "on_message_received", received)
        if self._method is not None:
            await asyncio.to_thread(setattr, self.client, "on_method_request_received", self._method_handler(loop))
        self._subscribed = True

    def _method_handler(self, loop: asyncio.AbstractEventLoop) -> Callable[[Any], None]:
        """The SDK's handler (on its thread): the module's answer is computed and sent on the module's loop."""
        from azure.iot.device import MethodResponse

        method, client = self._method, self.client
        assert method is not None

        async def answer(request: Any) -> None:
            try:
                status, payload = await method(str(request.name), request.payload)
            except Exception as exc:  # never leave IoT Hub waiting for an answer that will not come
                log.warning("method %s failed: %s", request.name, type(exc).__name__)
                status, payload = 500, {"status": "failed", "reason": "internal_error", "message": type(exc).__name__}
            await client.send_method_response(MethodResponse.create_from_method_request(request, status, payload))

        def received(request: Any) -> None:
            asyncio.run_coroutine_threadsafe(answer(request), loop)

        return received

    async def send(self, kind: str, body: bytes) -> None:
        from azure.iot.device import Message

        message = Message(body, content_encoding=contract.CONTENT_ENCODING)  # type: ignore[no-untyped-call]
        message.content_type = contract.CONTENT_TYPE
        message.custom_properties.update(contract.properties(kind))
        await self.client.send_message(message)

    async def report(self, patch: dict[str, Any]) -> None:
        await self.client.patch_twin_reported_properties(patch)

    async def desired(self) -> dict[str, Any]:
        twin: dict[str, Any] = await self.client.get_twin()
        return {k: v for k, v in twin.get("desired", {}).items() if k != "$version"}

    def on_desired(self, handler: DesiredHandler) -> None:
        self._desired = handler

    def on_message(self, handler: MessageHandler) -> None:
        self._message = handler

    def on_method(self, handler: MethodHandler) -> None:
        self._method = handler

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.shutdown()


@dataclass
class EdgeModule:
    outbox: Outbox
    source: Source
    transport: Transport
    backlog_per_second: float = 5.0
    max_samples: int = 200
    clock: Callable[[], float] = time.monotonic
    collector: policy.Collector = field(default_factory=policy.Collector)
    online: bool = False
    replies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # the newest KEPT_REPLIES request ids
    commands: ModuleCommands | None = None  # None: every command answered `unsupported` (ModuleCommands' default)
    wall_clock: Callable[[], float] = time.time  # expiries of what the twin holds are absolute times
    source_backoff: tuple[float, float] = (1.0, 60.0)  # seconds before restarting a failed source: first, most
    source_restarts: int = 0  # times the source failed and was restarted (reported under `sources`)
    _mark: int = 0
    _tokens: float = 0.0
    _last_flush: float | None = None
    _reported: dict[str, Any] = field(default_factory=dict)
    _report_due: dict[str, Any] = field(default_factory=dict)
    _policy_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._mark = self.outbox.newest_id()  # after a restart, what is stored is backlog
        saved = self.outbox.get("policy")
        if isinstance(saved, dict) and isinstance(saved.get("signals"), dict):  # saved by a module before the array
            saved = {**saved, "signals": [{**rule, "path": path} for path, rule in saved["signals"].items()
                                          if isinstance(rule, dict)]}  # fmt: skip
        if saved is not None:
            with contextlib.suppress(policy.PolicyError):
                self.collector.apply(policy.parse(saved))
        if self.source.cursor_key is not None:
            self.source.resume(self.outbox.get(self.source.cursor_key))
        if self.commands is None:
            self.commands = ModuleCommands(self.outbox)
        self.transport.on_desired(self.on_desired)
        self.transport.on_message(self.on_message)
        self.transport.on_method(self.on_method)

    # -- cloud to car ----------------------------------------------------------------------------------------------

    @property
    def agenda(self) -> Any:
        """The last agenda the twin carried, kept across restarts and outages (a tunnel)."""
        return self.outbox.get("agenda")

    def on_desired(self, patch: dict[str, Any]) -> None:
        """A twin patch (or the whole desired document): policy and agenda take effect at once; replies and
        queued commands left in the twin while the module was away are taken (each id once)."""
        if "agenda" in patch:
            self.outbox.put("agenda", patch["agenda"])
        for body in self._twin_entries(patch.get("replies")):
            self._take_reply(body)
        for body in self._twin_entries(patch.get("commands")):
            self._queued_command(body)
        if "collection" in patch and patch["collection"] is not None:
            try:
                new = policy.parse(patch["collection"])
            except policy.PolicyError as exc:
                bad = patch["collection"].get("version") if isinstance(patch["collection"], dict) else None
                self._report_due["collection"] = {
                    "version": self.collector.policy.version, "status": "rejected",
                    "rejectedVersion": str(bad)[:64] if bad is not None else None, "error": str(exc)[:256],
                }  # fmt: skip
                log.warning("collection policy refused, keeping %s: %s", self.collector.policy.version, exc)
            else:
                self.collector.apply(new)
                self._policy_changed.set()  # a shorter interval takes effect now, not after the old one
                self.outbox.put("policy", patch["collection"])
                self._report_due["collection"] = {
                    "version": new.version,
                    "status": "applied",
                    "rejectedVersion": None,
                    "error": None,
                }

    def on_message(self, body: bytes, properties: dict[str, str]) -> None:
        """Replies to the car's requests (type=response), kept by requestId; the first copy wins."""
        try:
            message = contract.loads(body)
        except ValueError:
            return
        self._take_reply(message)

    def _take_reply(self, message: Any) -> bool:
        if not isinstance(message, dict) or not isinstance(message.get("requestId"), str):
            return False
        copies = self.replies.setdefault(message["requestId"], [])
        if message not in copies:  # the same reply by method and from the twin: kept once
            copies.append(message)
        while len(self.replies) > KEPT_REPLIES:  # bounded: the oldest request ids go first
            del self.replies[next(iter(self.replies))]
        return True

    def _twin_entries(self, entries: Any) -> list[Any]:
        """The bodies of a twin inbox (`{id: {"body": JSON text, "expiresAt"}}`) not yet expired; junk skipped."""
        if not isinstance(entries, dict):
            return []
        now = contract.utc_stamp(self.wall_clock())
        out = []
        for entry in entries.values():
            if not isinstance(entry, dict) or not isinstance(entry.get("body"), str):
                continue  # null: an entry the backend removed
            if not isinstance(entry.get("expiresAt"), str) or entry["expiresAt"] <= now:
                continue
            try:
                out.append(contract.loads(entry["body"].encode()))
            except ValueError:
                continue
        return out

    async def on_method(self, name: str, payload: Any) -> tuple[int, Any]:
        """A direct method from the backend: `reply` (a reply to one of the car's requests), else a command named
        after itself (docs/messages.md "Commands"; an unknown name is answered 404 `unsupported`)."""
        if name == REPLY_METHOD:
            if not self._take_reply(payload):
                return 400, {"message": "a reply is a JSON object with a requestId"}
            return 200, {"requestId": payload["requestId"]}
        assert self.commands is not None
        outcome, _ = self.commands.run(payload, "method", dt.datetime.now(dt.UTC), name)
        return outcome.method_answer()

    def _queued_command(self, body: Any) -> None:
        """A command left in the module twin: carried out once, reported like a queued C2D command (`delivered`,
        then its outcome) with `command.result` requests whose ids are fixed per command and status."""
        command_id = command_id_of(body)
        if command_id is None:
            return
        assert self.commands is not None
        now = dt.datetime.now(dt.UTC)
        name = body.get("name") if isinstance(body.get("name"), str) else None
        outcome, _ = self.commands.run(body, "twin", now, name)
        for status in ("delivered", outcome.status):
            self._report_command(command_id, status, now, outcome if status != "delivered" else None)

    def _report_command(self, command_id: str, status: str, at: dt.datetime, outcome: Outcome | None) -> None:
        fields: dict[str, Any] = {"commandId": command_id, "status": status}
        if outcome is not None and outcome.reason:
            fields["reason"] = outcome.reason
        fields["at"] = contract.utc_stamp(at.timestamp())
        self.request("command.result", requestId=report_id(command_id, status), **fields)

    # -- car to cloud ----------------------------------------------------------------------------------------------

    def request(self, action: str, **fields: Any) -> str:
        """Queue a car request (e.g. meeting.join) durably; it is sent once the module is online."""
        request_id = str(fields.pop("requestId", None) or uuid.uuid4())
        self.outbox.queue_request({"v": 1, "requestId": request_id, "action": action, **fields})
        return request_id

    def collect(self, reading: Reading) -> int:
        """Thin a reading by the policy and store what is kept; returns how many samples were stored.

        A reading that cannot be stored (a time no stamp can be written for, a value JSON cannot carry) is counted
        as rejected (`invalid_reading`) and skipped, its position committed; a failure of the outbox itself
        (SQLite's) is raised."""
        key = self.source.cursor_key
        cursor = (key, reading.token) if key is not None else None
        out: list[policy.Out] = []
        try:
            if not valid_ts(reading.ts):  # before the collector: a wrong time must not become its clock
                raise ValueError("time out of range")
            out = self.collector.offer(reading.ts, reading.signals)
            if out:
                self.outbox.append_many([(contract.utc_stamp(ts), sig, prio) for ts, sig, prio in out], cursor)
        except BaseException as exc:
            self.collector.forget(out)  # not stored: when the reading comes again, it is not thinned as sent
            if not isinstance(exc, (ValueError, OverflowError, TypeError)):
                raise
            log.warning("reading rejected: %s", type(exc).__name__)  # the type only: readings are personal data
            self.source.rejected["invalid_reading"] += 1
            if cursor is not None:
                self.outbox.put(*cursor)  # not read again after a restart
            return 0
        return len(out)

    async def flush(self) -> int:
        """One send round (see the module docstring); returns messages acknowledged. Never raises on the link."""
        now = self.clock()
        if self._last_flush is not None and self.online:  # no credit saved up while offline
            elapsed = now - self._last_flush
            self._tokens = min(self.backlog_per_second * 10, self._tokens + elapsed * self.backlog_per_second)
        self._last_flush = now
        sent = 0
        try:
            if not self.online:  # probe the link before framing, so what goes first after an outage is current
                await self.transport.report({"link": {"reconnectedAt": contract.utc_stamp(time.time())}})
                self.online, self._tokens = True, 0.0
            for msg in self.outbox.pending():  # at most one or two framed before the link dropped, and requests
                sent += await self._send(msg)
            newest = self.outbox.newest_id()
            live = self.outbox.frame(newest=True, above_id=self._mark, max_samples=self.max_samples)
            self._mark = newest
            if live is not None:
                sent += await self._send(live)
            for gap in self.outbox.frame_gaps():
                sent += await self._send(gap)
            while self._tokens >= 1:
                backlog = self.outbox.frame(newest=False, max_samples=self.max_samples)
                if backlog is None:
                    break
                self._tokens -= 1
                sent += await self._send(backlog)
            await self._report()
        except Exception as exc:  # any failure of the link: stay offline, retry next flush
            if self.online:
                log.warning("offline: %s", type(exc).__name__)
            self.online = False
        return sent

    async def _send(self, msg: Outgoing) -> int:
        await self.transport.send(msg.kind, msg.body)
        self.online = True
        self.outbox.ack(msg.kind, msg.key)
        return 1

    async def _report(self) -> None:
        state = {
            "outbox": {"epoch": self.outbox.epoch, "storedBytes": self.outbox.stored_bytes(),
                       "gaps": self.outbox.pending_gaps()},
            "sources": {"rejected": dict(self.source.rejected), "restarts": self.source_restarts},
            **self._report_due,
        }  # fmt: skip
        patch = {k: v for k, v in state.items() if self._reported.get(k) != v}
        if patch:
            await self.transport.report(patch)
            self._reported.update(patch)
            self._report_due.clear()

    async def sync_twin(self) -> None:
        """After (re)connecting: the whole desired document, for what changed while offline."""
        self.on_desired(await self.transport.desired())

    # -- main loop -------------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Collect and send until `stop` is set; then one last flush and close (graceful stop)."""
        collector = asyncio.create_task(self._collect_until(stop))
        try:
            with contextlib.suppress(Exception):
                await self.transport.connect()
                await self.sync_twin()
            while not stop.is_set():
                was_online = self.online
                await self.flush()
                if self.online and not was_online:  # (re)connected: subscriptions, and what changed meanwhile
                    with contextlib.suppress(Exception):
                        await self.transport.connect()
                        await self.sync_twin()
                self._policy_changed.clear()
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._policy_changed.wait())]
                await asyncio.wait(waits, timeout=self.collector.policy.interval, return_when=asyncio.FIRST_COMPLETED)
                for waiting in waits:
                    waiting.cancel()
        finally:
            collector.cancel()
            try:
                await collector
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # never: _collect_until keeps its errors; the last flush and close still run
                log.warning("collector failed: %s", type(exc).__name__)
            await self.flush()
            await self.transport.close()
            self.outbox.close()

    async def _collect_until(self, stop: asyncio.Event) -> None:
        """Collect until `stop` or the end of a finite source. The source is supervised: when it (or storing what
        it read) fails, the error is logged (its type only) and it is started again after a backoff (first, then
        doubled up to the most of `source_backoff`), from the position last committed: a Kuksa databroker not up
        yet or restarted, a full disk, a feed file gone for a while. An endless source that ends without an error
        (a databroker closing the subscription cleanly) is restarted the same way, else collection would stop
        with nothing in the log."""
        delay = self.source_backoff[0]
        while not stop.is_set():
            readings: AsyncIterator[Reading] | None = None
            try:
                if self.source.cursor_key is not None:  # from what the outbox holds, not where the source got to
                    self.source.resume(self.outbox.get(self.source.cursor_key))
                readings = self.source.readings()
                async for reading in readings:
                    if stop.is_set():
                        return
                    self.collect(reading)
                    await self.source.ack(reading)  # after the outbox committed: the source may now forget it
                    delay = self.source_backoff[0]
                if not self.source.endless or stop.is_set():
                    return  # a finite source ended (or the module is stopping: no restart to log)
                self.source_restarts += 1
                log.warning("source ended; restarting in %.1f s", delay)
            except Exception as exc:
                self.source_restarts += 1
                log.warning("source failed: %s; restarting in %.1f s", type(exc).__name__, delay)
            finally:
                aclose = getattr(readings, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, self.source_backoff[1])
