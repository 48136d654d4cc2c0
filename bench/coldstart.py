"""Cold start: `import function_app` in a fresh interpreter, the part of a cold start our code controls.

Each run is a new process (no warm import cache in memory; the OS file cache is warm, as on a reused worker).
The figure is the import alone, timed inside the child; interpreter start-up is reported beside it.

With telemetry on (`APPLICATIONINSIGHTS_CONNECTION_STRING` set, here to a dummy whose ingestion endpoint nothing
listens on, so nothing is ever sent): `telemetryImportS` is the import with that setting, and `telemetryReadyS`
the import plus the Azure Monitor distro configured on the same thread: what the first invocation would wait for
if the distro were configured on its critical path. The app configures it on a background thread started by the
first invocation instead (shared/observability/setup.py), so that invocation waits for neither.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PROBE = "import time; t = time.perf_counter(); import function_app; print(time.perf_counter() - t)"
_TELEMETRY_PROBE = (
    "import time; t = time.perf_counter(); import function_app; "
    "from shared.observability.setup import ensure_configured, mode; ensure_configured(background=False); "
    "assert mode() == 'azure', mode(); print(time.perf_counter() - t)"
)
DUMMY_CONNECTION_STRING = (
    "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"
)


def cold_start(runs: int) -> dict[str, float]:
    """Median seconds for the import and for the whole process (interpreter start + import + exit), and the
    same import with telemetry on, alone and with the distro configured (module docstring)."""
    imports: list[float] = []
    totals: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        imports.append(_child(_PROBE, {}))
        totals.append(time.perf_counter() - started)
    telemetry = {"APPLICATIONINSIGHTS_CONNECTION_STRING": DUMMY_CONNECTION_STRING}
    with_telemetry = [_child(_PROBE, telemetry) for _ in range(runs)]
    ready = [_child(_TELEMETRY_PROBE, telemetry) for _ in range(runs)]
    return {
        "importS": statistics.median(imports),
        "processS": statistics.median(totals),
        "telemetryImportS": statistics.median(with_telemetry),
        "telemetryReadyS": statistics.median(ready),
        "runs": runs,
    }


def _child(probe: str, environ: dict[str, str]) -> float:
    """Seconds the probe reports from a fresh interpreter with `environ` added to ours."""
    env = {**os.environ, **environ}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True, env=env)
    return float(done.stdout.strip().splitlines()[-1])
