"""The telemetry fold compiled with mypyc, used when a build matches the sources exactly.

`native/build.py` (run by `make setup` and before `azd deploy`) compiles the modules of `shared/telemetry`
listed in `COMPILED` into C extensions under `.native/`, with a manifest of the interpreter's extension suffix
and a digest of the sources it was built from (all of `shared/`: `inputs`). `shared/telemetry/__init__.py` calls
`use_compiled` as the package is imported: the compiled modules shadow the sources only when the manifest matches
this interpreter and these sources byte for byte, so an edit, a build for another Python or platform, or no build
at all silently means the interpreted fold (the same code, slower: docs/performance.md, "Compiled fold"). The
setting `TELEMETRY_COMPILED=false` turns the compiled fold off without a redeploy.

Light on purpose (hashlib, json, sysconfig, logging): it runs at the import of `shared.telemetry`, so on cold start.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from shared.settings import setting

ROOT: Final = Path(__file__).resolve().parent.parent
NATIVE_DIR: Final = ROOT / ".native"
MANIFEST: Final = NATIVE_DIR / "manifest.json"
PACKAGE: Final = "shared/telemetry"
# The fold's hot path. Not compiled: catalogue (subclasses a builtin, which mypyc cannot), and what runs once
# per process (runtime, tuning) or per batch around the fold (job_pool).
COMPILED: Final = (
    "alerts",
    "contract",
    "documents",
    "gaps",
    "geofencing",
    "history",
    "ingest",
    "motion",
    "privacy",
    "signals",
    "travel_ping",
    "trips",
    "vehicle",
    "vehicle_cache",
)
SETTING: Final = "TELEMETRY_COMPILED"
GROUP: Final = "carlink_fold"  # mypyc's runtime library, holding all the compiled code: `.native/carlink_fold__mypyc.*`


def sources() -> list[Path]:
    return [ROOT / PACKAGE / f"{name}.py" for name in COMPILED]


def inputs() -> list[Path]:
    """Everything a build depends on: mypyc copies `Final` values of the modules the compiled ones import and
    checks their classes' attribute types as they were at build time, so an edit anywhere in `shared/` (or of
    mypy's configuration) makes a build stale, not only an edit of a compiled module."""
    return [*sorted((ROOT / "shared").rglob("*.py")), ROOT / "pyproject.toml"]


def digest() -> str:
    """What a build must have been made from to be used (~4 ms: `shared/` is ~1.4 MB of sources)."""
    sha = hashlib.sha256()
    for path in inputs():
        sha.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()


def manifest() -> dict[str, str]:
    return {"extSuffix": str(sysconfig.get_config_var("EXT_SUFFIX")), "sources": digest()}


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """The setting, read as the typed settings (pydantic) read a boolean: these words turn it off."""
    return (setting(SETTING, environ) or "true").strip().lower() not in ("false", "0", "off", "no", "f", "n")


def usable() -> bool:
    """A build exists for this interpreter and these exact sources."""
    try:
        built = json.loads(MANIFEST.read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(built, dict) and built == manifest()


def use_compiled(package_path: list[str]) -> bool:
    """Put the compiled modules first on the package's path (and the build's runtime library on sys.path) when
    they are wanted and usable; True if so."""
    if not wanted() or not usable():
        return False
    added = str(NATIVE_DIR) not in sys.path
    if added:
        sys.path.append(str(NATIVE_DIR))  # mypyc's shared runtime module; appended: it shadows nothing
    try:
        # All the compiled code is in this one library: if it loads (right platform, a libc it can link with),
        # every module does. If not, the interpreted fold runs instead of an ImportError at the first message.
        importlib.import_module(f"{GROUP}__mypyc")
    except (ImportError, OSError) as exc:
        if added:
            sys.path.remove(str(NATIVE_DIR))
        logging.getLogger(__name__).warning("compiled fold not loadable (%s): running it interpreted", exc)
        return False
    package_path.insert(0, str(NATIVE_DIR / PACKAGE))
    return True


def active() -> bool:
    """Whether the fold running in this process is the compiled one (for the benchmark and the logs)."""
    vehicle = sys.modules.get("shared.telemetry.vehicle")
    return vehicle is not None and not str(getattr(vehicle, "__file__", "")).endswith(".py")
