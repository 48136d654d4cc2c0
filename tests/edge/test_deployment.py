"""edge/deployment.template.json and edge/Dockerfile hold what the module needs (no IoT Edge runtime here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from edge import policy
from edge.__main__ import main

EDGE = Path(__file__).resolve().parents[2] / "edge"


def manifest() -> dict[str, Any]:
    content: dict[str, Any] = json.loads((EDGE / "deployment.template.json").read_text())["modulesContent"]
    return content


def test_modules_routes_volume_restart_and_default_policy() -> None:
    content = manifest()
    agent = content["$edgeAgent"]["properties.desired"]
    assert set(agent["systemModules"]) == {"edgeAgent", "edgeHub"}
    module = agent["modules"]["carlink"]
    assert module["restartPolicy"] == "always"
    options = json.loads(module["settings"]["createOptions"])  # a string, as set-modules wants it
    assert "carlink-outbox:/var/lib/carlink" in options["HostConfig"]["Binds"]
    assert module["env"]["EDGE_OUTBOX"]["value"].startswith("/var/lib/carlink/")
    hub_options = json.loads(agent["systemModules"]["edgeHub"]["settings"]["createOptions"])
    assert hub_options["HostConfig"]["Binds"] == ["edgehub-store:/var/lib/edgehub"]  # edgeHub's own store persists
    routes = content["$edgeHub"]["properties.desired"]["routes"]
    assert all("/messages/modules/carlink/" in r["route"] and "$upstream" in r["route"] for r in routes.values())
    kinds = {k for r in routes.values() for k in re.findall(r"type = '(\w+)'", r["route"])}
    assert kinds == {"telemetry", "request", "gap"}
    assert policy.parse(content["carlink"]["properties.desired"]["collection"]).captures


def test_the_manifests_twins_have_only_names_iot_hub_accepts() -> None:
    """IoT Hub refuses a deployment whose module twins' desired properties have a name with '.', '$', '#', a space
    or a control character (400 ArgumentInvalid): the policy's signal paths are values, in an array."""
    from devstack.iothub.twin import check_keys  # the local hub's check (the edge package imports no devstack)

    content = manifest()
    for module in ("$edgeAgent", "$edgeHub", "carlink"):
        check_keys(content[module]["properties.desired"])
    collection = content["carlink"]["properties.desired"]["collection"]
    paths = [entry["path"] for entry in collection["signals"]]
    assert paths == sorted(paths)
    assert set(policy.parse(collection).signals) == set(paths) >= {"Vehicle.Speed", "Vehicle.Diagnostics.DTCList"}


def test_dockerfile_copies_only_the_edge_package_and_its_data() -> None:
    copies = [line.split()[1] for line in (EDGE / "Dockerfile").read_text().splitlines() if line.startswith("COPY")]
    assert copies == [
        "edge/requirements.txt", "edge/", "shared/telemetry/vss-6.0-signals.json",
        "simulator/__init__.py",
    ]  # fmt: skip


def test_the_package_imports_nothing_of_the_cloud_app() -> None:
    for path in EDGE.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) (shared|functions|devstack)\b", text, re.M), path.name
        for module in re.findall(r"^\s*from (simulator\S*) import", text, re.M):
            assert module in ("simulator.drive", "simulator.commands"), path.name
    drive = (EDGE.parent / "simulator" / "drive.py").read_text()
    assert not re.search(r"^\s*(from|import) (shared|functions|devstack|simulator)\b", drive, re.M)
    commands = (EDGE.parent / "simulator" / "commands.py").read_text()  # the car's command rules: the model only
    assert re.findall(r"^\s*(?:from|import) (shared|functions|devstack|simulator\S*)\b", commands, re.M) == [
        "simulator.drive"
    ]


def test_cli_refuses_an_unknown_source(tmp_path: Path) -> None:
    argv = ["--source", "serial:/dev/tty0", "--outbox", str(tmp_path / "o.db"), "--connection-string",
            "HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=" + "a" * 44]  # fmt: skip
    with pytest.raises(SystemExit, match="unknown source"):
        main(argv)
