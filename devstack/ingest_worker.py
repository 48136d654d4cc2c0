"""A function worker process for telemetry batches, and a trigger that kills it: crash recovery, for real.

In Azure the Python worker is a process of its own; when it dies mid-batch (out of memory, a native crash, a
scale-in), the Functions host starts a new one and redelivers every batch it had not checkpointed: at least
once, checkpoint only after success. The local host (devstack/host) runs the functions in its own process,
so it cannot show that. Here:

- `python -m devstack.ingest_worker` is the worker: it imports the app as the host indexes it
  (devstack/function_index.py), reads batches (one JSON line each) on stdin, runs `ingest_telemetry` on each
  (concurrently, as the worker does for several partitions), and answers one JSON line per batch on stdout.
  Its settings (COSMOS_ENDPOINT, the storage connection string, ...) come from its environment.
- `CrashingTrigger` (in the parent) reads the Event Hubs partitions like the host's trigger, hands each batch
  to the worker, SIGKILLs the worker at random moments while batches are in flight, starts a new one and
  redelivers the same batches; a partition's position advances only when its batch succeeded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import os
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson

from devstack.eventhubs import EventHub, StoredEvent

ROOT: Final = Path(__file__).resolve().parent.parent
FUNCTION: Final = "ingest_telemetry"
READY: Final = b"ready\n"

log = logging.getLogger(__name__)


def event_to_json(event: StoredEvent) -> dict[str, Any]:
    return {
        "body": base64.b64encode(event.body).decode(),
        "partition": event.partition,
        "sequenceNumber": event.sequence_number,
        "enqueuedTime": event.enqueued_time.isoformat(),
        "properties": dict(event.properties),
        "systemProperties": dict(event.system_properties),
    }


def event_from_json(data: Mapping[str, Any]) -> StoredEvent:
    return StoredEvent(
        base64.b64decode(data["body"]),
        int(data["partition"]),
        int(data["sequenceNumber"]),
        dt.datetime.fromisoformat(data["enqueuedTime"]),
        dict(data["properties"]),
        dict(data["systemProperties"]),
    )


# -- the worker (child process) ---------------------------------------------------------------------------------


async def serve() -> None:
    from devstack.function_index import indexed_functions
    from devstack.host.eventhub_trigger import to_function_event
    from devstack.host.retry import call

    function = indexed_functions()[FUNCTION].get_user_function()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer

    async def run(request: dict[str, Any]) -> None:
        events = [to_function_event(event_from_json(e)) for e in request["events"]]
        try:
            await call(function, {"events": events})
            answer: dict[str, Any] = {"id": request["id"], "ok": True}
        except Exception as exc:  # the host would apply the retry policy: the parent redelivers
            answer = {"id": request["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        out.write(orjson.dumps(answer) + b"\n")
        out.flush()

    out.write(READY)
    out.flush()
    tasks: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        task = asyncio.create_task(run(orjson.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="worker %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve())
    return 0


# -- the parent side ---------------------------------------------------------------------------------------------


class WorkerDied(Exception):
    """The worker process ended (killed) with batches in flight."""


class Worker:
    """One worker process and the batches in flight on it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, environ: Mapping[str, str]) -> Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "devstack.ingest_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **environ},
            cwd=ROOT,
            limit=16 * 1024 * 1024,
        )
        assert process.stdout is not None
        if await process.stdout.readline() != READY:
            raise RuntimeError(f"the ingest worker did not start (exit code {await process.wait()})")
        return cls(process)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not self._reader.done()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            answer = orjson.loads(line)
            future = self._pending.pop(int(answer["id"]), None)
            if future is not None and not future.done():
                future.set_result(answer)
        await self.process.wait()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(WorkerDied(f"worker exited with {self.process.returncode}"))
        self._pending.clear()

    async def run(self, batch_id: int, events: list[StoredEvent]) -> dict[str, Any]:
        assert self.process.stdin is not None
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[batch_id] = future
        request = {"id": batch_id, "events": [event_to_json(e) for e in events]}
        try:
            self.process.stdin.write(orjson.dumps(request) + b"\n")
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            self._pending.pop(batch_id, None)
            raise WorkerDied("worker gone before the batch was handed over") from exc
        return await future

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process.returncode is None:
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.kill()
                await self.process.wait()
        await asyncio.gather(self._reader, return_exceptions=True)


class CrashingTrigger:
    """The Event Hubs trigger for `ingest_telemetry`, in a worker process it kills now and then.

    `positions` is the checkpoint per partition (shared with whoever read the hub before). Each batch handed
    to the worker is killed with probability `kill_probability` (at most `max_kills` in all) at a random
    moment within the batch's expected duration; killed or failed batches are redelivered, whole, to a new
    worker. `stats`: batches, kills, redeliveries, failures (the function raised).
    """

    def __init__(
        self,
        hub: EventHub,
        positions: list[int],
        environ: Mapping[str, str],
        *,
        max_batch_size: int = 100,
        kill_probability: float = 0.5,
        max_kills: int = 4,
        seed: int = 3,
        retry_delay: float = 0.5,
    ) -> None:
        self.hub = hub
        self.positions = positions
        self.environ = dict(environ)
        self.max_batch_size = max_batch_size
        self.kill_probability = kill_probability
        self.max_kills = max_kills
        self.retry_delay = retry_delay
        self.stats: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._worker: Worker | None = None
        self._starting = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._batch_ids = 0
        self._durations: list[float] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._partition(i)) for i in range(len(self.hub.partitions))]

    def backlog(self) -> list[int]:
        return [len(p.events) - pos for p, pos in zip(self.hub.partitions, self.positions, strict=True)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._worker is not None:
            await self._worker.stop()

    async def _current_worker(self) -> Worker:
        async with self._starting:
            if self._worker is None or not self._worker.alive:
                if self._worker is not None:
                    await self._worker.stop()
                    self.stats["worker_restarts"] += 1
                self._worker = await Worker.start(self.environ)
            return self._worker

    async def _partition(self, index: int) -> None:
        while True:
            events = await self.hub.read(index, self.positions[index], self.max_batch_size, 1.0)
            if not events:
                continue
            self.stats["batches"] += 1
            while not await self._deliver(events):
                self.stats["redeliveries"] += 1
                await asyncio.sleep(self.retry_delay)
            self.positions[index] += len(events)  # checkpoint: only now

    async def _deliver(self, events: list[StoredEvent]) -> bool:
        worker = await self._current_worker()
        self._batch_ids += 1
        killer: asyncio.TimerHandle | None = None
        if self.stats["kills"] < self.max_kills and self._rng.random() < self.kill_probability:
            expected = sorted(self._durations)[len(self._durations) // 2] if self._durations else 0.3
            delay = self._rng.uniform(0.0, 1.2 * expected)
            killer = asyncio.get_running_loop().call_later(delay, self._kill, worker)
        started = time.monotonic()
        try:
            answer = await worker.run(self._batch_ids, events)
        except WorkerDied:
            self.stats["killed_batches"] += 1
            return False
        finally:
            if killer is not None:
                killer.cancel()
        if not answer.get("ok"):
            self.stats["failures"] += 1
            log.warning("ingest worker: batch failed: %s", answer.get("error"))
            return False
        self._durations.append(time.monotonic() - started)
        return True

    def _kill(self, worker: Worker) -> None:
        if worker.alive and self.stats["kills"] < self.max_kills:
            self.stats["kills"] += 1
            worker.kill()


if __name__ == "__main__":
    sys.exit(main())
