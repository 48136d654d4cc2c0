"""Request units a Cosmos DB write costs by the size of the document, from Microsoft's published table.

Cosmos bills request units, not writes, and a write's charge grows with the document ("Understand request unit
consumption", https://learn.microsoft.com/azure/cosmos-db/request-units, the table of item size against write
cost with default indexing). The real charge comes back in `x-ms-request-charge`; the local Cosmos server sends
none, so the local stack and the benchmark estimate it from this table: an *estimate*, labelled as one wherever
it is shown. Between the published sizes the cost is interpolated linearly; below 1 KB it is the 1 KB figure (a
write costs at least that much), above 128 KB the last segment is extended.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Final

# (size in KB, RU per write) as published; the point read of a 1 KB item is 1 RU.
WRITE_RU_BY_KB: Final[tuple[tuple[float, float], ...]] = (
    (1.0, 4.95),
    (2.0, 6.29),
    (4.0, 6.67),
    (8.0, 7.04),
    (16.0, 9.52),
    (32.0, 11.23),
    (64.0, 22.67),
    (128.0, 48.19),
)
POINT_READ_RU_PER_KB: Final = 1.0
_SIZES: Final = tuple(kb for kb, _ in WRITE_RU_BY_KB)


def write_request_units(size_bytes: int) -> float:
    """Estimated RU of creating, replacing or upserting a document of `size_bytes` (its UTF-8 JSON)."""
    kb = size_bytes / 1024
    if kb <= _SIZES[0]:
        return WRITE_RU_BY_KB[0][1]
    index = min(bisect_left(_SIZES, kb), len(_SIZES) - 1)
    (low_kb, low_ru), (high_kb, high_ru) = WRITE_RU_BY_KB[index - 1], WRITE_RU_BY_KB[index]
    return low_ru + (kb - low_kb) * (high_ru - low_ru) / (high_kb - low_kb)


def point_read_request_units(size_bytes: int) -> float:
    """Estimated RU of a point read (id and partition key): 1 RU per started KB, at least 1."""
    return max(1.0, float(-(-size_bytes // 1024))) * POINT_READ_RU_PER_KB
