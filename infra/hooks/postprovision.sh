#!/bin/sh
# azd postprovision hook: run after `azd provision` / `azd up` with the azd environment's values in the
# environment. 1) writes local.settings.json so `func start` runs locally against the Azure resources with your
# own sign-in (identity-based settings, no keys); 2) creates the Device Provisioning Service's enrollment groups,
# which are DPS data-plane objects ARM cannot create (docs/stamps.md); 3) prints the steps Bicep cannot do: assigning the API's app
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

# ---- Device Provisioning Service: enrollment groups (data plane: ARM cannot create them) ----
# Both groups use the custom allocation policy: DPS asks the function app's /api/provisioning/allocate which hub a
# car goes to (ARM cannot set a webhook either). Runs as you (az login) with Entra ID (--auth-type login): the
# deployment gave you Device Provisioning Service Data Contributor; DPS has no shared access key to use.
# DPS authenticates to the webhook with a function key in its URL, the one credential it supports: a key of its
# own ("dps") on the allocation function only (not a host key), created by the host, read here and written into
# the enrollment groups, never printed. Rotate it: az functionapp function keys delete ... --key-name dps, rerun.
# Optional azd values: DPS_DEVELOPMENT_GROUP ("none" skips the symmetric-key group for development and test fleets;
# its name is development-fleet, the one the app derives development keys from: shared/provisioning/enrollment.py), DPS_BRAND_CA_CERTIFICATE (PEM file of the brand's intermediate CA, public
# part only), DPS_BRAND_CA_NAME (default brand-intermediate-ca), DPS_X509_GROUP (default brand-x509).
optional() { azd env get-value "$1" 2>/dev/null || true; }
dps_name=$(azd env get-value DPS_NAME)
resource_group=$(azd env get-value AZURE_RESOURCE_GROUP)
id_scope=$(azd env get-value DPS_ID_SCOPE)
app_name=$(azd env get-value AZURE_FUNCTION_NAME)
allocate_url="$(azd env get-value AZURE_FUNCTION_URL)/api/provisioning/allocate"
dev_group=development-fleet
[ "$(optional DPS_DEVELOPMENT_GROUP)" = none ] && dev_group=none
brand_ca=$(optional DPS_BRAND_CA_CERTIFICATE)
ca_name=$(optional DPS_BRAND_CA_NAME)
ca_name=${ca_name:-brand-intermediate-ca}
x509_group=$(optional DPS_X509_GROUP)
x509_group=${x509_group:-brand-x509}
allocate_function=provisioning_allocate
# The request/response shapes of the custom allocation webhook the allocation function implements.
webhook_api_version=2021-10-01
dps_args="--dps-name $dps_name --resource-group $resource_group"
key_args="--resource-group $resource_group --name $app_name --function-name $allocate_function"
allocation=""

echo
echo "== Device Provisioning Service ${dps_name} (ID scope ${id_scope}; cars use global.azure-devices-provisioning.net)"
echo "Custom allocation webhook of every enrollment group: ${allocate_url} (with the allocation function's key)"

# The allocation function's own key for DPS; fails while the function is not deployed.
allocation_key() {
  # shellcheck disable=SC2086
  key=$(az functionapp function keys list $key_args --query dps -o tsv 2>/dev/null) || return 1
  if [ -z "$key" ]; then
    # shellcheck disable=SC2086
    key=$(az functionapp function keys set $key_args --key-name dps --query value -o tsv 2>/dev/null) || return 1
  fi
  [ -n "$key" ] && printf '%s' "$key"
}

# Create the enrollment group, or update its allocation when it exists (a second run changes nothing else).
upsert_group() {
  group=$1
  shift
  if [ -z "$allocation" ]; then
    echo "Skipped enrollment group ${group}: the allocation function is not deployed yet (see above)."
    return 0
  fi
  # shellcheck disable=SC2086
  if az iot dps enrollment-group show $dps_args --enrollment-id "$group" --auth-type login >/dev/null 2>&1; then
    az iot dps enrollment-group update $dps_args --enrollment-id "$group" --auth-type login $allocation --output none
    echo "Updated enrollment group ${group}."
  else
    az iot dps enrollment-group create $dps_args --enrollment-id "$group" --auth-type login "$@" $allocation --output none
    echo "Created enrollment group ${group}."
  fi
}

