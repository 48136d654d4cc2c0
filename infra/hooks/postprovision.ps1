# azd postprovision hook (Windows twin of postprovision.sh): writes local.settings.json from the azd environment
# and prints the Microsoft Graph and Teams steps Bicep cannot do.
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
