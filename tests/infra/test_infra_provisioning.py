"""Device provisioning in infra (issue 15): IoT Hub stamps by region, a Device Provisioning Service linked to every
stamp through its own identity (no hub connection string), enrollment groups with the custom allocation webhook
created by the postprovision hook, least-privilege roles, and the app settings the code reads set from the outputs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from infra_model import INFRA, ROOT, Bicep, body, condition, loop_source
from test_infra_hooks import AZD_VALUES

DPS_MODULE = "core/iot/provisioning-service.bicep"
HUB_MODULE = "core/iot/iot-hub.bicep"
HUB_RBAC = "app/iot-hub-rbac.bicep"
ALLOCATE_URL = f"{AZD_VALUES['AZURE_FUNCTION_URL']}/api/provisioning/allocate"


def expr(value: Any) -> Any:
    """pycep's property and index accessors as Bicep text ('iotHubs[i].outputs.hostName'); anything else as is."""
    if isinstance(value, dict) and "operator" in value:
        kind, operands = value["operator"]["type"], value["operator"]["operands"]
        left, right = expr(operands["operand_1"]), expr(operands["operand_2"])
        if kind == "property_accessor":
            return f"{left}.{right}"
        if kind == "index_accessor":
            return f"{left}[{right}]"
    return value


def loop_fields(value: dict[str, Any]) -> dict[str, Any]:
    return {k: expr(v) for k, v in body(value).items()}


@pytest.fixture(scope="module")
def dps(bicep: dict[str, Bicep]) -> dict[str, Any]:
    (resource,) = bicep[DPS_MODULE].resources_of_type("Microsoft.Devices/provisioningServices").values()
    return body(resource)


# ---- the stamps ----


def test_the_stamps_parameter_is_described_and_defaults_to_todays_hub(main_bicep: Bicep) -> None:
    param = main_bicep.parameters["iotHubStamps"]
    decorators = {d["type"]: d["argument"] for d in param["decorators"]}
    for field in ("nameSuffix", "location", "region"):
        assert field in decorators["description"], f"the description must explain {field}"
    assert decorators["min_length"] == 1
    # one stamp, with no suffix: the hub keeps today's name, so an existing deployment gains DPS and loses nothing
    assert param["default"] == [{"nameSuffix": "", "location": "", "region": "default"}]
    assert main_bicep.var("stampSuffixes")  # '' for the first stamp, '-<suffix>' otherwise


def test_every_stamp_is_an_iot_hub_with_the_same_routes_into_the_one_event_hubs_namespace(
    main_bicep: Bicep, module_of: Any
) -> None:
    name, declaration, _ = module_of("main.bicep", HUB_MODULE)
    assert loop_source(declaration["config"]) == "iotHubStamps"
    params = body(declaration)["params"]
    assert params["routing"] == "iotHubRouting"
    assert expr(params["eventHubNamespaceName"]) == "eventHubs.outputs.name"
    assert params["name"] == "${abbrs.devicesIotHubs}${resourceToken}${stampSuffixes[i]}"
    assert expr(params["location"]) == "stampLocations[i]"
    assert body(declaration)["name"] == "iot-hub${stampSuffixes[i]}", "the first stamp keeps today's deployment name"
    assert name == "iotHubs"


def test_each_stamp_gives_the_function_and_dps_identities_iot_hub_access(module_of: Any) -> None:
    _, declaration, rbac = module_of("main.bicep", HUB_RBAC)
    assert loop_source(declaration["config"]) == "iotHubStamps", "one role module per stamp"
    params = {k: expr(v) for k, v in body(declaration)["params"].items()}
    assert params["iotHubName"] == "iotHubs[i].outputs.name"
    assert params["functionPrincipalId"] == "functionIdentity.outputs.principalId"
    assert params["dpsPrincipalId"] == "dpsIdentity.outputs.principalId"
    principals = {
        body(r)["properties"]["principalId"]
        for r in rbac.resources_of_type("Microsoft.Authorization/roleAssignments").values()
    }
    assert principals == {"functionPrincipalId", "dpsPrincipalId", "userPrincipalId"}


