#!/bin/sh
# azd postprovision hook: run after `azd provision` / `azd up` with the azd environment's values in the
# environment. 1) writes local.settings.json so `func start` runs locally against the Azure resources with your
# own sign-in (identity-based settings, no keys); 2) prints the steps Bicep cannot do: Microsoft Graph
# permissions (when not granted by the deployment) and the Teams application access policy.
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
