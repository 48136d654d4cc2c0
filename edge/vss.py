"""Signal checks at the edge, by the rules the cloud applies (docs/messages.md, "Signals").

The module cannot import the cloud's validator (shared/telemetry/catalogue.py), so it reads the same COVESA
VSS 6.0 catalogue file (`EDGE_VSS_CATALOGUE`, else the copy the Dockerfile puts beside this module, else the
repository's) and applies the documented rules: a rejected signal is dropped from what the car sends and
counted by reason, the other signals of the sample are kept. The reasons are the cloud's.
"""

from __future__ import annotations

import json
import math
import os
import re
from functools import cache
from pathlib import Path
from typing import Any, Final

_HERE: Final = Path(__file__).resolve().parent
_CANDIDATES: Final = (_HERE / "vss-6.0-signals.json", _HERE.parent / "shared/telemetry/vss-6.0-signals.json")
_DTC: Final = re.compile(r"[PCBU][0-3][0-9A-F]{3}")
DTC_SIGNAL: Final = "Vehicle.Diagnostics.DTCList"
MAX_STRING: Final = 256
MAX_ITEMS: Final = 256
MAX_STRING_ITEMS_CHARS: Final = 1024
MAX_DTC: Final = 64
_INTS: Final = {
    name: ((-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if name[0] == "i" else (0, 2**bits - 1))
    for name, bits in (
        ("int8", 8), ("int16", 16), ("int32", 32), ("int64", 64),
        ("uint8", 8), ("uint16", 16), ("uint32", 32), ("uint64", 64),
    )
}  # fmt: skip
_FLOATS: Final = {"float": 3.4028234663852886e38, "double": 1.7976931348623157e308}


@cache
def catalogue() -> dict[str, dict[str, Any]]:
    env = os.environ.get("EDGE_VSS_CATALOGUE")
    paths = (Path(env),) if env else _CANDIDATES
    for path in paths:
        if path.exists():
            signals: dict[str, dict[str, Any]] = json.loads(path.read_bytes())["signals"]
            return signals
    raise FileNotFoundError(f"VSS catalogue not found at {', '.join(map(str, paths))}")


def check(path: str, value: Any) -> tuple[Any, str | None]:
    """(value to send, None) or (None, reason). A DTC list keeps its valid codes and drops the bad ones."""
    entry = catalogue().get(path)
    if entry is None:
        return None, "unknown_signal"
    datatype: str = entry["datatype"]
    if datatype.endswith("[]"):
        if type(value) is not list:
            return None, "wrong_type"
        if path == DTC_SIGNAL:
            codes = [c for c in value if type(c) is str and _DTC.fullmatch(c)][:MAX_DTC]
            if value and not codes:
                return None, "invalid_dtc"
            return codes, None
        if len(value) > MAX_ITEMS:
            return None, "too_long"
        for item in value:
            if _scalar(datatype[:-2], entry, item) is not None:
                return None, _scalar(datatype[:-2], entry, item)
        if datatype == "string[]" and sum(len(i) for i in value) > MAX_STRING_ITEMS_CHARS:
            return None, "too_long"
        return value, None
    reason = _scalar(datatype, entry, value)
    if reason is not None:
        return None, reason
    return (int(value) if datatype in _INTS else value), None


def _scalar(datatype: str, entry: dict[str, Any], value: Any) -> str | None:
    kind = type(value)
    if datatype == "boolean":
        return None if kind is bool else "wrong_type"
    if datatype == "string":
        if kind is not str:
            return "wrong_type"
        if len(value) > MAX_STRING:
            return "too_long"
        allowed = entry.get("allowed")
        return "not_allowed" if allowed is not None and value not in allowed else None
    if kind is bool or kind not in (int, float):
        return "wrong_type"
    if datatype in _INTS:
        if kind is float and not value.is_integer():
            return "wrong_type"
        low, high = _INTS[datatype]
        if not low <= value <= high:
            return "out_of_range"
    elif not math.isfinite(value) or abs(value) > _FLOATS.get(datatype, math.inf):
        return "out_of_range"
    low_b, high_b = entry.get("min"), entry.get("max")
    if (low_b is not None and value < low_b) or (high_b is not None and value > high_b):
        return "out_of_range"
    return None