# ---- DPS ----


def test_dps_links_every_stamp_with_its_own_identity_not_a_connection_string(
    dps: dict[str, Any], module_of: Any, bicep: dict[str, Bicep]
) -> None:
    # GIVEN the DPS module WHEN it links the hubs THEN each by host name and the DPS identity, never a key
    assert dps["identity"]["type"] == "UserAssigned"
    assert dps["identity"]["userAssignedIdentities"] == {"'${identityId}'": {}}
    hubs = dps["properties"]["iotHubs"]
    assert loop_source(hubs) == "linkedHubs"
    link = loop_fields(hubs)
    assert link["authenticationType"] == "UserAssigned"
    assert link["selectedUserAssignedIdentityResourceId"] == "identityId"
    assert link["hostName"] == "hub.hostName"
    assert "connectionString" not in link
    assert "connectionstring" not in bicep[DPS_MODULE].text.lower().replace("connection string", "")

    # AND main passes every stamp's hub, after the hubs' role assignments exist
    _, declaration, _ = module_of("main.bicep", DPS_MODULE)
    params = body(declaration)["params"]
    assert loop_source(params["linkedHubs"]) == "iotHubStamps"
    assert loop_fields(params["linkedHubs"]) == {
        "hostName": "iotHubs[i].outputs.hostName",
        "location": "stampLocations[i]",
    }
    assert expr(params["identityId"]) == "dpsIdentity.outputs.resourceId"
    assert body(declaration)["dependsOn"] == ["iotHubRbac"]


def test_dps_is_entra_id_only_and_its_default_allocation_stays_near_the_car(
    dps: dict[str, Any], bicep: dict[str, Bicep]
) -> None:
    properties = dps["properties"]
    assert properties["disableLocalAuth"] is True, "no DPS shared access policy"
    assert "authorizationPolicies" not in properties
    assert dps["sku"]["name"] == "S1"
    # ARM has no custom policy (the webhook is per enrollment group, set by the hook): the default for an
    # enrollment that names none keeps the car in the nearest region rather than hashing it anywhere
    assert properties["allocationPolicy"] == "allocationPolicy"
    assert bicep[DPS_MODULE].parameters["allocationPolicy"]["default"] == "GeoLatency"


def test_the_function_app_gets_the_stamps_and_dps_settings_from_the_outputs(
    app_settings: dict[str, Any], module_of: Any
) -> None:
    assert app_settings["IOTHUB_STAMPS"] == {
        "function": {"type": "string", "parameters": {"value_to_convert": "iotHubStamps"}}
    }
    assert app_settings["DPS_ID_SCOPE"] == "dpsIdScope"
    assert app_settings["DPS_HOSTNAME"] == "dpsHostName"
    assert app_settings["DPS_GLOBAL_ENDPOINT"] == "global.azure-devices-provisioning.net"
    _, declaration, _ = module_of("main.bicep", "app/function-app.bicep")
    params = body(declaration)["params"]
    # IOTHUB_STAMPS: [{"hostName": ..., "region": ...}], the shape shared/settings.py documents
    assert loop_source(params["iotHubStamps"]) == "iotHubStamps"
    assert loop_fields(params["iotHubStamps"]) == {"hostName": "iotHubs[i].outputs.hostName", "region": "stamp.region"}
    assert expr(params["iotHubHostName"]) == "iotHubs[0].outputs.hostName", "the first stamp is the default hub"
    assert expr(params["dpsIdScope"]) == "provisioningService.outputs.idScope"
    assert expr(params["dpsHostName"]) == "provisioningService.outputs.serviceOperationsHostName"


