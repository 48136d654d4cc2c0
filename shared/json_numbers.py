"""Numbers from outside JSON (API bodies, Graph, Azure Maps) as floats, checked once.

A JSON integer is any size: `float()` of one beyond a float's range raises OverflowError, and so does
`math.isfinite()`, which turned bad input into a 500 in several places. This is the one check they share.
"""

from __future__ import annotations

import math


def finite_float(value: object) -> float | None:
    """A JSON number (an int or a float, not a bool) as a finite float; None for anything else, NaN, the
    infinities and integers beyond a float's range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
