"""Function retry policies (`@app.retry`), applied as the Functions host applies them.

Ref: https://learn.microsoft.com/azure/azure-functions/functions-bindings-error-pages#retries.
`max_retry_count = -1` means retry forever, locally too: a cap would let the Event Hubs trigger checkpoint past
a batch that Azure would keep retrying, and hide the stalled partition a developer most needs to see. Stalls
are reported instead (see eventhub_trigger.py and LocalFunctionHost.stalled()).

Tests and demos may shorten the waits with RetryTiming; it changes how long the host sleeps between attempts,
never how many attempts there are.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

log = logging.getLogger(__name__)

INFINITE: Final = -1
# Local-only environment overrides of RetryTiming (read by the local host, never by the app).
DELAY_SCALE_SETTING: Final = "LOCAL_HOST_RETRY_DELAY_SCALE"
MAX_DELAY_SETTING: Final = "LOCAL_HOST_RETRY_MAX_DELAY_SECONDS"
_MAX_EXPONENT: Final = 62  # 2**62 times any sane minimum interval is past every maximum: no float overflow


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
        if count < INFINITE:
            raise ValueError(f"max_retry_count must be -1 (infinite) or >= 0, got {count}")
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

    @property
    def infinite(self) -> bool:
        return self.max_retry_count == INFINITE

    def allows(self, retry: int) -> bool:
        """Whether retry number `retry` (1-based) happens."""
        return self.infinite or retry <= self.max_retry_count

    def delay_before(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based), as the policy says."""
        if self.strategy == "fixed_delay":
            return self.delay
        exponent = min(retry - 1, _MAX_EXPONENT)
        return float(min(self.maximum_interval, self.minimum_interval * 2**exponent))


@dataclass(frozen=True)
class RetryTiming:
    """How long the local host really waits between attempts: the policy's delay times `delay_scale`, at most
    `max_delay_seconds`. For tests and demos that cannot wait minutes; the number of attempts never changes."""

    delay_scale: float = 1.0
    max_delay_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.delay_scale < 0 or (self.max_delay_seconds is not None and self.max_delay_seconds < 0):
            raise ValueError("retry delays cannot be negative")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> RetryTiming:
        scale = environ.get(DELAY_SCALE_SETTING) or "1"
        cap = environ.get(MAX_DELAY_SETTING) or None
        return cls(float(scale), float(cap) if cap is not None else None)

    def wait(self, policy_delay: float) -> float:
        scaled = policy_delay * self.delay_scale
        return scaled if self.max_delay_seconds is None else min(scaled, self.max_delay_seconds)


# Called after every failed attempt with (attempts so far, the error); the Event Hubs trigger uses it to notice
# a partition that keeps failing.
FailureHook = Callable[[int, BaseException], None]


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
    timing: RetryTiming | None = None,
    on_failure: FailureHook | None = None,
) -> Any:
    """One invocation plus the policy's retries (forever for -1); the last failure of a finite policy is raised
    to the trigger. Cancelling the caller (the host stopping) ends the loop at once, also during a wait."""
    timing = timing or RetryTiming()
    retry = 0
    while True:
        try:
            return await call(function, kwargs)
        except Exception as exc:
            if on_failure is not None:
                on_failure(retry + 1, exc)
            retry += 1
            if policy is None or not policy.allows(retry):
                raise
            delay = timing.wait(policy.delay_before(retry))
            of = "∞" if policy.infinite else str(policy.max_retry_count)
            if retry == 1:
                log.exception("%s failed; retry %d of %s in %.1fs", name, retry, of, delay)
            else:  # the traceback was logged once; repeating it every retry of an endless loop buries the log
                log.warning("%s failed again (%s: %s); retry %d of %s in %.1fs", name, type(exc).__name__, exc,
                            retry, of, delay)  # fmt: skip
            await sleep(delay)