def test_main_outputs_the_stamps_and_dps_for_azd(main_bicep: Bicep) -> None:
    outputs = main_bicep.outputs
    assert expr(outputs["DPS_NAME"]["value"]) == "provisioningService.outputs.name"
    assert expr(outputs["DPS_ID_SCOPE"]["value"]) == "provisioningService.outputs.idScope"
    assert expr(outputs["DPS_HOSTNAME"]["value"]) == "provisioningService.outputs.serviceOperationsHostName"
    stamps = outputs["IOTHUB_STAMPS"]["value"]
    assert loop_source(stamps) == "iotHubStamps"
    assert set(loop_fields(stamps)) == {"name", "hostName", "location", "region"}
    assert expr(outputs["IOTHUB_HOSTNAME"]["value"]) == "iotHubs[0].outputs.hostName"


def test_the_function_reads_enrollment_group_keys_in_development_mode_only(
    bicep: dict[str, Bicep], main_bicep: Bicep, module_of: Any, app_settings: dict[str, Any]
) -> None:
    # Least privilege: reading a group's key is "Fetch Attestation Mechanism Details", which the built-in Data
    # Reader lacks and Data Contributor exceeds (enrollment writes): a custom role of exactly two data actions,
    # assignable in this resource group, defined and assigned only when development keys are on.
    rbac = bicep["app/rbac.bicep"]
    (definition,) = rbac.resources_of_type("Microsoft.Authorization/roleDefinitions").values()
    assert condition(definition) == "developmentKeys"
    properties = body(definition)["properties"]
    assert properties["type"] == "CustomRole"
    (scope,) = properties["assignableScopes"]
    assert scope["operator"]["operands"]["operand_1"]["function"]["type"] == "resource_group"
    assert scope["operator"]["operands"]["operand_2"] == "id", "assignable in this resource group only"
    (permissions,) = properties["permissions"]
    assert permissions["actions"] == []
    assert rbac.var(permissions["dataActions"]) == [
        "Microsoft.Devices/provisioningServices/enrollmentGroups/read",
        "Microsoft.Devices/provisioningServices/attestationmechanism/details/action",
    ]
    (assignment,) = [
        r
        for r in rbac.resources_of_type("Microsoft.Authorization/roleAssignments").values()
        if body(r)["properties"]["principalId"] == "functionPrincipalId" and body(r)["scope"] == "provisioningService"
    ]
    assert condition(assignment) == "developmentKeys"
    assert rbac.parameters["developmentKeys"]["default"] is False
    # one switch: the same parameter turns the app setting and the role on
    assert main_bicep.parameters["provisioningDevelopmentKeys"]["default"] is False
    _, rbac_module, _ = module_of("main.bicep", "app/rbac.bicep")
    assert body(rbac_module)["params"]["developmentKeys"] == "provisioningDevelopmentKeys"
    assert expr(body(rbac_module)["params"]["provisioningServiceName"]) == "provisioningService.outputs.name"
    _, app_module, _ = module_of("main.bicep", "app/function-app.bicep")
    assert body(app_module)["params"]["provisioningDevelopmentKeys"] == "provisioningDevelopmentKeys"
    assert "provisioningDevelopmentKeys" in json.dumps(app_settings["PROVISIONING_DEVELOPMENT_KEYS"])
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["provisioningDevelopmentKeys"]["value"] == "${PROVISIONING_DEVELOPMENT_KEYS=false}"


def test_abbreviation_and_readme(main_bicep: Bicep) -> None:
    assert json.loads((INFRA / "abbreviations.json").read_text())["devicesProvisioningServices"] == "provs-"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    deploy = readme.split("## Deploy to Azure", 1)[1].split("\n## ", 1)[0]
    for word in ("Device Provisioning Service", "iotHubStamps", "enrollment group", "TPM", "docs/stamps.md"):
        assert word in deploy, f"README's Deploy to Azure section does not mention {word}"
    assert (ROOT / "docs" / "stamps.md").is_file()


# ---- the postprovision hook: enrollment groups ----

