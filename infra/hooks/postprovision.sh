#!/bin/sh
# azd postprovision hook: run after `azd provision` / `azd up` with the azd environment's values in the
# environment. 1) writes local.settings.json so `func start` runs locally against the Azure resources with your
# own sign-in (identity-based settings, no keys); 2) prints the steps Bicep cannot do: assigning the API's app
# roles, getting a token, onboarding a customer tenant (admin consent), Microsoft Graph permissions (when not
# granted by the deployment) and the Teams application access policy. The API takes Entra ID bearer tokens only:
# there is no function key to hand out, and this hook prints none.
set -eu

cd "$(dirname "$0")/../.."

# LOCAL_SETTINGS is an object output of infra/main.bicep: the app settings that hold locally, as JSON.
local_settings=$(azd env get-value LOCAL_SETTINGS)
if [ -f local.settings.json ]; then
  cp local.settings.json local.settings.json.bak
  echo "Saved the previous local.settings.json as local.settings.json.bak"
fi
printf '{\n  "IsEncrypted": false,\n  "Values": %s\n}\n' "$local_settings" > local.settings.json
echo "Wrote local.settings.json (no secrets: the host and the SDKs use your az login / azd auth login identity)."

client_id=$(azd env get-value AZURE_FUNCTION_IDENTITY_CLIENT_ID)
principal_id=$(azd env get-value AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID)
graph_granted=$(azd env get-value GRAPH_PERMISSIONS_GRANTED)
env_name=$(azd env get-value AZURE_ENV_NAME)
policy="automotive-cloud-${env_name}"

echo
echo "== Microsoft Graph permissions of the function app identity (client id ${client_id})"
if [ "$graph_granted" = "true" ]; then
  echo "Granted by this deployment: Calendars.Read, OnlineMeetings.ReadWrite.All."
else
  cat <<MSG
Not granted (GRANT_GRAPH_PERMISSIONS is not true). Either a Privileged Role Administrator runs
  azd env set GRANT_GRAPH_PERMISSIONS true && azd provision
or grants the application permissions Calendars.Read and OnlineMeetings.ReadWrite.All of Microsoft Graph to
the service principal ${principal_id} (Microsoft Entra admin center > Enterprise applications, or
New-MgServicePrincipalAppRoleAssignment in Microsoft Graph PowerShell).
MSG
fi

api_client_id=$(azd env get-value API_CLIENT_ID)
api_sp_id=$(azd env get-value API_SERVICE_PRINCIPAL_ID)
api_scope=$(azd env get-value API_SCOPE)
admin_assigned=$(azd env get-value API_PLATFORM_ADMIN_ASSIGNED)
dashboard_url=$(azd env get-value DASHBOARD_URL)
api_base=${dashboard_url%dashboard/}

echo
echo "== Sign-in: the API's app registration (client id ${api_client_id})"
echo "Created by this deployment: app roles Platform.Admin, Brand.Admin, Fleet.Operator, Fleet.Reader, Driver;"
echo "scope ${api_scope}; identifier URI api://${api_client_id}; dashboard ${dashboard_url}"
if [ "$admin_assigned" = "true" ]; then
  echo "You (AZURE_PRINCIPAL_ID) hold Platform.Admin: sign in to the dashboard, create brands and memberships."
else
  echo "Nobody holds Platform.Admin yet: assign it as below."
fi
cat <<MSG

Assign an app role to a user, group or app of this tenant: Entra admin center > Enterprise applications > the
API > Users and groups, or with the az CLI (OBJECT_ID: the user's, group's or app's object id):

  ROLE=Fleet.Operator   # or Platform.Admin, Brand.Admin, Fleet.Reader, Driver
  role_id=\$(az ad sp show --id ${api_client_id} --query "appRoles[?value=='\$ROLE'].id" -o tsv)
  az rest --method post --url "https://graph.microsoft.com/v1.0/servicePrincipals/${api_sp_id}/appRoleAssignedTo" \\
    --body "{\"principalId\": \"OBJECT_ID\", \"resourceId\": \"${api_sp_id}\", \"appRoleId\": \"\$role_id\"}"

A role applies only where a membership scopes it (brand, fleet, car); admins manage memberships through the API.
Users get the role in their next token (sign in again).

Get a token and call the API (the Azure CLI is pre-authorized for ${api_scope}):

  token=\$(az account get-access-token --resource api://${api_client_id} --query accessToken -o tsv)
  # or, the same as a v2 scope:
  token=\$(az account get-access-token --scope ${api_scope} --query accessToken -o tsv)
  curl -H "Authorization: Bearer \$token" ${api_base}me

== Onboarding a customer tenant (a company fleet whose drivers sign in with their own Entra ID)
1. A Global Administrator (or Privileged Role Administrator) of the customer tenant opens
     https://login.microsoftonline.com/CUSTOMER_TENANT_ID/adminconsent?client_id=${api_client_id}
   and consents: the API's service principal is created there, with Calendars.Read and
   OnlineMeetings.ReadWrite.All of Microsoft Graph (the app reaches Graph there through its federated credential,
   no secret). The customer's admin then assigns the app roles to their users in their own tenant.
2. A Platform admin adds the tenant id to the brand: PUT /api/brands/{brandId} with "tenants": ["CUSTOMER_TENANT_ID"].
3. Optional, recommended: restrict Calendars.Read to the consented drivers with Exchange RBAC for Applications
   (docs/identity.md, "Deployment: the app registration").
MSG

cat <<MSG

== Teams application access policy (cannot be set by Bicep; run once as a Teams administrator)
Creating online meetings for a user with application permissions also needs this policy. In PowerShell:

  Install-Module MicrosoftTeams -Scope CurrentUser   # once
  Connect-MicrosoftTeams
  New-CsApplicationAccessPolicy -Identity "${policy}" -AppIds "${client_id}" -Description "automotive cloud ${env_name}: Teams meetings for drivers"
  # every user of the tenant:
  Grant-CsApplicationAccessPolicy -PolicyName "${policy}" -Global
  # or only some drivers:
  Grant-CsApplicationAccessPolicy -PolicyName "${policy}" -Identity "driver@contoso.com"

Changes can take up to 30 minutes to apply.
MSG
