# azd postprovision hook (Windows twin of postprovision.sh): writes local.settings.json from the azd environment,
# creates the Device Provisioning Service's enrollment groups (DPS data plane: ARM cannot) and prints the steps Bicep cannot do: app role assignments, tokens, customer-tenant onboarding, Microsoft Graph and
# Teams. The API takes Entra ID bearer tokens only: there is no function key to hand out, and this hook prints none.
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..' '..')

# LOCAL_SETTINGS is an object output of infra/main.bicep: the app settings that hold locally, as JSON.
$localSettings = azd env get-value LOCAL_SETTINGS | Out-String
if (Test-Path local.settings.json) {
    Copy-Item local.settings.json local.settings.json.bak -Force
    Write-Host 'Saved the previous local.settings.json as local.settings.json.bak'
}
$document = [ordered]@{ IsEncrypted = $false; Values = ($localSettings | ConvertFrom-Json) }
$document | ConvertTo-Json -Depth 5 | Set-Content -Path local.settings.json -Encoding utf8
Write-Host 'Wrote local.settings.json (no secrets: the host and the SDKs use your az login / azd auth login identity).'

# ---- Device Provisioning Service: enrollment groups (data plane: ARM cannot create them); see postprovision.sh ----
# DPS authenticates to the webhook with a function key in its URL: a key of its own ("dps") on the allocation
# function only, read here and written into the enrollment groups, never printed.
function Get-Optional([string] $name, [string] $default) {
    $value = (azd env get-value $name 2>$null | Out-String).Trim()
    if ($LASTEXITCODE -ne 0 -or -not $value) { return $default }
    return $value
}
$dpsName = (azd env get-value DPS_NAME).Trim()
$resourceGroup = (azd env get-value AZURE_RESOURCE_GROUP).Trim()
$idScope = (azd env get-value DPS_ID_SCOPE).Trim()
$appName = (azd env get-value AZURE_FUNCTION_NAME).Trim()
$allocateUrl = "$((azd env get-value AZURE_FUNCTION_URL).Trim())/api/provisioning/allocate"
# The group's name is fixed: the app derives development keys from it (shared/provisioning/enrollment.py); 'none' skips it.
$devGroup = if ((Get-Optional 'DPS_DEVELOPMENT_GROUP' '') -eq 'none') { 'none' } else { 'development-fleet' }
$brandCa = Get-Optional 'DPS_BRAND_CA_CERTIFICATE' ''
$caName = Get-Optional 'DPS_BRAND_CA_NAME' 'brand-intermediate-ca'
$x509Group = Get-Optional 'DPS_X509_GROUP' 'brand-x509'
$dpsArgs = @('--dps-name', $dpsName, '--resource-group', $resourceGroup)
$keyArgs = @('--resource-group', $resourceGroup, '--name', $appName, '--function-name', 'provisioning_allocate')
$allocation = $null

Write-Host ''
Write-Host "== Device Provisioning Service $dpsName (ID scope $idScope; cars use global.azure-devices-provisioning.net)"
Write-Host "Custom allocation webhook of every enrollment group: $allocateUrl (with the allocation function's key)"

# The allocation function's own key for DPS; $null while the function is not deployed.
function Get-AllocationKey {
    $key = (az functionapp function keys list @keyArgs --query dps -o tsv 2>$null | Out-String).Trim()
    if ($LASTEXITCODE -ne 0) { return $null }
    if (-not $key) {
        $key = (az functionapp function keys set @keyArgs --key-name dps --query value -o tsv 2>$null | Out-String).Trim()
        if ($LASTEXITCODE -ne 0) { return $null }
    }
    if ($key) { return $key } else { return $null }
}

function Set-EnrollmentGroup([string] $group, [string[]] $attestation) {
    if (-not $allocation) {
        Write-Host "Skipped enrollment group ${group}: the allocation function is not deployed yet (see above)."
        return
    }
    az iot dps enrollment-group show @dpsArgs --enrollment-id $group --auth-type login *> $null
    if ($LASTEXITCODE -eq 0) {
        az iot dps enrollment-group update @dpsArgs --enrollment-id $group --auth-type login @allocation --output none
        Write-Host "Updated enrollment group $group."
    } else {
        az iot dps enrollment-group create @dpsArgs --enrollment-id $group --auth-type login @attestation @allocation --output none
        Write-Host "Created enrollment group $group."
    }
}

