"""`finite_float`: what outside JSON's numbers become, and what they never raise (shared/json_numbers.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shared.json_numbers import finite_float


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1.0), (-2.5, -2.5), (0, 0.0), (2**1023, float(2**1023)), (10**400, None), (-(10**400), None),
     (math.inf, None), (-math.inf, None), (math.nan, None), (True, None), ("1", None), (None, None), ([1], None)],
)  # fmt: skip
def test_a_json_number_is_a_finite_float_or_none(value: Any, expected: float | None) -> None:
    got = finite_float(value)
    assert got == expected
    assert got is None or type(got) is float
