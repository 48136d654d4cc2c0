"""Spans around the calls of a dependency's client (IoT Hub gateway, Graph client), without touching its code.

`traced(client, tracing.IOTHUB, IOTHUB_CALLS, car_argument=True)` wraps the named async methods in a span
`carlink.iothub.<method>`; everything else passes through untouched. The process's gateways and Graph clients are
created wrapped (shared/iothub/runtime.py, shared/graph/runtime.py), so every caller is traced and each
implementation (Azure, local, memory) stays as it is. With tracing off a call costs one flag test more.

The first argument of a gateway call is the car's device id (attribute `carlink.car.id`); a Graph call's first
argument is a user id, which is personal and is never recorded.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar, cast

from shared.observability import tracing

T = TypeVar("T")

IOTHUB_CALLS: Final = frozenset(
    {
        "send_c2d",
        "patch_desired",
        "create_device",
        "delete_device",
        "invoke_method",
        "invoke_module_method",
        "patch_module_desired",
        "get_module_twin",
        "set_device_enabled",
    }
)
GRAPH_CALLS: Final = frozenset(
    {
        "calendar_delta",
        "create_or_get_meeting",
        "create_subscription",
        "renew_subscription",
        "reauthorize_subscription",
        "delete_subscription",
        "delete_meeting",
        "send_mail",
    }
)


class _Traced:
    __slots__ = ("_calls", "_car_argument", "_inner", "_prefix", "_wrapped")

    def __init__(self, inner: object, prefix: str, calls: frozenset[str], car_argument: bool) -> None:
        self._inner = inner
        self._prefix = prefix
        self._calls = calls
        self._car_argument = car_argument
        self._wrapped: dict[str, Callable[..., Awaitable[Any]]] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self._calls:
            return attribute
        wrapped = self._wrapped.get(name)
        if wrapped is None:
            wrapped = self._wrapped[name] = self._wrap(name, attribute)
        return wrapped

    def _wrap(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        span_name = self._prefix + name
        car_argument = self._car_argument

        @functools.wraps(method)
        async def call(*args: Any, **kwargs: Any) -> Any:
            if not tracing.enabled():
                return await method(*args, **kwargs)
            car = args[0] if car_argument and args else kwargs.get("device_id")
            attributes = {tracing.CAR_ID: car} if isinstance(car, str) else None
            with tracing.span(span_name, attributes, kind=_client_kind()):
                return await method(*args, **kwargs)

        return call


def _client_kind() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.CLIENT


def traced(inner: T, prefix: str, calls: frozenset[str], *, car_argument: bool = False) -> T:
    """`inner` with a span around each call named in `calls` (typed as `inner`: callers see no difference)."""
    return cast(T, _Traced(inner, prefix, calls, car_argument))


def inner_of(client: T) -> T:
    """The wrapped client (tests and code that must see the implementation)."""
    if isinstance(client, _Traced):
        return cast(T, client._inner)
    return client
