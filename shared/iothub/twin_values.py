"""Twin values IoT Hub takes: no null inside an array.

A desired-property patch merges objects (a null there deletes the property) but replaces an array whole, and IoT
Hub refuses an array holding a null, or an object with a null property at any depth inside one (IoT Edge hub
validates the same since Azure/iotedge#4896: "they don't allow null values or null properties inside arrays"). So
what goes into an array in a twin leaves its nulls out, and a reader takes a missing property as null. The local
IoT Hub (devstack/iothub/twin.py) refuses such a patch as IoT Hub does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