KEY = "S3cr3t-DPS-key=="
FAKE_AZ = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
  "extension show"*) exit 0;;
  "functionapp function keys list"*) [ {deployed} = 1 ] || exit 1; echo "{existing_key}"; exit 0;;
  "functionapp function keys set"*) [ {deployed} = 1 ] || exit 1; echo "{key}"; exit 0;;
  *"enrollment-group show"*) exit {group_exists};;
  *"certificate show"*"isVerified"*) echo {verified}; exit 0;;
  *"certificate show"*"etag"*) echo etag-1; exit 0;;
  *"certificate show"*) exit {ca_exists};;
  *"generate-verification-code"*) echo CODE-1234; exit 0;;
esac
exit 0
"""


def hook_with_az(
    tmp_path: Path,
    extra: dict[str, str],
    *,
    group_exists: bool = False,
    ca_exists: bool = False,
    verified: bool = False,
    deployed: bool = True,
    key_exists: bool = True,
) -> tuple[str, list[str]]:
    """Run postprovision.sh with a fake azd (AZD_VALUES + extra) and a fake az that logs its arguments."""
    hooks = tmp_path / "project" / "infra" / "hooks"
    hooks.mkdir(parents=True)
    shutil.copy(ROOT / "infra" / "hooks" / "postprovision.sh", hooks)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    values = {**AZD_VALUES, **extra}
    cases = "\n".join(f"  {name}) cat <<'V'\n{value}\nV\n  ;;" for name, value in values.items())
    (bin_dir / "azd").write_text(f'#!/bin/sh\ncase "$3" in\n{cases}\n  *) exit 1;;\nesac\n')
    log = tmp_path / "az.log"
    (bin_dir / "az").write_text(
        FAKE_AZ.format(
            log=log,
            group_exists=0 if group_exists else 1,
            ca_exists=0 if ca_exists else 1,
            verified="true" if verified else "false",
            deployed=1 if deployed else 0,
            existing_key=KEY if key_exists else "",
            key=KEY,
        )
    )
    for tool in ("azd", "az"):
        (bin_dir / tool).chmod(0o755)
    result = subprocess.run(
        ["sh", "infra/hooks/postprovision.sh"],
        cwd=tmp_path / "project",
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout, log.read_text().splitlines() if log.exists() else []


def test_the_hooks_name_the_allocation_function_the_app_registers(trigger_bindings: list[dict[str, Any]]) -> None:
    # The webhook URL and the key DPS uses belong to the function the app really registers, at FUNCTION level.
    (allocate,) = [
        b for b in trigger_bindings if b["type"] == "httpTrigger" and b.get("route") == "provisioning/allocate"
    ]
    assert allocate["authLevel"] == "FUNCTION"
    for hook in ("postprovision.sh", "postprovision.ps1"):
        text = (ROOT / "infra" / "hooks" / hook).read_text(encoding="utf-8")
        assert allocate["functionName"] in text, hook
        assert "/api/provisioning/allocate" in text, hook


CUSTOM = f"--allocation-policy custom --webhook-url {ALLOCATE_URL}?code={KEY} --api-version 2021-10-01"


def test_the_hook_creates_the_symmetric_key_group_with_the_custom_allocation_webhook(tmp_path: Path) -> None:
    # GIVEN a fresh deployment WHEN the hook runs THEN the development group is created with Entra ID, attesting
    # by symmetric key, allocated by the function app's webhook; with no brand CA it says how to add one
    out, calls = hook_with_az(tmp_path, {})
    (create,) = [c for c in calls if "enrollment-group create" in c]
    assert "--dps-name provs-x --resource-group rg-dev" in create
    assert "--enrollment-id development-fleet" in create
    assert "--attestation-type symmetrickey" in create
    assert "--auth-type login" in create
    assert CUSTOM in create
    assert "azd env set DPS_BRAND_CA_CERTIFICATE" in out
    assert "0ne00000001" in out
    assert KEY not in out, "the webhook's key is written into DPS, never printed"
    (read_key,) = [c for c in calls if "function keys" in c]
    assert read_key.startswith("functionapp function keys list --resource-group rg-dev --name func-x")
    assert "--function-name provisioning_allocate --query dps" in read_key


def test_the_allocation_function_gets_a_key_of_its_own_for_dps(tmp_path: Path) -> None:
    # GIVEN a deployed allocation function without DPS's key WHEN the hook runs THEN it creates a function key
    # named dps on that function alone (never a host key) and uses it in the webhook URL, without printing it
    out, calls = hook_with_az(tmp_path, {}, key_exists=False)
    (create_key,) = [c for c in calls if "function keys set" in c]
    assert "--function-name provisioning_allocate --key-name dps" in create_key
    assert any(CUSTOM in c for c in calls if "enrollment-group create" in c)
    assert KEY not in out


def test_before_the_first_deployment_the_hook_says_when_to_run_again(tmp_path: Path) -> None:
    # GIVEN the first `azd up` (postprovision runs before the code is deployed) WHEN the hook runs THEN no
    # enrollment group is created without the webhook's key, and it says to rerun the hook after deploying
    out, calls = hook_with_az(tmp_path, {}, deployed=False)
    assert not [c for c in calls if "enrollment-group" in c]
    assert "azd hooks run postprovision" in out
    assert "Skipped enrollment group development-fleet" in out


def test_a_second_run_updates_the_groups_allocation_and_creates_nothing(tmp_path: Path) -> None:
    _, calls = hook_with_az(tmp_path, {}, group_exists=True)
    assert not [c for c in calls if "enrollment-group create" in c]
    (update,) = [c for c in calls if "enrollment-group update" in c]
    assert CUSTOM in update


def test_the_brand_ca_is_uploaded_unverified_and_the_proof_of_possession_steps_printed(tmp_path: Path) -> None:
    # GIVEN the brand's intermediate CA certificate WHEN the hook runs THEN it is uploaded (never marked verified
    # without proof), and the hook prints the verification code and the steps for whoever holds the CA key
    out, calls = hook_with_az(
        tmp_path, {"DPS_BRAND_CA_CERTIFICATE": "/certs/brand-ca.pem", "DPS_DEVELOPMENT_GROUP": "none"}
    )
    (upload,) = [c for c in calls if "certificate create" in c]
    assert "--certificate-name brand-intermediate-ca --path /certs/brand-ca.pem" in upload
    assert "--verified" not in upload
    assert any("generate-verification-code" in c and "--etag etag-1" in c for c in calls)
    assert '-subj "/CN=CODE-1234"' in out
    assert "az iot dps certificate verify" in out
    assert not [c for c in calls if "enrollment-group" in c and "show" not in c], "no group before the CA is verified"


def test_a_verified_brand_ca_gets_the_x509_group_with_the_custom_allocation_webhook(tmp_path: Path) -> None:
    _, calls = hook_with_az(
        tmp_path, {"DPS_BRAND_CA_CERTIFICATE": "/certs/brand-ca.pem"}, ca_exists=True, verified=True
    )
    assert not [c for c in calls if "certificate create" in c], "an uploaded CA is not uploaded again"
    creates = [c for c in calls if "enrollment-group create" in c]
    (x509,) = [c for c in creates if "--enrollment-id brand-x509" in c]
    assert "--ca-name brand-intermediate-ca" in x509
    assert CUSTOM in x509


def test_the_powershell_hook_does_the_same(tmp_path: Path) -> None:
    # No pwsh here: the Windows twin is checked for the same commands and values.
    text = (ROOT / "infra" / "hooks" / "postprovision.ps1").read_text(encoding="utf-8")
    for word in (
        "azd env get-value DPS_NAME",
        "/api/provisioning/allocate",
        "enrollment-group create",
        "enrollment-group update",
        "--attestation-type', 'symmetrickey'",
        "--allocation-policy', 'custom'",
        "'--api-version', '2021-10-01'",
        "certificate generate-verification-code",
        "az functionapp function keys list @keyArgs --query dps",
        "--key-name dps",
        "?code=$key",
        "--ca-name'",
        "--auth-type login",
    ):
        assert word in text, f"postprovision.ps1 lacks {word}"
