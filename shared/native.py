"""The telemetry fold compiled with mypyc, used when a build matches the sources exactly.

`native/build.py` (run by `make setup` and before `azd deploy`) compiles the modules listed in `COMPILED` (the
fold in `shared/telemetry`, the geofence index it looks positions up in) into C extensions under `.native/`, with a
manifest of the interpreter's extension suffix and a digest of the sources it was built from (all of `shared/`:
`inputs`). Each of those packages' `__init__.py` calls `use_compiled` as the package is imported: the compiled
modules shadow the sources only when the manifest matches
this interpreter and these sources byte for byte, so an edit, a build for another Python or platform, or no build
at all silently means the interpreted fold (the same code, slower: docs/performance.md, "Compiled fold"). The
setting `TELEMETRY_COMPILED=false` turns the compiled fold off without a redeploy.

Decided once per process (`_decided`), at the first of those packages' imports: the compiled fold calls the
compiled index natively, so a process must never mix a compiled package with an interpreted one (as a build
swapped in, a source edited or the setting changed between two imports would otherwise make it).

Light on purpose (hashlib, json, sysconfig, logging): it runs at the import of `shared.telemetry` or
`shared.geofences`, so on cold start.
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
TELEMETRY: Final = "shared/telemetry"
GEOFENCES: Final = "shared/geofences"
# Per package, the modules compiled. The fold's hot path: not catalogue (subclasses a builtin, which mypyc cannot),
# nor what runs once per process (runtime, tuning) or per batch around the fold (job_pool). Of the geofences, what
# a position is looked up in (index, geometry) and the source the ingestor asks for a car's geofences on every
# batch (store: its `cached`, an interpreted call per car otherwise; what it parses, the speed limit's request body
# and stored documents, it takes as `object` or `Any` and checks itself, so no declared type of those is checked);
# not model (parses the API's input: compiled, its declared types would be checked as it runs, turning a bad
# request's clear error into a TypeError), nor service (the API's, I/O per request).
COMPILED: Final[dict[str, tuple[str, ...]]] = {
    TELEMETRY: (
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
    ),
    GEOFENCES: ("geometry", "index", "store"),
}
SETTING: Final = "TELEMETRY_COMPILED"
GROUP: Final = "carlink_fold"  # mypyc's runtime library, holding all the compiled code: `.native/carlink_fold__mypyc.*`


def sources() -> list[Path]:
    return [ROOT / package / f"{name}.py" for package, names in COMPILED.items() for name in names]


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


_decided: bool | None = None  # whether this process runs the build: set by the first `use_compiled`


def use_compiled(package_path: list[str], package: str) -> bool:
    """Put the compiled modules of `package` (its dotted name) first on its path (and the build's runtime library
    on sys.path) when they are wanted, usable and loadable; True if so. The first call decides for the process:
    later ones follow it (the compiled packages call each other natively)."""
    global _decided
    if _decided is None:
        _decided = _load()
    if _decided:
        package_path.insert(0, str(NATIVE_DIR / package.replace(".", "/")))
    return _decided


def _load() -> bool:
    """Whether the build is wanted and usable, with its runtime library loaded (and on sys.path) if so."""
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
    return True


def active() -> bool:
    """Whether the fold running in this process is the compiled one, all of it (for the benchmark and the logs):
    a module of each compiled package, as imported, is an extension."""
    for package, names in COMPILED.items():
        module = sys.modules.get(f"{package.replace('/', '.')}.{names[0]}")
        if module is None or str(getattr(module, "__file__", "")).endswith(".py"):
            return False
    return True
