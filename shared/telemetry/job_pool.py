"""A bounded pool of coroutine jobs that runs every job to its end and collects the failures.

The ingestor's vehicles of one batch are independent: one failing must not cancel the others (a transient
failure is raised for the whole batch only after every vehicle was tried, so the retry has the least to redo).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any

Job = Coroutine[Any, Any, None]
Failure = tuple[int, BaseException]  # (job index, what it raised)


class JobPool:
    """At most `concurrency` jobs in flight across every `run` of this pool (one semaphore per pool)."""

    def __init__(self, concurrency: int) -> None:
        self._concurrency = max(1, concurrency)
        self._limit = asyncio.Semaphore(self._concurrency)

    async def run(self, jobs: Iterator[tuple[int, Job]], count: int) -> list[Failure]:
        """Run the jobs, every one to its end; return the failures in job order.

        Workers take jobs from one iterator. The first runs in the caller's task; the others are started only
        once it has waited for I/O (a callback the event loop runs then), so a batch whose writes complete
        without waiting (a cache, a fake store) costs no task at all, and one against Cosmos DB has its
        `concurrency` workers after its first write went out.
        """
        failures: list[Failure] = []
        if count == 0:
            return failures
        helpers: list[asyncio.Task[None]] = []
        handle: asyncio.Handle | None = None
        if count > 1 and self._concurrency > 1:
            loop = asyncio.get_running_loop()

            def start_helpers() -> None:
                for _ in range(min(self._concurrency, count) - 1):
                    helpers.append(loop.create_task(self._worker(jobs, failures)))

            handle = loop.call_soon(start_helpers)
        try:
            await self._worker(jobs, failures)
            if helpers:
                for result in await asyncio.gather(*helpers, return_exceptions=True):
                    if isinstance(result, BaseException):
                        failures.append((count, result))
        finally:
            if handle is not None:
                handle.cancel()
            for helper in helpers:
                helper.cancel()
            for _, job in jobs:  # left over only when a worker was cancelled: close them unawaited, quietly
                job.close()
        failures.sort(key=_index)
        return failures

    async def _worker(self, jobs: Iterator[tuple[int, Job]], failures: list[Failure]) -> None:
        async with self._limit:
            for index, job in jobs:
                try:
                    await job
                except Exception as exc:
                    failures.append((index, exc))
                except asyncio.CancelledError as exc:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise  # this batch is being cancelled
                    failures.append((index, exc))


def _index(failure: Failure) -> int:
    return failure[0]
