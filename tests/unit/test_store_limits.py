"""`nesting_depth`, which every stand-in store runs on every write, against the definition it implements."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from shared.stores.limits import MAX_NESTING, item_violation, nesting_depth

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=40,
)


def reference(value: Any) -> int:
    """Levels of embedded objects and arrays, by the definition (recursive: fine for these small values)."""
    if isinstance(value, dict):
        return 1 + max((reference(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((reference(v) for v in value), default=0)
    return 0


@given(JSON)
def test_nesting_depth_is_the_definition(value: Any) -> None:
    assert nesting_depth(value) == reference(value)


def test_nesting_depth_needs_no_recursion_and_the_limit_is_the_services() -> None:
    deep: Any = 1
    for _ in range(100_000):  # far beyond Python's recursion limit
        deep = [deep] if len(str(type(deep))) % 2 else {"a": deep}
    assert nesting_depth(deep) == 100_000
    at_limit: Any = {"id": "x"}
    for _ in range(MAX_NESTING - 1):
        at_limit = {"id": "x", "a": at_limit}
    assert item_violation(at_limit, 100) is None
    assert item_violation({"id": "x", "a": at_limit}, 100) is not None
