"""Programmable faults for the local stack's proxies: what a cloud service does on a bad day, on demand.

A `FaultPlan` belongs to one proxy (devstack/http_proxy.py: the Cosmos proxy, the IoT Hub service proxy). A
test or script adds faults to it in process —

    plan.add(FaultKind.RESET, duration=3, fraction=0.5, operation=Operation.WRITE)

— or, from another process, through the loopback control endpoint (`FaultControl`, JSON over HTTP):

    POST   /faults/cosmos   {"kind": "throttle", "after": 1, "duration": 5, "fraction": 0.3, "retryAfterMs": 200}
    GET    /faults          every plan: active faults and what each injected
    DELETE /faults/cosmos   remove all of that plan's faults

Why these faults: each is a way the real services fail that changes what the client sees, and so what the
functions must survive without losing or duplicating a message:

| kind              | the client sees                                | as when                                    |
|-------------------|------------------------------------------------|--------------------------------------------|
| latency           | a slow answer                                  | a hot partition, a cross-region hop        |
| reset             | connection reset before the request is applied | a gateway restart, a dropped flow          |
| blackhole         | no answer until the window ends, then a reset  | a partitioned network, a hung replica      |
| throttle          | 429 with `x-ms-retry-after-ms`                 | RU budget exhausted (Cosmos), IoT Hub quota |
| unavailable       | 503, request not applied                       | a failover, a service update               |
| applied_then_503  | 503, but the write was applied                 | a timeout after commit (the worst case)    |
| applied_then_reset| connection reset, but the write was applied    | the same, on the wire                      |

A fault targets a time window (`after`, `duration`, seconds from when it is added), an operation kind (reads,
writes or both; account and container metadata are never faulted, so clients can always start) and a
fraction of the matching requests (drawn from the plan's seeded generator, so a run can be repeated), and
optionally only requests whose partition key starts with a prefix (one car, or one scenario's cars).
Thread-safe: the proxies run on loops of their own.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import orjson
from aiohttp import web


class FaultKind(StrEnum):
    LATENCY = "latency"
    RESET = "reset"
    BLACKHOLE = "blackhole"
    THROTTLE = "throttle"
    UNAVAILABLE = "unavailable"
    APPLIED_THEN_503 = "applied_then_503"
    APPLIED_THEN_RESET = "applied_then_reset"


class Operation(StrEnum):
    READ = "read"
    WRITE = "write"
    ANY = "any"


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: what happens, to which requests, when (monotonic clock)."""

    kind: FaultKind
    starts_at: float
    ends_at: float
    fraction: float = 1.0
    operation: Operation = Operation.ANY
    latency: float = 0.5  # seconds added (latency)
    retry_after_ms: int = 100  # throttle
    key_prefix: str | None = None  # only requests whose partition key starts with this
    name: str = ""

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def targets(self, operation: Operation, key: str | None) -> bool:
        if self.operation is not Operation.ANY and operation is not self.operation:
            return False
        return self.key_prefix is None or (key is not None and key.startswith(self.key_prefix))

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        data = asdict(self)
        data.update(
            kind=str(self.kind),
            operation=str(self.operation),
            startsIn=max(0.0, self.starts_at - now),
            endsIn=None if math.isinf(self.ends_at) else max(0.0, self.ends_at - now),
        )
        del data["starts_at"], data["ends_at"]
        return data


@dataclass
class FaultPlan:
    """The faults of one proxy, and what they did (`injected`: per kind; `requests`: per operation)."""

    seed: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._rng = random.Random(self.seed)

    def add(
        self,
        kind: FaultKind | str,
        *,
        after: float = 0.0,
        duration: float = math.inf,
        fraction: float = 1.0,
        operation: Operation | str = Operation.ANY,
        latency: float = 0.5,
        retry_after_ms: int = 100,
        key_prefix: str | None = None,
        name: str = "",
    ) -> Fault:
        """Add a fault active from `after` s to `after + duration` s from now."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within [0, 1]")
        if duration <= 0 or after < 0:
            raise ValueError("after must be >= 0 and duration > 0")
        start = time.monotonic() + after
        fault = Fault(
            FaultKind(kind),
            start,
            start + duration,
            fraction,
            Operation(operation),
            latency,
            retry_after_ms,
            key_prefix,
            name or str(kind),
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def choose(self, operation: Operation, key: str | None = None) -> Fault | None:
        """The fault to inject into this request, if any: the first active, matching one whose draw hits."""
        now = time.monotonic()
        with self._lock:
            self.requests[str(operation)] += 1
            self._faults = [f for f in self._faults if f.ends_at > now]  # expired ones are gone for good
            for fault in self._faults:
                if fault.active(now) and fault.targets(operation, key) and self._rng.random() < fault.fraction:
                    self.injected[str(fault.kind)] += 1
                    return fault
        return None

    def still_active(self, fault: Fault) -> bool:
        """False once the fault's window ended or the plan was cleared (a black hole then lets go)."""
        with self._lock:
            return fault in self._faults and time.monotonic() < fault.ends_at

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "faults": [f.describe() for f in self._faults],
                "injected": dict(self.injected),
                "requests": dict(self.requests),
            }


# -- control endpoint ------------------------------------------------------------------------------------------

_FIELDS = {
    "after": float,
    "duration": float,
    "fraction": float,
    "operation": str,
    "latency": float,
    "retryAfterMs": int,
    "keyPrefix": str,
    "name": str,
}
_KEYWORDS = {"retryAfterMs": "retry_after_ms", "keyPrefix": "key_prefix"}


def fault_from_json(plan: FaultPlan, data: Any) -> Fault:
    """Add the fault a control request describes (see the module doc) to `plan`."""
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError('expected {"kind": ..., "after"?, "duration"?, "fraction"?, "operation"?, ...}')
    unknown = set(data) - set(_FIELDS) - {"kind"}
    if unknown:
        raise ValueError(f"unknown fields: {sorted(unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name != "kind":
            kwargs[_KEYWORDS.get(str(name), str(name))] = _FIELDS[name](value)
    return plan.add(FaultKind(str(data["kind"])), **kwargs)


def control_app(plans: Mapping[str, FaultPlan]) -> web.Application:
    def plan_of(request: web.Request) -> FaultPlan:
        name = request.match_info["target"]
        if name not in plans:
            raise web.HTTPNotFound(text=f"no fault plan {name!r}; known: {sorted(plans)}")
        return plans[name]

    async def list_all(request: web.Request) -> web.Response:
        return web.json_response({name: plan.snapshot() for name, plan in plans.items()}, dumps=_dumps)

    async def add(request: web.Request) -> web.Response:
        plan = plan_of(request)
        try:
            fault = fault_from_json(plan, orjson.loads(await request.read()))
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            return web.json_response({"message": str(exc)}, status=400)
        return web.json_response(fault.describe(), status=201, dumps=_dumps)

    async def clear(request: web.Request) -> web.Response:
        plan_of(request).clear()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/faults", list_all)
    app.router.add_post("/faults/{target}", add)
    app.router.add_delete("/faults/{target}", clear)
    return app


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class FaultControl:
    """The control endpoint, on loopback only (it can break the stack; nothing outside the machine may)."""

    def __init__(self, plans: Mapping[str, FaultPlan]) -> None:
        self._runner = web.AppRunner(control_app(plans), access_log=None, handle_signals=False)
        self.url = ""

    async def start(self, port: int = 0) -> str:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        await self._runner.cleanup()
