"""Function retry policies (`@app.retry`), applied as the Functions host applies them.

Ref: https://learn.microsoft.com/azure/azure-functions/functions-bindings-error-pages#retries.
`max_retry_count = -1` means retry forever; a local run caps it (LOCAL_INFINITE_RETRY_CAP) and says so in
the log, so one broken message cannot hang the demo or a test.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

log = logging.getLogger(__name__)

LOCAL_INFINITE_RETRY_CAP: Final = 5
_warned: set[str] = set()  # functions whose infinite policy was already reported


def parse_interval(text: str) -> float:
    """`HH:MM:SS` (optionally `D.HH:MM:SS`) → seconds."""
    days = 0
    if "." in text.split(":")[0]:
        day_text, text = text.split(".", 1)
        days = int(day_text)
    hours, minutes, seconds = (float(part) for part in text.split(":"))
    return days * 86_400 + hours * 3600 + minutes * 60 + seconds


@dataclass(frozen=True)
class RetryPolicy:
    strategy: str  # fixed_delay | exponential_backoff
    max_retry_count: int  # -1 = infinite
    delay: float = 0.0
    minimum_interval: float = 0.0
    maximum_interval: float = 0.0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> RetryPolicy:
        strategy = str(settings["strategy"])
        count = int(settings["max_retry_count"])
        if strategy == "fixed_delay":
            return cls(strategy, count, delay=parse_interval(str(settings["delay_interval"])))
        if strategy == "exponential_backoff":
            return cls(
                strategy,
                count,
                minimum_interval=parse_interval(str(settings["minimum_interval"])),
                maximum_interval=parse_interval(str(settings["maximum_interval"])),
            )
        raise ValueError(f"unknown retry strategy {strategy!r}")

    def local_max_retries(self, function_name: str) -> int:
        if self.max_retry_count >= 0:
            return self.max_retry_count
        if function_name not in _warned:
            _warned.add(function_name)
            log.warning(
                "%s: retry policy is infinite (max_retry_count=-1); the local host stops after %d retries",
                function_name,
                LOCAL_INFINITE_RETRY_CAP,
            )
        return LOCAL_INFINITE_RETRY_CAP

    def delay_before(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        if self.strategy == "fixed_delay":
            return self.delay
        return float(min(self.maximum_interval, self.minimum_interval * 2 ** (retry - 1)))


async def call(function: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """Call a user function the way the Python worker does: await coroutines, run sync code off the loop."""
    if inspect.iscoroutinefunction(function):
        return await function(**kwargs)
    result = await asyncio.to_thread(function, **kwargs)
    if inspect.isawaitable(result):
        return await result
    return result


async def call_with_retry(
    name: str,
    function: Callable[..., Any],
    kwargs: Mapping[str, Any],
    policy: RetryPolicy | None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Any:
    """One invocation plus the policy's retries; the last failure is raised to the trigger."""
    retries = policy.local_max_retries(name) if policy else 0
    attempt = 0
    while True:
        try:
            return await call(function, kwargs)
        except Exception:
            if policy is None or attempt >= retries:
                raise
            attempt += 1
            delay = policy.delay_before(attempt)
            log.exception("%s failed; retry %d of %d in %.1fs", name, attempt, retries, delay)
            await sleep(delay)
