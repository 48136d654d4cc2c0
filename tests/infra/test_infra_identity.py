"""The API's Entra app registration and the function app's token settings (issue 11).

The registration is declared with the Microsoft Graph Bicep extension in two steps: app/api-registration.bicep
(roles, scope, federated credential, service principal, Platform.Admin for the deployer) and
app/api-registration-uris.bicep (api://<appId> and the dashboard's redirect URIs, known only after the first step
and the function app exist). Roles and scopes come from shared/auth/app_roles.json by loadJsonContent, so the
tests check the references and the field mapping, and the JSON itself."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from infra_model import INFRA, ROOT, Bicep, accessor, body, condition, function, loop_source

REGISTRATION = "app/api-registration.bicep"
URIS = "app/api-registration-uris.bicep"
APP_ROLES_JSON = ROOT / "shared" / "auth" / "app_roles.json"
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
AUTH_SETTINGS = {
    "AUTH_OPENID_CONFIG_URL",
    "AUTH_AUDIENCE",
    "AUTH_ALLOWED_TENANTS",
    "AUTH_DASHBOARD_CLIENT_ID",
    "AUTH_DASHBOARD_AUTHORITY",
    "AUTH_API_SCOPE",
}


def app_roles_json() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(APP_ROLES_JSON.read_text(encoding="utf-8"))
    return loaded


def the_application(b: Bicep) -> dict[str, Any]:
    (app,) = [r for r in b.resources_of_type("Microsoft.Graph/applications").values() if not r["existing"]]
    return body(app)


def loop_fields(value: dict[str, Any]) -> dict[str, Any]:
    """{field: accessor or literal} of the object a `[for item in ...: {...}]` builds."""
    return {k: (accessor(v) if isinstance(v, dict) else v) for k, v in body(value).items()}


@pytest.fixture(scope="module")
def registration(bicep: dict[str, Bicep]) -> Bicep:
    return bicep[REGISTRATION]


@pytest.fixture(scope="module")
def uris(bicep: dict[str, Bicep]) -> Bicep:
    return bicep[URIS]


# ---- the JSON the roles come from ----


def test_app_roles_json_has_unique_guid_ids_and_values() -> None:
    definition = app_roles_json()
    entries = definition["appRoles"] + definition["scopes"]
    ids = [e["id"] for e in entries]
    assert all(GUID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids), "a role or scope id is used twice"
    values = [r["value"] for r in definition["appRoles"]]
    assert len(set(values)) == len(values)
    assert {r["value"] for r in definition["appRoles"]} == {
        "Platform.Admin",
        "Brand.Admin",
        "Fleet.Operator",
        "Fleet.Reader",
        "Driver",
    }
    assert [s["value"] for s in definition["scopes"]] == ["Fleet.Access"]
    for role in definition["appRoles"]:
        assert set(role["allowedMemberTypes"]) <= {"User", "Application"}, role["value"]
        assert role["displayName"], role["value"]
        assert role["description"], role["value"]


# ---- step 1: the registration ----


def test_roles_and_scope_are_loaded_from_the_shared_json(registration: Bicep) -> None:
    call = function(registration.var("definition"), "load_json_content")
    assert call, "api-registration.bicep: var definition must be loadJsonContent(...)"
    assert (registration.path.parent / call["file_path"]).resolve() == APP_ROLES_JSON

    app = the_application(registration)
    assert app["appRoles"] == "appRoles"
    roles = registration.variables["appRoles"]["value"]
    assert accessor(loop_source(roles)) == "definition.appRoles", "one Entra app role per JSON entry"
    fields = loop_fields(roles)
    for name in ("id", "value", "displayName", "description", "allowedMemberTypes"):
        assert fields[name] == f"role.{name}", f"appRoles.{name} must come from the JSON"
    assert fields["isEnabled"] is True
    assert "scope" not in fields, "the JSON's membership scope is not an Entra property"

    assert app["api"]["oauth2PermissionScopes"] == "permissionScopes"
    scopes = registration.variables["permissionScopes"]["value"]
    assert accessor(loop_source(scopes)) == "definition.scopes"
    fields = loop_fields(scopes)
    for name in (
        "id",
        "value",
        "adminConsentDisplayName",
        "adminConsentDescription",
        "userConsentDisplayName",
        "userConsentDescription",
    ):
        assert fields[name] == f"scope.{name}", f"oauth2PermissionScopes.{name} must come from the JSON"
    assert fields["isEnabled"] is True
    assert fields["type"] in {"User", "Admin"}


def test_the_registration_is_multi_tenant_with_v2_tokens(registration: Bicep) -> None:
    app = the_application(registration)
    assert app["signInAudience"] == "AzureADMultipleOrgs"
    assert app["api"]["requestedAccessTokenVersion"] == 2
    assert "passwordCredentials" not in app, "no secret"
    assert "keyCredentials" not in app, "no certificate"


def test_customer_tenants_consent_to_the_graph_permissions_the_app_uses(
    registration: Bicep, bicep: dict[str, Bicep]
) -> None:
    (access,) = the_application(registration)["requiredResourceAccess"]
    assert access["resourceAppId"] == "microsoftGraphAppId"
    assert registration.var("microsoftGraphAppId") == "00000003-0000-0000-c000-000000000000"
    assert loop_source(access["resourceAccess"]) == "graphApplicationPermissions"
    assert body(access["resourceAccess"])["type"] == "Role"
    # the same application permissions the home tenant grants the function identity
    assert registration.var("graphApplicationPermissions") == bicep["app/graph-app-roles.bicep"].var(
        "grantedPermissions"
    )


def test_azure_cli_is_pre_authorized_for_the_scope_only(registration: Bicep) -> None:
    (pre,) = the_application(registration)["api"]["preAuthorizedApplications"]
    assert registration.var(pre["appId"]) == "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
    assert accessor(loop_source(pre["delegatedPermissionIds"])) == "definition.scopes"


def test_the_function_identity_is_the_apps_only_credential(
    registration: Bicep, main_bicep: Bicep, module_of: Any
) -> None:
    credentials = [
        body(r)
        for r in registration.resources.values()
        if r["type"].split("@")[0] == "Microsoft.Graph/applications/federatedIdentityCredentials"
    ]
    assert len(credentials) == 1
    (credential,) = credentials
    assert credential["audiences"] == ["api://AzureADTokenExchange"]
    assert credential["subject"] == "functionPrincipalId"
    issuer = registration.var(credential["issuer"])
    assert issuer == "${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0"
    assert credential["name"].startswith("${application.uniqueName}/")

    _, declaration, _ = module_of("main.bicep", REGISTRATION)
    params = body(declaration)["params"]
    assert accessor(params["functionPrincipalId"]) == "functionIdentity.outputs.principalId"
    assert condition(declaration) is None, "the API cannot run without its registration"


def test_the_deployer_becomes_platform_admin_when_azd_names_one(registration: Bicep, module_of: Any) -> None:
    (sp,) = [
        r for r in registration.resources_of_type("Microsoft.Graph/servicePrincipals").values() if not r["existing"]
    ]
    assert accessor(body(sp)["appId"]) == "application.appId"
    (assignment,) = registration.resources_of_type("Microsoft.Graph/appRoleAssignedTo").values()
    assert "!empty(adminPrincipalId)" in registration.text.replace(" ", "")
    assert condition(assignment) is not None
    config = body(assignment)
    assert config["principalId"] == "adminPrincipalId"
    assert accessor(config["resourceId"]) == "servicePrincipal.id"
    assert config["appRoleId"] == "platformAdminRoleId"
    assert "'Platform.Admin'" in registration.text.split("var platformAdminRoleId", 1)[1].splitlines()[0]
    assert registration.parameters["adminPrincipalId"]["default"] == ""
    _, declaration, _ = module_of("main.bicep", REGISTRATION)
    assert body(declaration)["params"]["adminPrincipalId"] == "principalId"


# ---- step 2: identifier URI and redirect URIs ----


def test_the_second_step_sets_api_appid_and_the_dashboard_redirect_uris(
    uris: Bicep, registration: Bicep, module_of: Any
) -> None:
    app = the_application(uris)
    assert app["identifierUris"] == ["api://${appId}"]
    assert app["spa"]["redirectUris"] == "redirectUris"
    assert uris.var("redirectUris") == [
        "https://${functionHostName}/api/dashboard/",
        "http://localhost:7071/api/dashboard/",
    ]
    # PATCH by uniqueName: nothing of step 1 may be declared again here (it would be overwritten twice per run),
    # and step 1 must not declare what step 2 owns (it would blank it between the two steps).
    assert set(app) == {"uniqueName", "displayName", "identifierUris", "spa"}
    assert not {"identifierUris", "spa", "web", "publicClient"} & set(the_application(registration))

    _, declaration, _ = module_of("main.bicep", URIS)
    params = {k: accessor(v) for k, v in body(declaration)["params"].items()}
    assert params == {
        "uniqueName": "apiRegistration.outputs.uniqueName",
        "displayName": "apiRegistration.outputs.displayName",
        "appId": "apiRegistration.outputs.appId",
        "functionHostName": "functionApp.outputs.defaultHostName",
    }


# ---- the function app's token settings ----


def test_the_function_app_gets_the_token_settings(
    app_settings: dict[str, Any], app_setting_vars: dict[str, dict[str, Any]], module_of: Any
) -> None:
    assert set(app_settings) >= AUTH_SETTINGS, sorted(AUTH_SETTINGS - set(app_settings))
    assert app_settings["AUTH_AUDIENCE"] == "${apiClientId},api://${apiClientId}"
    assert app_settings["AUTH_DASHBOARD_CLIENT_ID"] == "apiClientId"
    assert app_settings["AUTH_ALLOWED_TENANTS"] == "allowedTenantIds"
    assert app_settings["AUTH_API_SCOPE"] == "apiScope"
    assert app_settings["AUTH_OPENID_CONFIG_URL"].endswith("common/v2.0/.well-known/openid-configuration")
    assert app_settings["AUTH_DASHBOARD_AUTHORITY"].endswith("organizations")
    assert "AUTH_CA_BUNDLE" not in app_settings, "the local provider's CA is local only"
    # local.settings.json carries them too: a local host against Azure validates the same Entra tokens
    shared = next(values for values in app_setting_vars.values() if "COSMOS_ENDPOINT" in values)
    assert set(shared) >= AUTH_SETTINGS

    _, declaration, _ = module_of("main.bicep", "app/function-app.bicep")
    params = body(declaration)["params"]
    assert accessor(params["apiClientId"]) == "apiRegistration.outputs.appId"
    # tenant().tenantId: the home tenant; customer tenants are added per brand as data
    tenant_id = params["allowedTenantIds"]["operator"]["operands"]
    assert tenant_id == {"operand_1": {"function": {"type": "tenant"}}, "operand_2": "tenantId"}
    assert params["apiScope"] == "api://${apiRegistration.outputs.appId}/${authDefinition.scopes[0].value}"


def test_main_outputs_what_the_hook_and_the_docs_use(main_bicep: Bicep) -> None:
    outputs = main_bicep.outputs
    needed = {
        "API_CLIENT_ID",
        "API_IDENTIFIER_URI",
        "API_SCOPE",
        "API_SERVICE_PRINCIPAL_ID",
        "API_PLATFORM_ADMIN_ASSIGNED",
        "DASHBOARD_URL",
    }
    assert needed <= set(outputs), sorted(needed - set(outputs))
    assert accessor(outputs["API_CLIENT_ID"]["value"]) == "apiRegistration.outputs.appId"
    assert accessor(outputs["API_IDENTIFIER_URI"]["value"]) == "apiRegistrationUris.outputs.identifierUri"
    hook = (INFRA / "hooks" / "postprovision.sh").read_text(encoding="utf-8")
    for name in needed - {"API_IDENTIFIER_URI"}:
        assert f"azd env get-value {name}" in hook, f"the hook does not read {name}"


# ---- no function key ----


def test_nothing_in_infra_creates_or_outputs_a_function_key(bicep: dict[str, Bicep]) -> None:
    for file, b in bicep.items():
        types = {r["type"].lower() for r in b.resources.values()}
        assert not {t for t in types if t.startswith("microsoft.web/sites/host")}, f"{file} declares host keys"
        text = b.text.lower()
        for word in ("listkeys(", "functionkeys", "/host/default", "x-functions-key", "masterkey"):
            assert word not in text, f"{file} contains {word}"
        for name in b.outputs:
            assert "key" not in name.lower(), f"{file}: output {name} looks like a key"
    azure_yaml = (ROOT / "azure.yaml").read_text(encoding="utf-8").lower()
    assert "functionapp keys" not in azure_yaml
    assert "functionkeys" not in azure_yaml
