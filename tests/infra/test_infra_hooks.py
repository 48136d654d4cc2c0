"""The postprovision hook writes local.settings.json from the azd environment and prints the Teams policy steps."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from infra_model import ROOT

AZD_VALUES = {
    "LOCAL_SETTINGS": json.dumps(
        {"COSMOS_ENDPOINT": "https://c.documents.azure.com:443/", "FUNCTIONS_WORKER_RUNTIME": "python"}
    ),
    "AZURE_FUNCTION_IDENTITY_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID": "66666666-7777-8888-9999-000000000000",
    "GRAPH_PERMISSIONS_GRANTED": "false",
    "AZURE_ENV_NAME": "dev",
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the hook in a scratch project, with a fake `azd` that answers `azd env get-value NAME`."""
    hooks = tmp_path / "project" / "infra" / "hooks"
    hooks.mkdir(parents=True)
    shutil.copy(ROOT / "infra" / "hooks" / "postprovision.sh", hooks)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cases = "\n".join(f"  {name}) cat <<'V'\n{value}\nV\n  ;;" for name, value in AZD_VALUES.items())
    fake = bin_dir / "azd"
    fake.write_text(f'#!/bin/sh\ncase "$3" in\n{cases}\n  *) exit 1;;\nesac\n')
    fake.chmod(0o755)
    return tmp_path


def test_hook_writes_local_settings_from_the_azd_environment(project: Path) -> None:
    # GIVEN an old local.settings.json WHEN the hook runs THEN it is kept as .bak and replaced by the azd values
    root = project / "project"
    (root / "local.settings.json").write_text('{"old": true}')
    result = subprocess.run(
        ["sh", "infra/hooks/postprovision.sh"],
        cwd=root,
        env={"PATH": f"{project / 'bin'}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    written = json.loads((root / "local.settings.json").read_text())
    assert written == {"IsEncrypted": False, "Values": json.loads(AZD_VALUES["LOCAL_SETTINGS"])}
    assert json.loads((root / "local.settings.json.bak").read_text()) == {"old": True}
    client_id = AZD_VALUES["AZURE_FUNCTION_IDENTITY_CLIENT_ID"]
    assert f'New-CsApplicationAccessPolicy -Identity "automotive-cloud-dev" -AppIds "{client_id}"' in result.stdout
    assert 'Grant-CsApplicationAccessPolicy -PolicyName "automotive-cloud-dev" -Global' in result.stdout
    assert AZD_VALUES["AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID"] in result.stdout, "Graph grant instructions"
