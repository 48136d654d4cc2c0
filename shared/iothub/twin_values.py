"""Twin values IoT Hub takes: valid property names, strings of at most 4 KB, no null inside an array.

A desired-property patch merges objects (a null there deletes the property) but replaces an array whole, and IoT
Hub refuses an array holding a null, or an object with a null property at any depth inside one (IoT Edge hub
validates the same since Azure/iotedge#4896: "they don't allow null values or null properties inside arrays"). So
what goes into an array in a twin leaves its nulls out, and a reader takes a missing property as null. The local
IoT Hub (devstack/iothub/twin.py) refuses such a patch as IoT Hub does.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any, Final

KEY_MAX_BYTES: Final = 1024  # a tag or property name: "up to 1 KB in length", UTF-8
KEY_FORBIDDEN: Final = frozenset(".$# ")  # and no control characters
HUB_OWNED: Final = frozenset({"$version", "$metadata"})  # top-level only: what the hub writes into a twin it returns
TWIN_STRING_MAX_BYTES: Final = 4 * 1024  # a string value: at most 4 KB


def key_problem(key: str) -> str | None:
    """Why IoT Hub refuses `key` as a tag or property name, or None when it is valid."""
    shown = repr(key[:64]) + ("..." if len(key) > 64 else "")
    if len(key.encode("utf-8", "surrogatepass")) > KEY_MAX_BYTES:
        return f"Property or Tag name {shown} is longer than {KEY_MAX_BYTES} bytes."
    if any(c in KEY_FORBIDDEN or unicodedata.category(c) == "Cc" for c in key):
        return (
            f"Property or Tag name has invalid characters. Error in Property/Tag {shown}. "
            "Must not contain Control Characters, '.', '$', '#', or ' '."
        )
    return None


def keys_problem(value: Any, top: bool = True) -> str | None:
    """The first name of `value` (a patch, at any depth, arrays included) IoT Hub refuses, said why; None when all
    are valid. `top`: a whole desired or reported patch, where the hub's own `$version` / `$metadata` pass."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if top and key in HUB_OWNED:
                continue
            problem = key_problem(str(key)) or keys_problem(item, top=False)
            if problem is not None:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = keys_problem(item, top=False)
            if problem is not None:
                return problem
    return None


def long_string(value: Any) -> bool:
    """Whether a string value anywhere in `value` is over TWIN_STRING_MAX_BYTES (UTF-8)."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass")) > TWIN_STRING_MAX_BYTES
    if isinstance(value, Mapping):
        return any(long_string(item) for item in value.values())
    if isinstance(value, list):
        return any(long_string(item) for item in value)
    return False


def patch_problem(patch: Mapping[str, Any]) -> str | None:
    """Why IoT Hub refuses a desired-properties patch for what it holds (names, a null inside an array, a string
    over 4 KB; sizes of the merged twin are the hub's to check), or None. The in-memory gateway of the unit tests
    refuses with it as the local hub does."""
    problem = keys_problem(patch)
    if problem is not None:
        return problem
    if null_in_array(patch):
        return "an array holds a null or an object with a null property"
    if long_string(patch):
        return f"a string value is over {TWIN_STRING_MAX_BYTES} bytes"
    return None


def null_in_array(value: Any, inside: bool = False) -> bool:
    """Whether `value` holds a null element of an array, or a null property of an object inside an array."""
    if isinstance(value, Mapping):
        return any((inside and item is None) or null_in_array(item, inside) for item in value.values())
    if isinstance(value, list):
        return any(item is None or null_in_array(item, True) for item in value)
    return False


def without_nulls_in_arrays(value: Any, inside: bool = False) -> Any:
    """`value` with what `null_in_array` finds left out (a new value; the input is not changed): inside an array,
    null elements and null properties go, at any depth; outside one nothing changes (a null there deletes)."""
    if isinstance(value, Mapping):
        return {
            key: without_nulls_in_arrays(item, inside) for key, item in value.items() if not (inside and item is None)
        }
    if isinstance(value, list):
        return [without_nulls_in_arrays(item, True) for item in value if item is not None]
    return value
