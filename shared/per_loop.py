"""One client per process and event loop, created lazily on first use.

The Functions Python worker runs every async function on one event loop, so this is one client per process
in Azure; tests that run several loops get a fresh client per loop instead of one bound to a closed loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

from shared.observability.setup import ensure_configured

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._value: T | None = None

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        if self._value is None or self._loop is not loop:
            ensure_configured()  # the first client of the process: traces and metrics too (once, lazily)
            self._value, self._loop = self._factory(), loop
        return self._value

    def reset(self) -> None:
        self._value, self._loop = None, None
