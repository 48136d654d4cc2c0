"""Cold start: `import function_app` in a fresh interpreter, the part of a cold start our code controls.

Each run is a new process (no warm import cache in memory; the OS file cache is warm, as on a reused worker).
The figure is the import alone, timed inside the child; interpreter start-up is reported beside it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PROBE = "import time; t = time.perf_counter(); import function_app; print(time.perf_counter() - t)"


def cold_start(runs: int) -> dict[str, float]:
    """Median seconds for the import and for the whole process (interpreter start + import + exit)."""
    imports: list[float] = []
    totals: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
        totals.append(time.perf_counter() - started)
        imports.append(float(done.stdout.strip().splitlines()[-1]))
    return {"importS": statistics.median(imports), "processS": statistics.median(totals), "runs": runs}
