"""Compile the telemetry fold (`shared.native.COMPILED`) with mypyc into `.native/`.

`python -m native.build` writes the C extensions under `.native/shared/telemetry/`, mypyc's runtime library
under `.native/`, and `.native/manifest.json` last (what `shared.native.usable` checks): an interrupted build
leaves no manifest and is not used. Needs a C compiler and the Python headers (Debian: gcc, as `make setup`
has); without them it says so and exits 0 unless `--strict`: the interpreted fold is the same code.

Built for the interpreter that runs it: a build on Linux x86-64 with CPython 3.11 serves Azure Functions'
Python 3.11 workers; any other build is ignored there (its extension suffix differs) and the app runs
interpreted (docs/performance.md, "Compiled fold").
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from shared import native


def build(out: Path = native.NATIVE_DIR) -> None:
    from mypyc.build import mypycify
    from setuptools import setup

    if out.exists():
        shutil.rmtree(out)
    expected = native.manifest()  # before compiling: what was compiled is what the manifest names
    sources = [str(path.relative_to(native.ROOT)) for path in native.sources()]
    with tempfile.TemporaryDirectory(prefix="native-") as temp:
        modules = mypycify(sources, opt_level="3", target_dir=str(Path(temp) / "c"), group_name=native.GROUP)
        setup(
            name="carlink-compiled-fold",
            ext_modules=modules,
            packages=[],
            py_modules=[],
            script_args=["build_ext", "--build-lib", str(out), "--build-temp", str(Path(temp) / "o"), "-q"],
        )
    if native.manifest() != expected:
        raise RuntimeError("the sources changed while compiling; run the build again")
    (out / "manifest.json").write_text(json.dumps(expected), "utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strict", action="store_true", help="fail when the fold cannot be compiled")
    args = parser.parse_args(argv)
    try:
        build()
    except (Exception, SystemExit) as exc:  # setuptools reports a compiler error as SystemExit
        print(f"native.build: the fold was not compiled ({type(exc).__name__}: {exc}); it runs interpreted")
        if native.MANIFEST.exists():
            native.MANIFEST.unlink()
        return 1 if args.strict else 0
    print(f"native.build: compiled {len(native.COMPILED)} modules of {native.PACKAGE} into {native.NATIVE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
