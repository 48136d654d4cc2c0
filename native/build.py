"""Compile the telemetry fold (`shared.native.COMPILED`) with mypyc into `.native/`.

`python -m native.build` writes the C extensions under `.native/shared/<package>/`, mypyc's runtime library
under `.native/`, and `.native/manifest.json` last (what `shared.native.usable` checks): an interrupted build
leaves no manifest and is not used. Needs a C compiler and the Python headers (Debian: gcc, as `make setup`
has); without them it says so and exits 0 unless `--strict`: the interpreted fold is the same code.

Built for the interpreter that runs it: a build on Linux x86-64 with CPython 3.11 serves Azure Functions'
Python 3.11 workers; any other build is ignored there (its extension suffix differs) and the app runs
interpreted (docs/performance.md, "Compiled fold").
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import tempfile
from pathlib import Path

from shared import native

# The Azure Functions Python 3.11 worker on Linux x86-64 (infra/app/function-app.bicep's runtime).
AZURE_EXT_SUFFIX = ".cpython-311-x86_64-linux-gnu.so"


def build(out: Path = native.NATIVE_DIR) -> None:
    """Compile into a fresh directory beside `out`, then swap it in: a process importing the fold meanwhile sees
    the old build or the new one, never half of one; builds run one at a time (a lock beside `out`)."""
    from mypyc.build import mypycify
    from setuptools import setup

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".native.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        expected = native.manifest()  # before compiling: what was compiled is what the manifest names
        sources = [str(path.relative_to(native.ROOT)) for path in native.sources()]
        with tempfile.TemporaryDirectory(prefix=".native-", dir=out.parent) as temp:
            fresh = Path(temp) / "out"
            modules = mypycify(sources, opt_level="3", target_dir=str(Path(temp) / "c"), group_name=native.GROUP)
            setup(
                name="carlink-compiled-fold",
                ext_modules=modules,
                packages=[],
                py_modules=[],
                script_args=["build_ext", "--build-lib", str(fresh), "--build-temp", str(Path(temp) / "o"), "-q"],
            )
            if native.manifest() != expected:
                raise RuntimeError("the sources changed while compiling; run the build again")
            (fresh / "manifest.json").write_text(json.dumps(expected), "utf-8")
            old = Path(temp) / "old"
            if out.exists():
                out.rename(old)  # removed with the temporary directory; loaded copies stay mapped
            fresh.rename(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="fail when the fold cannot be compiled")
    parser.add_argument("--check", action="store_true", help="only say whether a usable build for Azure exists")
    args = parser.parse_args(argv)
    if args.check:  # the prepackage hook: a build of these sources that the Functions worker can load
        ok = native.usable() and native.manifest()["extSuffix"] == AZURE_EXT_SUFFIX
        print(f"native.build: {'a' if ok else 'no'} usable build for the Functions worker ({AZURE_EXT_SUFFIX})")
        return 0 if ok else 1
    try:
        build()
    except (Exception, SystemExit) as exc:  # setuptools reports a compiler error as SystemExit
        print(f"native.build: the fold was not compiled ({type(exc).__name__}: {exc}); it runs interpreted")
        return 1 if args.strict else 0
    built = ", ".join(f"{len(names)} of {package}" for package, names in native.COMPILED.items())
    print(f"native.build: compiled {built} into {native.NATIVE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
