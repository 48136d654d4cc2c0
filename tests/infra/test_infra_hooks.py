"""The postprovision hook writes local.settings.json from the azd environment and prints what Bicep cannot do: app
role assignments, tokens, customer-tenant onboarding, the Graph permissions and the Teams policy; never a key."""

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
    "API_CLIENT_ID": "aaaaaaaa-1111-2222-3333-444444444444",
    "API_SERVICE_PRINCIPAL_ID": "bbbbbbbb-1111-2222-3333-444444444444",
    "API_SCOPE": "api://aaaaaaaa-1111-2222-3333-444444444444/Fleet.Access",
    "API_PLATFORM_ADMIN_ASSIGNED": "true",
    "DASHBOARD_URL": "https://func-x.azurewebsites.net/api/dashboard/",
    "DPS_NAME": "provs-x",
    "DPS_ID_SCOPE": "0ne00000001",
    "AZURE_RESOURCE_GROUP": "rg-dev",
    "AZURE_FUNCTION_URL": "https://func-x.azurewebsites.net",
    "AZURE_FUNCTION_NAME": "func-x",
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


def run_hook(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "infra/hooks/postprovision.sh"],
        cwd=project / "project",
        env={"PATH": f"{project / 'bin'}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )


def test_hook_writes_local_settings_from_the_azd_environment(project: Path) -> None:
    # GIVEN an old local.settings.json WHEN the hook runs THEN it is kept as .bak and replaced by the azd values
    root = project / "project"
    (root / "local.settings.json").write_text('{"old": true}')
    result = run_hook(project)
    written = json.loads((root / "local.settings.json").read_text())
    assert written == {"IsEncrypted": False, "Values": json.loads(AZD_VALUES["LOCAL_SETTINGS"])}
    assert json.loads((root / "local.settings.json.bak").read_text()) == {"old": True}
    client_id = AZD_VALUES["AZURE_FUNCTION_IDENTITY_CLIENT_ID"]
    assert f'New-CsApplicationAccessPolicy -Identity "automotive-cloud-dev" -AppIds "{client_id}"' in result.stdout
    assert 'Grant-CsApplicationAccessPolicy -PolicyName "automotive-cloud-dev" -Global' in result.stdout
    assert AZD_VALUES["AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID"] in result.stdout, "Graph grant instructions"


def test_hook_prints_what_the_app_registration_cannot_automate(project: Path) -> None:
    # GIVEN the API's registration outputs WHEN the hook runs THEN it prints the admin-consent URL for a customer
    # tenant, how to assign app roles, how to get a token for the API and how to add the tenant to a brand
    out = run_hook(project).stdout
    app_id, sp_id = AZD_VALUES["API_CLIENT_ID"], AZD_VALUES["API_SERVICE_PRINCIPAL_ID"]
    assert f"https://login.microsoftonline.com/CUSTOMER_TENANT_ID/adminconsent?client_id={app_id}" in out
    assert f"https://graph.microsoft.com/v1.0/servicePrincipals/{sp_id}/appRoleAssignedTo" in out
    assert f"az ad sp show --id {app_id}" in out
    assert f"az account get-access-token --resource api://{app_id}" in out
    assert f"az account get-access-token --scope api://{app_id}/Fleet.Access" in out
    assert "https://func-x.azurewebsites.net/api/me" in out
    assert "PUT /api/brands/{brandId}" in out
    assert '"tenants"' in out
    for role in ("Platform.Admin", "Brand.Admin", "Fleet.Operator", "Fleet.Reader", "Driver"):
        assert role in out


@pytest.mark.parametrize("hook", ["postprovision.sh", "postprovision.ps1"])
def test_hooks_hand_out_no_function_key(hook: str) -> None:
    # The API takes Entra ID tokens only: no hook may fetch or print a function or host key. The one exception is
    # DPS's key for the allocation webhook (functions/provisioning.py: DPS can present nothing else): a function
    # key of the allocation function alone, never a host key, and it only goes into the enrollment groups'
    # webhook URL (tests/infra/test_infra_provisioning.py checks it is never printed).
    text = (ROOT / "infra" / "hooks" / hook).read_text(encoding="utf-8").lower()
    for word in ("functionapp keys", "functionkeys", "host/default", "listkeys", "x-functions-key"):
        assert word not in text, f"{hook} mentions {word}"
    for line in text.splitlines():
        if "function keys" in line and not line.lstrip().startswith("#"):
            assert "az functionapp function keys" in line, f"{hook}: {line.strip()}"
            assert "keyargs" in line.replace("_", ""), f"{hook}: a function key other than the allocation function's"
        if "?code=" in line or "&code=" in line:
            assert "webhook-url" in line, f"{hook}: a key in a URL outside the DPS webhook: {line.strip()}"
    assert "provisioning_allocate" in text, "the allocation function (functions/provisioning.py) is named"
