"""When the compiled fold is used (shared/native.py): only a build of exactly these sources for this interpreter,
and only while the setting allows it; anything else is the interpreted fold, never an error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from shared import native


@pytest.fixture
def build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in build directory with a manifest of the current sources."""
    out = tmp_path / ".native"
    for package in native.COMPILED:
        (out / package).mkdir(parents=True)
    monkeypatch.setattr(native, "NATIVE_DIR", out)
    monkeypatch.setattr(native, "MANIFEST", out / "manifest.json")
    monkeypatch.setattr(native, "_decided", None)  # as in a new process
    (out / "manifest.json").write_text(json.dumps(native.manifest()), "utf-8")
    return out


LIBRARY = f"{native.GROUP}__mypyc"


def test_a_build_of_these_sources_is_used_first(build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.SETTING, raising=False)
    monkeypatch.delitem(sys.modules, LIBRARY, raising=False)
    (build / f"{LIBRARY}.py").write_text("", "utf-8")  # stands in for mypyc's runtime library
    path = ["/the/sources"]
    monkeypatch.setattr("sys.path", ["/x"])
    assert native.use_compiled(path, "shared.telemetry")
    assert path == [str(build / "shared/telemetry"), "/the/sources"]
    assert sys.path == ["/x", str(build)]  # appended: mypyc's runtime library shadows nothing
    geofences = ["/the/geofences"]
    assert native.use_compiled(geofences, "shared.geofences")  # the second package: the library is loaded once
    assert geofences == [str(build / "shared/geofences"), "/the/geofences"]
    assert sys.path == ["/x", str(build)]


def test_a_build_that_cannot_load_here_is_not_used(
    build: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Right suffix and sources, but the library does not load (e.g. built against a newer libc than the worker's).
    monkeypatch.delenv(native.SETTING, raising=False)
    monkeypatch.delitem(sys.modules, LIBRARY, raising=False)
    (build / f"{LIBRARY}.py").write_text("raise ImportError('GLIBC_2.99 not found')\n", "utf-8")
    path = ["/the/sources"]
    monkeypatch.setattr("sys.path", ["/x"])
    assert not native.use_compiled(path, "shared.telemetry")
    assert path == ["/the/sources"]
    assert sys.path == ["/x"]
    assert "running it interpreted" in caplog.text


@pytest.mark.parametrize(
    "change",
    ["sources", "suffix", "missing", "garbage", "list"],
)
def test_any_other_build_is_ignored(build: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    manifest = build / "manifest.json"
    written = json.loads(manifest.read_text("utf-8"))
    if change == "sources":  # a module edited after the build
        written["sources"] = "0" * 64
    elif change == "suffix":  # built for another Python or platform
        written["extSuffix"] = ".cpython-312-aarch64-linux-gnu.so"
    if change == "missing":  # never built, or interrupted before the manifest
        manifest.unlink()
    elif change == "garbage":
        manifest.write_text("{not json", "utf-8")
    elif change == "list":
        manifest.write_text("[]", "utf-8")
    else:
        manifest.write_text(json.dumps(written), "utf-8")
    path = ["/the/sources"]
    assert not native.usable()
    assert not native.use_compiled(path, "shared.telemetry")
    assert path == ["/the/sources"]


def test_the_first_package_decides_for_the_process(build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The compiled fold calls the compiled index natively: a build usable by the time the second package is
    # imported (swapped in, the setting changed) must not give a process one package compiled, one not.
    monkeypatch.setenv(native.SETTING, "false")
    telemetry = ["/the/sources"]
    assert not native.use_compiled(telemetry, "shared.telemetry")
    monkeypatch.delenv(native.SETTING)
    monkeypatch.delitem(sys.modules, LIBRARY, raising=False)
    (build / f"{LIBRARY}.py").write_text("", "utf-8")
    monkeypatch.setattr("sys.path", ["/x"])
    assert native.usable()
    geofences = ["/the/geofences"]
    assert not native.use_compiled(geofences, "shared.geofences")
    assert geofences == ["/the/geofences"]
    assert sys.path == ["/x"]


@pytest.mark.parametrize("edited", ["shared/telemetry/vehicle.py", "shared/geofences/index.py", "pyproject.toml"])
def test_the_digest_follows_every_source_a_build_depends_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, edited: str
) -> None:
    # A compiled module (its code), a module it imports (mypyc copies its Final values and checks its classes'
    # attribute types as built), mypy's configuration: an edit of any makes the build stale.
    for name in ("shared/telemetry/vehicle.py", "shared/geofences/index.py", "pyproject.toml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"# {name}\n", "utf-8")
    monkeypatch.setattr(native, "ROOT", tmp_path)
    before = native.digest()
    (tmp_path / edited).write_text("# changed\n", "utf-8")
    assert native.digest() != before


@pytest.mark.parametrize(
    ("value", "wanted"),
    [
        (None, True),
        ("", True),
        ("true", True),
        ("True", True),
        ("1", True),
        ("false", False),
        (" FALSE ", False),
        ("0", False),
        ("no", False),
        ("off", False),
    ],
)
def test_the_setting_turns_it_off(value: str | None, wanted: bool) -> None:
    environ = {} if value is None else {native.SETTING: value}
    assert native.wanted(environ) is wanted


def test_turned_off_a_usable_build_is_not_used(build: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.SETTING, "false")
    path = ["/the/sources"]
    assert native.usable()
    assert not native.use_compiled(path, "shared.telemetry")
    assert path == ["/the/sources"]


# What stays interpreted, and why, is in shared/native.py's comment: a new module is a decision to make.
INTERPRETED = {
    "shared/telemetry": {"catalogue", "runtime", "tuning", "job_pool"},
    "shared/geofences": {"model", "service"},
}


@pytest.mark.parametrize("package", sorted(native.COMPILED))
def test_every_compiled_module_exists_and_the_rest_of_the_package_is_named(package: str) -> None:
    modules = {p.stem for p in (native.ROOT / package).glob("*.py")} - {"__init__"}
    assert set(native.COMPILED[package]) <= modules
    assert modules - set(native.COMPILED[package]) == INTERPRETED[package]


@pytest.mark.parametrize("package", sorted(native.COMPILED))
def test_each_compiled_package_asks_for_its_build(package: str) -> None:
    # Without the call in its __init__.py a package's compiled modules are built but never used.
    init = (native.ROOT / package / "__init__.py").read_text("utf-8")
    assert "use_compiled(__path__, __name__)" in init