if ! command -v az >/dev/null 2>&1; then
  cat <<MSG
The Azure CLI is not on PATH: create the enrollment groups as docs/stamps.md shows (az extension add --name
azure-iot), each with --allocation-policy custom and the webhook above plus the allocation function's key.
MSG
else
  az extension show --name azure-iot >/dev/null 2>&1 || az extension add --name azure-iot --only-show-errors
  if key=$(allocation_key); then
    allocation="--allocation-policy custom --webhook-url ${allocate_url}?code=${key} --api-version ${webhook_api_version} --reprovision-policy reprovisionandmigratedata"
  else
    cat <<MSG
The allocation function is not deployed yet (azd up provisions before it deploys, and DPS's key for it exists only
then): the postdeploy hook (azure.yaml) runs this again after the deployment and creates the enrollment groups
(or run: azd hooks run postprovision).
MSG
  fi
  if [ "$dev_group" != "none" ]; then
    # Symmetric-key group attestation: each car's key is HMAC-SHA256(group key, registration id), derived by the
    # API in development mode (PROVISIONING_DEVELOPMENT_KEYS) or by the test rig; the group key stays in DPS.
    upsert_group "$dev_group" --attestation-type symmetrickey
  fi
  if [ -z "$brand_ca" ]; then
    cat <<MSG
No brand CA yet: for X.509 cars, put the PUBLIC certificate of the brand's intermediate CA in a file and run
  azd env set DPS_BRAND_CA_CERTIFICATE /path/to/brand-intermediate-ca.pem && azd hooks run postprovision
MSG
  else
    # shellcheck disable=SC2086
    if ! az iot dps certificate show $dps_args --certificate-name "$ca_name" >/dev/null 2>&1; then
      az iot dps certificate create $dps_args --certificate-name "$ca_name" --path "$brand_ca" --output none
      echo "Uploaded ${brand_ca} to DPS as ${ca_name} (not verified yet)."
    fi
    # shellcheck disable=SC2086
    verified=$(az iot dps certificate show $dps_args --certificate-name "$ca_name" --query properties.isVerified -o tsv)
    if [ "$verified" = "true" ]; then
      upsert_group "$x509_group" --ca-name "$ca_name"
    else
      # Proof of possession: DPS hands out a code; whoever holds the CA's private key (the brand's PKI, never
      # this machine) signs a certificate whose subject CN is that code, and DPS checks it against the CA.
      # shellcheck disable=SC2086
      etag=$(az iot dps certificate show $dps_args --certificate-name "$ca_name" --query etag -o tsv)
      # shellcheck disable=SC2086
      verification_code=$(az iot dps certificate generate-verification-code $dps_args --certificate-name "$ca_name" --etag "$etag" --query properties.verificationCode -o tsv)
      cat <<MSG
The brand CA ${ca_name} awaits proof of possession. Where its private key lives, sign a certificate for the code:
  openssl req -new -newkey rsa:2048 -nodes -keyout verification.key -subj "/CN=${verification_code}" -out verification.csr
  openssl x509 -req -in verification.csr -CA brand-intermediate-ca.pem -CAkey brand-intermediate-ca.key \\
    -CAcreateserial -days 1 -sha256 -out verification.pem
then, here:
  az iot dps certificate verify ${dps_args} --certificate-name ${ca_name} --path verification.pem \\
    --etag \$(az iot dps certificate show ${dps_args} --certificate-name ${ca_name} --query etag -o tsv)
  azd hooks run postprovision     # creates the X.509 enrollment group ${x509_group} now that the CA is verified
MSG
    fi
  fi
fi

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
