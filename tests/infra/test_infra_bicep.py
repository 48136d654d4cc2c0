"""The Bicep templates: they parse, follow the azd layout, describe every parameter and output, and keep the
secure defaults the issue asks for (no shared keys, TLS 1.2, Entra ID only, Flex Consumption without the settings
it forbids). Structure is read from pycep's parse tree, not from text, except for whole-repo bans (listKeys)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from infra_model import INFRA, ROOT, Bicep, accessor, body, condition, function, unquote

EXPECTED_RESOURCE_TYPES = {
    "Microsoft.Resources/resourceGroups",
    "Microsoft.ManagedIdentity/userAssignedIdentities",
    "Microsoft.Maps/accounts",
    "Microsoft.Storage/storageAccounts",
    "Microsoft.Storage/storageAccounts/blobServices/containers",
    "Microsoft.Storage/storageAccounts/queueServices/queues",
    "Microsoft.OperationalInsights/workspaces",
    "Microsoft.Insights/components",
    "Microsoft.Web/serverfarms",
    "Microsoft.Web/sites",
    "Microsoft.EventHub/namespaces",
    "Microsoft.EventHub/namespaces/eventhubs",
    "Microsoft.EventHub/namespaces/eventhubs/consumergroups",
    "Microsoft.Devices/IotHubs",
    "Microsoft.DocumentDB/databaseAccounts",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases",
    "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers",
    "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments",
    "Microsoft.Authorization/roleAssignments",
    "Microsoft.Graph/appRoleAssignedTo",
    "Microsoft.Graph/applications",
    "Microsoft.Graph/servicePrincipals",
    "Microsoft.KeyVault/vaults",
    "Microsoft.KeyVault/vaults/keys",
}


def created(bicep: dict[str, Bicep], resource_type: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(file, symbol, declaration) of every non-existing resource of `resource_type` in infra/."""
    return [
        (file, name, r)
        for file, b in bicep.items()
        for name, r in b.resources_of_type(resource_type).items()
        if not r["existing"]
    ]


def the(bicep: dict[str, Bicep], resource_type: str) -> dict[str, Any]:
    """The body of the single resource of `resource_type` infra/ creates."""
    found = created(bicep, resource_type)
    assert len(found) == 1, f"expected one {resource_type}, found {[(f, n) for f, n, _ in found]}"
    return body(found[0][2])


def test_every_bicep_file_parses_into_declarations(bicep: dict[str, Bicep], bicep_files: list[Path]) -> None:
    # GIVEN every .bicep under infra/ WHEN parsed THEN each declares something (a parse that yields nothing
    # would hide a grammar mismatch)
    assert len(bicep) == len(bicep_files)
    for file, b in bicep.items():
        assert b.resources or b.modules, f"{file} declares no resource and no module"


def test_infra_creates_every_resource_the_automotive_cloud_needs(bicep: dict[str, Bicep]) -> None:
    types = {r["type"] for b in bicep.values() for r in b.resources.values() if not r["existing"]}
    assert types >= EXPECTED_RESOURCE_TYPES, sorted(EXPECTED_RESOURCE_TYPES - types)


def test_main_follows_the_azd_layout(main_bicep: Bicep) -> None:
    assert main_bicep.tree["globals"]["scope"]["value"] == "subscription"
    assert {"environmentName", "location", "principalId"} <= set(main_bicep.parameters)
    assert function(main_bicep.var("abbrs"), "load_json_content")["file_path"] == "abbreviations.json"
    token = main_bicep.var("resourceToken")
    assert "unique_string" in json.dumps(token), "resourceToken must come from uniqueString(...)"
    assert {unquote(k) for k in main_bicep.var("tags")} == {"azd-env-name"}
    location_meta = [d for d in main_bicep.parameters["location"]["decorators"] if d["type"] == "metadata"]
    assert location_meta
    assert location_meta[0]["argument"] == {"azd": {"type": "location"}}
    # every resource group-scoped module lands in the one resource group
    assert all(body(m)["scope"] == "rg" for m in main_bicep.modules.values())