if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    Write-Host "The Azure CLI is not on PATH: create the enrollment groups as docs/stamps.md shows (az extension add --name azure-iot), each with --allocation-policy custom and the webhook above plus the allocation function's key."
} else {
    az extension show --name azure-iot *> $null
    if ($LASTEXITCODE -ne 0) { az extension add --name azure-iot --only-show-errors }
    $key = Get-AllocationKey
    if ($key) {
        $allocation = @('--allocation-policy', 'custom', '--webhook-url', "${allocateUrl}?code=$key", '--api-version', '2021-10-01', '--reprovision-policy', 'reprovisionandmigratedata')
    } else {
        Write-Host 'The allocation function is not deployed yet (azd up provisions before it deploys, and DPS''s key for it exists only then):'
        Write-Host 'the postdeploy hook (azure.yaml) runs this again after the deployment and creates the enrollment groups'
        Write-Host '(or run: azd hooks run postprovision).'
    }
    if ($devGroup -ne 'none') {
        Set-EnrollmentGroup $devGroup @('--attestation-type', 'symmetrickey')
    }
    if (-not $brandCa) {
        Write-Host 'No brand CA yet: for X.509 cars, put the PUBLIC certificate of the brand''s intermediate CA in a file and run'
        Write-Host '  azd env set DPS_BRAND_CA_CERTIFICATE C:\path\brand-intermediate-ca.pem; azd hooks run postprovision'
    } else {
        az iot dps certificate show @dpsArgs --certificate-name $caName *> $null
        if ($LASTEXITCODE -ne 0) {
            az iot dps certificate create @dpsArgs --certificate-name $caName --path $brandCa --output none
            Write-Host "Uploaded $brandCa to DPS as $caName (not verified yet)."
        }
        $verified = (az iot dps certificate show @dpsArgs --certificate-name $caName --query properties.isVerified -o tsv).Trim()
        if ($verified -eq 'true') {
            Set-EnrollmentGroup $x509Group @('--ca-name', $caName)
        } else {
            $etag = (az iot dps certificate show @dpsArgs --certificate-name $caName --query etag -o tsv).Trim()
            $verificationCode = (az iot dps certificate generate-verification-code @dpsArgs --certificate-name $caName --etag $etag --query properties.verificationCode -o tsv).Trim()
            Write-Host @"
The brand CA $caName awaits proof of possession. Where its private key lives, sign a certificate for the code:
  openssl req -new -newkey rsa:2048 -nodes -keyout verification.key -subj "/CN=$verificationCode" -out verification.csr
  openssl x509 -req -in verification.csr -CA brand-intermediate-ca.pem -CAkey brand-intermediate-ca.key -CAcreateserial -days 1 -sha256 -out verification.pem
then, here:
  az iot dps certificate verify --dps-name $dpsName --resource-group $resourceGroup --certificate-name $caName --path verification.pem --etag (az iot dps certificate show --dps-name $dpsName --resource-group $resourceGroup --certificate-name $caName --query etag -o tsv)
  azd hooks run postprovision     # creates the X.509 enrollment group $x509Group now that the CA is verified
"@
        }
    }
}

$clientId = (azd env get-value AZURE_FUNCTION_IDENTITY_CLIENT_ID).Trim()
$principalId = (azd env get-value AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID).Trim()
$graphGranted = (azd env get-value GRAPH_PERMISSIONS_GRANTED).Trim()
$envName = (azd env get-value AZURE_ENV_NAME).Trim()
$policy = "automotive-cloud-$envName"

Write-Host ''
Write-Host "== Microsoft Graph permissions of the function app identity (client id $clientId)"
if ($graphGranted -eq 'true') {
    Write-Host 'Granted by this deployment: Calendars.Read, OnlineMeetings.ReadWrite.All.'
} else {
    Write-Host @"
Not granted (GRANT_GRAPH_PERMISSIONS is not true). Either a Privileged Role Administrator runs
  azd env set GRANT_GRAPH_PERMISSIONS true; azd provision
or grants the application permissions Calendars.Read and OnlineMeetings.ReadWrite.All of Microsoft Graph to
the service principal $principalId (Microsoft Entra admin center > Enterprise applications, or
New-MgServicePrincipalAppRoleAssignment in Microsoft Graph PowerShell).
"@
}

