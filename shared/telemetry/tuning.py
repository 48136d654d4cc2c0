"""Process-level tuning for telemetry ingestion, applied once when the process creates its ingestor.

Ingestion allocates many short-lived containers (decoded bodies, samples, history entries) and keeps the vehicle
cache (long-lived dicts and lists) between batches. With CPython's default thresholds (700, 10, 10) the cyclic
garbage collector runs a young collection every 700 net allocations, i.e. several times per batch, and each
scans whatever the batch has alive. Our data has no reference cycles to speak of (JSON trees), so:

- `gc.freeze()`: what exists once the ingestor is ready (imported modules, the VSS catalogue, SDK clients) is
  moved to the permanent generation and never scanned again;
- the young-generation threshold is raised to `GEN0_THRESHOLD`, so a young collection runs every few batches
  instead of several times per batch. The older generations keep their default ratios.

Not applied at import (function_app's cold start and other functions' behaviour stay as they are) but on first
use, by `shared/telemetry/runtime.py`; `bench/cpu.py` and `bench/rss.py` call the same function, so the
benchmark measures the configuration the service runs with (docs/performance.md).
"""

from __future__ import annotations

import gc
from typing import Final

GEN0_THRESHOLD: Final = 100_000

_applied = False


def tune_for_ingestion() -> bool:
    """Freeze what exists and raise the young-generation threshold; once per process. True if applied now."""
    global _applied
    if _applied:
        return False
    _applied = True
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    if 0 < gen0 < GEN0_THRESHOLD:  # 0 means collection is off: left so; a higher threshold set elsewhere stays
        gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    return True