def test_abbreviations_cover_exactly_what_main_uses(main_bicep: Bicep) -> None:
    abbreviations = json.loads((INFRA / "abbreviations.json").read_text())
    used = set(re.findall(r"abbrs\.(\w+)", main_bicep.text))
    assert used == set(abbreviations), f"unused: {set(abbreviations) - used}, missing: {used - set(abbreviations)}"


def test_parameters_file_feeds_declared_parameters_from_azd(main_bicep: Bicep) -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(parameters) <= set(main_bicep.parameters)
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    assert parameters["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    required = {n for n, p in main_bicep.parameters.items() if p.get("default") is None and p["type"] != "bool"}
    assert required <= set(parameters), f"azd cannot fill {required - set(parameters)}"


@pytest.mark.parametrize(
    "file", sorted(p.relative_to(INFRA).as_posix() for p in INFRA.rglob("*.bicep")), ids=lambda f: f
)
def test_every_parameter_and_output_is_described_registry_style(bicep: dict[str, Bicep], file: str) -> None:
    b = bicep[file]
    for name, param in b.parameters.items():
        descriptions = [d["argument"] for d in param["decorators"] if d["type"] == "description"]
        assert descriptions, f"{file}: param {name} has no @description"
        text = descriptions[0]
        has_default = "default" in param and param["default"] is not None
        if has_default:
            assert text.startswith("Optional. "), f"{file}: param {name} has a default: 'Optional. ...'"
            assert "Defaults to" in text, f"{file}: param {name} must say 'Defaults to X.'"
        else:
            assert text.startswith("Required. "), f"{file}: param {name} has no default: 'Required. ...'"
    for name, output in b.outputs.items():
        assert any(d["type"] == "description" for d in output["decorators"]), f"{file}: output {name} undescribed"


def test_main_outputs_give_azd_what_it_needs(main_bicep: Bicep) -> None:
    needed = {
        "AZURE_LOCATION",
        "AZURE_TENANT_ID",
        "AZURE_RESOURCE_GROUP",
        "AZURE_FUNCTION_NAME",
        "AZURE_FUNCTION_IDENTITY_CLIENT_ID",
        "COSMOS_ENDPOINT",
        "COSMOS_DATABASE",
        "IOTHUB_HOSTNAME",
        "IOTHUB_NAME",
        "EVENTHUB_NAMESPACE",
        "LOCAL_SETTINGS",
    }
    assert needed <= set(main_bicep.outputs), sorted(needed - set(main_bicep.outputs))
    assert all(re.fullmatch(r"[A-Z][A-Z0-9_]*", name) for name in main_bicep.outputs)
    # azd and the Azure SDKs read AZURE_CLIENT_ID from the environment: an output of that name would hijack them.
    assert "AZURE_CLIENT_ID" not in main_bicep.outputs


def test_no_secret_is_read_or_generated_anywhere(bicep: dict[str, Bicep]) -> None:
    banned = ["listKeys(", "listConnectionStrings(", "listkeys(", "AccountKey=", "SharedAccessKey", "@secure()"]
    banned += ["utcNow(", "newGuid("]  # names and values must not change between two deployments
    for file, b in bicep.items():
        for word in banned:
            assert word not in b.text, f"{file} contains {word}"


def test_storage_accepts_only_entra_id_over_tls12(bicep: dict[str, Bicep]) -> None:
    accounts = created(bicep, "Microsoft.Storage/storageAccounts")
    assert len(accounts) == 2, "the app's storage and the analytics lake"
    for _, _, account in accounts:
        properties = body(account)["properties"]
        assert properties["allowSharedKeyAccess"] is False
        assert properties["allowBlobPublicAccess"] is False
        assert properties["minimumTlsVersion"] == "TLS1_2"
        assert properties["supportsHttpsTrafficOnly"] is True
        assert properties["defaultToOAuthAuthentication"] is True


def test_application_insights_accepts_only_entra_id(bicep: dict[str, Bicep]) -> None:
    assert the(bicep, "Microsoft.Insights/components")["properties"]["DisableLocalAuth"] is True


def test_event_hubs_is_standard_entra_id_only(bicep: dict[str, Bicep]) -> None:
    namespace = the(bicep, "Microsoft.EventHub/namespaces")
    assert namespace["sku"]["name"] == "Standard"
    assert namespace["properties"]["disableLocalAuth"] is True
    assert namespace["properties"]["minimumTlsVersion"] == "1.2"


def test_cosmos_is_entra_id_only_and_serverless_by_default(bicep: dict[str, Bicep]) -> None:
    account = the(bicep, "Microsoft.DocumentDB/databaseAccounts")["properties"]
    assert account["disableLocalAuth"] is True
    assert account["disableKeyBasedMetadataWriteAccess"] is True
    assert account["minimalTlsVersion"] == "Tls12"
    assert "EnableServerless" in json.dumps(account["capabilities"])
    cosmos = bicep["core/database/cosmos-account.bicep"]
    assert cosmos.parameters["capacityMode"]["default"] == "serverless"


def test_azure_maps_is_gen2_entra_id_only_with_the_reader_role_and_wired_settings(
    bicep: dict[str, Bicep], app_settings: dict[str, Any], module_of: Any
) -> None:
    account = the(bicep, "Microsoft.Maps/accounts")
    assert account["kind"] == "Gen2"
    assert account["sku"]["name"] == "G2"
    assert account["properties"]["disableLocalAuth"] is True, "no shared keys or SAS tokens: Entra ID only"
    maps = bicep["core/maps/maps-account.bicep"]
    assert maps.variables["mapsDataReaderRoleId"]["value"] == "423170ca-a8f6-4b0f-8487-9e4eb8f49bfa"
    assert "uniqueId" in maps.text.split("output clientId", 1)[1].splitlines()[0]
    # The app reads MAPS_BASE_URL and MAPS_CLIENT_ID from the account's outputs, nothing typed by hand.
    assert app_settings["MAPS_BASE_URL"] == "mapsBaseUrl"
    assert app_settings["MAPS_CLIENT_ID"] == "mapsClientId"
    _, declaration, _ = module_of("main.bicep", "app/function-app.bicep")
    params = body(declaration)["params"]
    assert accessor(params["mapsBaseUrl"]) == "maps.outputs.baseUrl"
    assert accessor(params["mapsClientId"]) == "maps.outputs.clientId"
    _, declaration, _ = module_of("main.bicep", "core/maps/maps-account.bicep")
    assert accessor(body(declaration)["params"]["functionPrincipalId"]) == "functionIdentity.outputs.principalId"


def test_iot_hub_keeps_device_keys_but_no_service_keys(bicep: dict[str, Bicep]) -> None:
    hub = the(bicep, "Microsoft.Devices/IotHubs")
    properties = hub["properties"]
    assert properties["disableLocalAuth"] is True, "service-level shared access policies must be off"
    assert properties["disableDeviceSAS"] is False, "cars authenticate with their device keys"
    assert properties["minTlsVersion"] == "1.2"
    assert hub["identity"]["type"] == "UserAssigned"
    assert bicep["core/iot/iot-hub.bicep"].parameters["skuName"]["default"] == "S1"
    assert "capacity" in bicep["core/iot/iot-hub.bicep"].parameters


def test_function_app_runs_python311_on_flex_consumption_as_its_identity(
    bicep: dict[str, Bicep], app_settings: dict[str, Any]
) -> None:
    plan = the(bicep, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = the(bicep, "Microsoft.Web/sites")
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    assert site["identity"]["type"] == "UserAssigned"
    assert site["properties"]["httpsOnly"] is True
    assert "azd-service-name" in json.dumps(site["tags"])
    # Flex Consumption rejects these; they belong to the other plans.
    assert not {"FUNCTIONS_WORKER_RUNTIME", "WEBSITE_RUN_FROM_PACKAGE", "FUNCTIONS_EXTENSION_VERSION"} & set(
        app_settings
    )


def test_key_vault_is_rbac_only_recoverable_and_holds_a_rotated_wrapping_key(bicep: dict[str, Bicep]) -> None:
    # GIVEN the vault of drivers' token caches THEN Azure RBAC decides every call (no access policy can widen it),
    # a deleted vault or key stays recoverable for 90 days and nobody can purge it sooner
    vault = the(bicep, "Microsoft.KeyVault/vaults")
    properties = vault["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert "accessPolicies" not in properties
    assert properties["enablePurgeProtection"] is True
    assert properties["enableSoftDelete"] is True
    module = bicep["core/security/key-vault.bicep"]
    assert properties["softDeleteRetentionInDays"] == "softDeleteRetentionInDays"
    assert module.parameters["softDeleteRetentionInDays"]["default"] == 90
    assert properties["sku"] == {"family": "A", "name": "standard"}
    for flag in ("enabledForDeployment", "enabledForDiskEncryption", "enabledForTemplateDeployment"):
        assert properties[flag] is False, flag
    # THEN the key is RSA 3072 (4096 allowed), for wrapping only, not exportable, and rotated by policy
    key = the(bicep, "Microsoft.KeyVault/vaults/keys")["properties"]
    assert key["kty"] == "RSA"
    assert key["keySize"] == "keySize"
    assert module.parameters["keySize"]["default"] == 3072
    assert key["keyOps"] == ["wrapKey", "unwrapKey"]
    assert key["attributes"]["exportable"] is False
    actions = {action["action"]["type"]: action["trigger"] for action in key["rotationPolicy"]["lifetimeActions"]}
    assert actions["rotate"] == {"timeAfterCreate": "keyRotationInterval"}
    assert key["rotationPolicy"]["attributes"]["expiryTime"] == "keyExpiryTime"


def test_the_app_may_only_wrap_and_unwrap_with_the_token_key(bicep: dict[str, Bicep]) -> None:
    # Key Vault Crypto Service Encryption User (keys/read, wrapKey, unwrapKey), on the key itself, for the app only
    module = bicep["core/security/key-vault.bicep"]
    (assignment,) = module.resources_of_type("Microsoft.Authorization/roleAssignments").values()
    config = body(assignment)
    assert config["scope"] == "key"
    assert module.var("cryptoServiceEncryptionUserRoleId") == "e147488a-f6f5-4113-8e2d-b22465e65bf6"
    assert config["properties"]["principalId"] == "functionPrincipalId"
    assert config["properties"]["principalType"] == "ServicePrincipal"
    assert condition(assignment) is None
    for file, b in bicep.items():  # nobody gets the vault's broader roles anywhere
        for broader in ("00482a5a-887f-4fb3-b363-3b7fe8e74483", "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"):
            assert broader not in b.text, f"{file} grants Key Vault Administrator or Crypto Officer"


def test_token_key_id_is_the_keys_versionless_uri_and_sign_in_is_configurable(
    main_bicep: Bicep, module_of: Any, app_settings: dict[str, Any]
) -> None:
    _, key_vault, module = module_of("main.bicep", "core/security/key-vault.bicep")
    assert accessor(module.outputs["tokenWrapKid"]["value"]) == "key.properties.keyUri"
    assert accessor(body(key_vault)["params"]["functionPrincipalId"]) == "functionIdentity.outputs.principalId"
    _, function_app, _ = module_of("main.bicep", "app/function-app.bicep")
    params = body(function_app)["params"]
    assert accessor(params["tokenKeyId"]) == "keyVault.outputs.tokenWrapKid"
    assert (params["signinClientId"], params["signinAuthority"]) == ("signinClientId", "signinAuthority")
    assert app_settings["TOKEN_KEY_ID"] == "tokenKeyId"
    assert app_settings["SIGNIN_CLIENT_ID"] == "signinClientId"
    assert app_settings["SIGNIN_AUTHORITY"] == "signinAuthority"
    # the sign-in's defaults are written once, in main.bicep: off, and the cloud's /common authority
    assert main_bicep.parameters["signinClientId"]["default"] == ""
    assert "common" in json.dumps(main_bicep.parameters["signinAuthority"]["default"])
    assert "loginEndpoint" in json.dumps(main_bicep.parameters["signinAuthority"]["default"])


def test_basic_auth_publishing_is_off(bicep: dict[str, Bicep]) -> None:
    policies = created(bicep, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body(r)["name"] for _, _, r in policies} == {"ftp", "scm"}
    assert all(body(r)["properties"]["allow"] is False for _, _, r in policies)


def test_graph_permissions_are_optional_and_use_the_graph_extension(main_bicep: Bicep, module_of: Any) -> None:
    name, declaration, graph = module_of("main.bicep", "app/graph-app-roles.bicep")
    assert condition(declaration) == "grantGraphPermissions"
    assert main_bicep.parameters["grantGraphPermissions"]["default"] is False
    assert "microsoftGraphV1" in graph.tree.get("extensions", {})
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    reference = config["extensions"]["microsoftGraphV1"]
    assert reference.startswith("br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:")
    assert graph.var("grantedPermissions") == ["Calendars.Read", "OnlineMeetings.ReadWrite.All"]
    (grant,) = graph.resources_of_type("Microsoft.Graph/appRoleAssignedTo").values()
    assert body(grant)["principalId"] == "principalId"
    graph_sp = body(graph.resources["microsoftGraph"])
    assert graph_sp["appId"] == "microsoftGraphAppId"
    assert graph.var("microsoftGraphAppId") == "00000003-0000-0000-c000-000000000000"
    assert body(declaration)["params"]["principalId"] == {
        "operator": {
            "type": "property_accessor",
            "operands": {
                "operand_1": "functionIdentity",
                "operand_2": {
                    "operator": {
                        "type": "property_accessor",
                        "operands": {"operand_1": "outputs", "operand_2": "principalId"},
                    }
                },
            },
        }
    }, f"{name} must grant the function app's identity"


def test_azure_yaml_declares_the_python_function_service_and_the_hook() -> None:
    text = (ROOT / "azure.yaml").read_text()
    service = re.search(r"^services:\n  api:\n((?:    .*\n)+)", text, re.MULTILINE)
    assert service, "azure.yaml must declare service api"
    fields = dict(re.findall(r"^    (\w+): (\S+)$", service.group(1), re.MULTILINE))
    assert fields == {"project": ".", "language": "python", "host": "function"}
    hooks = re.findall(r"run: (\S+)", text)
    assert "./infra/hooks/postprovision.sh" in hooks
    assert "./infra/hooks/prepackage.sh" in hooks  # the compiled fold (shared/native.py)
    for hook in hooks:
        assert (ROOT / hook).is_file(), hook


STRINGS = (
    "var a = '${abbrs.webSitesFunctions}${resourceToken}'",
    "var b = '${queue}-poison'",
    "var c = '${environment().authentication.loginEndpoint}common'",
    "var d = '${contains(names, 'x') ? 'y' : 'z'}-${i}'",
    "var e = 'it\\'s'",
    "var f = '''\nmulti ${not} interpolated\n'''",
    "var g = '${names[0]}/${toLower('A${b}')}'",
    "var h = '${ {a: 1}.a }'",
    "var i = [for x in y: '${x.name}-${x.id}']",
)


def test_the_fast_string_terminal_parses_as_pycep_does(bicep: dict[str, Bicep], parser: Any) -> None:
    """infra_model.bicep_parser changes one terminal of pycep's grammar (its recursion) to parse main.bicep in ~1 s
    instead of ~60 s: on strings of every shape and on every file but main.bicep (the slow one; it agreed when the
    change was made) pycep's own parser gives the same tree."""
    from pycep import BicepParser

    assert isinstance(parser, BicepParser)
    pycep = BicepParser()
    for text in STRINGS:
        assert parser.parse(text=text + "\n") == pycep.parse(text=text + "\n"), text
    for name, parsed in bicep.items():
        if name != "main.bicep":
            assert parsed.tree == pycep.parse(text=parsed.text), name