$apiClientId = (azd env get-value API_CLIENT_ID).Trim()
$apiSpId = (azd env get-value API_SERVICE_PRINCIPAL_ID).Trim()
$apiScope = (azd env get-value API_SCOPE).Trim()
$adminAssigned = (azd env get-value API_PLATFORM_ADMIN_ASSIGNED).Trim()
$dashboardUrl = (azd env get-value DASHBOARD_URL).Trim()
$apiBase = $dashboardUrl -replace 'dashboard/$', ''

Write-Host ''
Write-Host "== Sign-in: the API's app registration (client id $apiClientId)"
Write-Host 'Created by this deployment: app roles Platform.Admin, Brand.Admin, Fleet.Operator, Fleet.Reader, Driver;'
Write-Host "scope $apiScope; identifier URI api://$apiClientId; dashboard $dashboardUrl"
if ($adminAssigned -eq 'true') {
    Write-Host 'You (AZURE_PRINCIPAL_ID) hold Platform.Admin: sign in to the dashboard, create brands and memberships.'
} else {
    Write-Host 'Nobody holds Platform.Admin yet: assign it as below.'
}
Write-Host @"

Assign an app role to a user, group or app of this tenant: Entra admin center > Enterprise applications > the
API > Users and groups, or with Microsoft Graph PowerShell (OBJECT_ID: the user's, group's or app's object id):

  Connect-MgGraph -Scopes AppRoleAssignment.ReadWrite.All, Application.Read.All
  `$role = 'Fleet.Operator'   # or Platform.Admin, Brand.Admin, Fleet.Reader, Driver
  `$roleId = ((Get-MgServicePrincipal -ServicePrincipalId $apiSpId).AppRoles | Where-Object Value -eq `$role).Id
  New-MgServicePrincipalAppRoleAssignedTo -ServicePrincipalId $apiSpId -PrincipalId OBJECT_ID -ResourceId $apiSpId -AppRoleId `$roleId

A role applies only where a membership scopes it (brand, fleet, car); admins manage memberships through the API.
Users get the role in their next token (sign in again).

Get a token and call the API (the Azure CLI is pre-authorized for $apiScope):

  `$token = az account get-access-token --resource api://$apiClientId --query accessToken -o tsv
  # or, the same as a v2 scope:
  `$token = az account get-access-token --scope $apiScope --query accessToken -o tsv
  Invoke-RestMethod -Headers @{ Authorization = "Bearer `$token" } ${apiBase}me

== Onboarding a customer tenant (a company fleet whose drivers sign in with their own Entra ID)
1. A Global Administrator (or Privileged Role Administrator) of the customer tenant opens
     https://login.microsoftonline.com/CUSTOMER_TENANT_ID/adminconsent?client_id=$apiClientId
   and consents: the API's service principal is created there, with Calendars.Read and
   OnlineMeetings.ReadWrite.All of Microsoft Graph (the app reaches Graph there through its federated credential,
   no secret). The customer's admin then assigns the app roles to their users in their own tenant.
2. A Platform admin adds the tenant id to the brand: PUT /api/brands/{brandId} with "tenants": ["CUSTOMER_TENANT_ID"].
3. Optional, recommended: restrict Calendars.Read to the consented drivers with Exchange RBAC for Applications
   (docs/identity.md, "Deployment: the app registration").
"@

Write-Host @"

== Teams application access policy (cannot be set by Bicep; run once as a Teams administrator)
Creating online meetings for a user with application permissions also needs this policy:

  Install-Module MicrosoftTeams -Scope CurrentUser   # once
  Connect-MicrosoftTeams
  New-CsApplicationAccessPolicy -Identity "$policy" -AppIds "$clientId" -Description "automotive cloud ${envName}: Teams meetings for drivers"
  # every user of the tenant:
  Grant-CsApplicationAccessPolicy -PolicyName "$policy" -Global
  # or only some drivers:
  Grant-CsApplicationAccessPolicy -PolicyName "$policy" -Identity "driver@contoso.com"

Changes can take up to 30 minutes to apply.
"@
