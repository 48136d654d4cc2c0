"""What the host needs to know about each function, read from the app itself (`app.get_functions()`).

The raw bindings are exactly what the real host indexes, so there is no second list to keep in sync:
a new function in functions/ is picked up by the local host as it is by Azure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from devstack.host.retry import FailureHook, RetryPolicy, RetryTiming, call_with_retry

_SETTING = re.compile(r"%([^%]+)%")


class BindingError(Exception):
    """A function's binding metadata is something the local host cannot drive."""


def resolve(value: str, environ: Mapping[str, str]) -> str:
    """Replace `%NAME%` with the app setting NAME, as the host does for binding expressions."""

    def lookup(match: re.Match[str]) -> str:
        name = match[1]
        if name not in environ:
            raise BindingError(f"binding refers to app setting %{name}% which is not set")
        return environ[name]

    return _SETTING.sub(lookup, value)


@dataclass(frozen=True)
class FunctionSpec:
    """One function: its name, trigger binding (settings resolved), retry policy and the user's callable."""

    name: str
    trigger: dict[str, Any]
    retry: RetryPolicy | None
    user_function: Callable[..., Any]

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def arg_name(self) -> str:
        return str(self.trigger["name"])

    async def invoke(
        self, argument: Any, timing: RetryTiming | None = None, on_failure: FailureHook | None = None
    ) -> Any:
        """Call the function with its trigger argument, retrying as its policy says (forever for -1); the last
        error of a finite policy is raised."""
        return await call_with_retry(
            self.name, self.user_function, {self.arg_name: argument}, self.retry, timing=timing, on_failure=on_failure
        )


def function_specs(functions: Iterable[Any], environ: Mapping[str, str]) -> list[FunctionSpec]:
    """Read the functions `app.get_functions()` returned (see devstack/function_index.py, which calls it once
    per process); `%SETTING%` values resolved against `environ`."""
    specs: list[FunctionSpec] = []
    for fn in functions:
        bindings = [orjson.loads(raw) for raw in fn.get_raw_bindings()]
        triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
        if len(triggers) != 1:
            raise BindingError(f"{fn.get_function_name()}: expected one trigger, found {len(triggers)}")
        trigger = {k: resolve(v, environ) if isinstance(v, str) else v for k, v in triggers[0].items()}
        retry_settings = fn.get_settings_dict("retry_policy")
        retry = RetryPolicy.from_settings(retry_settings) if retry_settings else None
        specs.append(FunctionSpec(fn.get_function_name(), trigger, retry, fn.get_user_function()))
    return specs
