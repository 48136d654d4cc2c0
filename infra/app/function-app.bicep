metadata description = 'Flex Consumption plan and the Python function app, running as its user-assigned identity with identity-based connections only.'

@description('Required. Name of the function app.')
param name string

@description('Required. Name of the Flex Consumption plan.')
param planName string

@description('Required. Azure region of the plan and the app.')
param location string

@description('Optional. Tags of the plan and the app (the app also gets azd-service-name). Defaults to {}.')
param tags object = {}

@description('Optional. azd service name in azure.yaml, written to the azd-service-name tag azd deploys by. Defaults to api.')
param serviceName string = 'api'

@description('Required. Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Required. Client id of that identity.')
param identityClientId string

@description('Required. Blob endpoint of the storage account for the host (AzureWebJobsStorage) and the deployment package, e.g. https://<account>.blob.core.windows.net/.')
param storageBlobEndpoint string

@description('Required. Queue endpoint of the same storage account.')
param storageQueueEndpoint string

@description('Required. Blob endpoint of the analytics lake\'s ADLS Gen2 account (LAKE_BLOB_SERVICE_URI).')
param lakeBlobEndpoint string

@description('Required. Blob container that holds the deployment package.')
param deploymentContainerName string

@description('Required. Application Insights connection string.')
param applicationInsightsConnectionString string

@description('Required. Cosmos DB account endpoint.')
param cosmosEndpoint string

@description('Required. Cosmos DB database name.')
param cosmosDatabaseName string

@description('Required. Event Hubs fully qualified namespace, e.g. <name>.servicebus.windows.net.')
param eventHubsFullyQualifiedNamespace string

@description('Required. IoT Hub host name, e.g. <hub>.azure-devices.net (replies and twin patches to cars).')
param iotHubHostName string

@description('Required. The IoT Hub stamps cars may be assigned to, each { hostName: \'<hub>.azure-devices.net\', region: \'<region label>\' } (IOTHUB_STAMPS, read by the allocation function and the multi-hub gateway).')
@minLength(1)
param iotHubStamps array

@description('Required. ID scope of the Device Provisioning Service.')
param dpsIdScope string

@description('Required. Service endpoint of the Device Provisioning Service, e.g. <dps>.azure-devices-provisioning.net.')
param dpsHostName string

@description('Required. MAPS_BASE_URL: the Azure Maps endpoint (https://atlas.microsoft.com or its eu / us geography).')
param mapsBaseUrl string

@description('Required. MAPS_CLIENT_ID: the Azure Maps account\'s uniqueId (x-ms-client-id).')
param mapsClientId string

@description('Optional. Whether registering a symmetric-key car answers its development device key (PROVISIONING_DEVELOPMENT_KEYS; development and test fleets only). Defaults to false.')
param provisioningDevelopmentKeys bool = false

@description('Optional. Public https URL of the graph_notifications function for Microsoft Graph change notifications; empty turns webhooks off (the calendar timer still syncs). Defaults to \'\'.')
param graphNotificationUrl string = ''

@description('Required. Application (client) id of the API\'s app registration: the audience of the tokens the API accepts and the dashboard\'s client id.')
param apiClientId string

@description('Required. Scope the dashboard asks for, e.g. api://<clientId>/Fleet.Access.')
param apiScope string

@description('Required. Comma-separated Entra tenant ids always allowed to call the API (the home tenant); brands add theirs as data.')
param allowedTenantIds string

@description('Required. Versionless URI of the Key Vault key that wraps the data keys of drivers\' token caches (TOKEN_KEY_ID), e.g. https://<vault>.vault.azure.net/keys/token-key.')
param tokenKeyId string

@description('Required. Client id of the public client app registration cars sign drivers in with (SIGNIN_CLIENT_ID); empty turns the car sign-in off.')
param signinClientId string

@description('Required. Authority of the car sign-in (SIGNIN_AUTHORITY), e.g. https://login.microsoftonline.com/common.')
param signinAuthority string

@description('Optional. Most instances the app scales out to. Defaults to 100.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Optional. Memory of each instance in MB. Defaults to 2048.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Optional. Partitions of the telemetry hub (main.bicep telemetryPartitionCount): the working set the vehicle cache is sized for. Defaults to 4.')
@minValue(1)
param telemetryPartitionCount int = 4

// Settings that hold in Azure and, unchanged, in local.settings.json: endpoints and names, no credential.
// Values come from parameters only: the appSettings loop below needs them known when the deployment starts.
// Every name the code reads is declared in shared/settings.py (tests/infra checks both ways); values of settings
// with a code default repeat that default so the portal shows the effective configuration.
var sharedSettings = {
  AzureWebJobsStorage__blobServiceUri: storageBlobEndpoint
  AzureWebJobsStorage__queueServiceUri: storageQueueEndpoint
  COSMOS_ENDPOINT: cosmosEndpoint
  COSMOS_DATABASE: cosmosDatabaseName
  EVENTHUB__fullyQualifiedNamespace: eventHubsFullyQualifiedNamespace
  TELEMETRY_EVENTHUB: 'telemetry'
  REQUESTS_EVENTHUB: 'requests'
  UNROUTED_EVENTHUB: 'unrouted'
  IOTHUB_HOSTNAME: iotHubHostName
  // Device provisioning (issue 15): the stamps and the DPS module's outputs (docs/stamps.md).
  IOTHUB_STAMPS: string(iotHubStamps)
  DPS_ID_SCOPE: dpsIdScope
  DPS_GLOBAL_ENDPOINT: 'global.azure-devices-provisioning.net'
  DPS_HOSTNAME: dpsHostName
  PROVISIONING_DEVELOPMENT_KEYS: provisioningDevelopmentKeys ? 'true' : 'false'
  LOW_BATTERY_PERCENT: '15'
  LOW_FUEL_PERCENT: '10'
  MAX_CLOCK_SKEW_SECONDS: '300'
  MOVING_SPEED_KMH: '5'
  GRAPH_BASE_URL: '${environment().graph}v1.0'
  GRAPH_MAX_RETRIES: '3'
  GRAPH_NOTIFICATION_URL: graphNotificationUrl
  GRAPH_SUBSCRIPTION_RENEW_SCHEDULE: '0 20 * * * *'
  GRAPH_SUBSCRIPTION_RENEW_BEFORE_MINUTES: '1440'
  CALENDAR_SYNC_SCHEDULE: '0 */15 * * * *'
  CALENDAR_WINDOW_PAST_MINUTES: '60'
  CALENDAR_WINDOW_DAYS: '7'
  CALENDAR_REBASELINE_MINUTES: '360'
  CALENDAR_PAGE_SIZE: '50'
  AGENDA_HOURS: '24'
  AGENDA_MAX_BYTES: '8192'
  // Calendar-aware driving (issue 17): Azure Maps with the managed identity, and the per-car budget of route calls.
  MAPS_BASE_URL: mapsBaseUrl
  MAPS_CLIENT_ID: mapsClientId
  MAPS_MAX_RETRIES: '2'
  TRAVEL_ROUTES_PER_CAR_PER_HOUR: '12'
  TRAVEL_RECOMPUTE_KM: '2'
  TRAVEL_MAX_EVENTS: '3'
  TRAVEL_PARKING_MINUTES: '5'
  // Platform-wide defaults; a brand's configuration (tenancy container) overrides them for its cars.
  TELEMETRY_RETENTION_DAYS: '30'
  AUDIT_RETENTION_DAYS: '400'
  // Empty: the legal basis of each data category is the catalogue's (shared/privacy/categories.json, docs/privacy.md).
  DATA_CATEGORY_BASES: ''
  FEATURE_CALENDAR: 'true'
  FEATURE_TEAMS: 'true'
  FEATURE_LATE_MESSAGES: 'false'
  COMMAND_CONNECT_TIMEOUT_SECONDS: '5'
  COMMAND_RESPONSE_TIMEOUT_SECONDS: '20'
  COMMANDS_PER_VEHICLE_PER_MINUTE: '10'
  COMMANDS_PER_CALLER_PER_MINUTE: '60'
  COMMAND_SWEEP_SCHEDULE: '*/30 * * * * *'
  // Cloud-controlled collection (issue 16): the Edge module whose twin carries the collection policy.
  EDGE_MODULE_ID: 'carlink'
  COLLECTION_PUSH_PAGE: '500'
  // The analytics lake (issue 18, docs/analytics.md): its own account, the export timer every minute.
  LAKE_CONTAINER: 'lake'
  LAKE_BLOB_SERVICE_URI: lakeBlobEndpoint
  LAKE_EXPORT_SCHEDULE: '0 */1 * * * *'
  // The ingestion backlog timer (issue 20, docs/operations.md): each partition's distance behind its checkpoint.
  INGEST_BACKLOG_SCHEDULE: '0 */1 * * * *'
  // The vehicle cache of an ingestion instance (issue 19, docs/performance.md "Cars per instance"): its memory, and
  // the working set it is sized for (the telemetry hub's partitions; cars per partition). A quarter of the instance's
  // memory, as estimated: the estimate may count other message shapes ~1.7x low (docs/performance.md).
  VEHICLE_CACHE_MB: string(instanceMemoryMB / 4)
  TELEMETRY_COMPILED: 'true'
  TELEMETRY_PARTITION_COUNT: string(telemetryPartitionCount)
  TELEMETRY_CARS_PER_PARTITION: '0'
  // The cost meter's brand history (issue 19, docs/cost.md): each brand's day just closed, once a day.
  COST_ROLLUP_SCHEDULE: '0 10 0 * * *'
  // The brand cost route answers from a snapshot younger than this, else sums the brand's cars again (paged).
  COST_SNAPSHOT_MAX_AGE_SECONDS: '900'
  // Bearer tokens from Entra ID (v2). The common document serves every tenant; the app substitutes the token's tid
  // in the issuer and accepts only allowed tenants. No function key: the HTTP routes are anonymous at the host and
  // the app checks the token itself.
  AUTH_OPENID_CONFIG_URL: '${environment().authentication.loginEndpoint}common/v2.0/.well-known/openid-configuration'
  AUTH_AUDIENCE: '${apiClientId},api://${apiClientId}'
  AUTH_ALLOWED_TENANTS: allowedTenantIds
  AUTH_CLOCK_SKEW_SECONDS: '60'
  AUTH_JWKS_REFRESH_MINUTES: '1440'
  // The dashboard is a SPA redirect URI of the same registration and asks for the API's delegated scope.
  AUTH_DASHBOARD_CLIENT_ID: apiClientId
  AUTH_DASHBOARD_AUTHORITY: '${environment().authentication.loginEndpoint}organizations'
  AUTH_API_SCOPE: apiScope
  // Drivers sign in from the car (device code flow, shared/accounts); their token caches are sealed under this key.
  SIGNIN_CLIENT_ID: signinClientId
  SIGNIN_AUTHORITY: signinAuthority
  TOKEN_KEY_ID: tokenKeyId
}

// Settings that only make sense in Azure: which managed identity to use. Locally the host and the SDKs fall back
// to the developer's own sign-in (az login / azd auth login).
var azureOnlySettings = {
  AZURE_CLIENT_ID: identityClientId
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  EVENTHUB__credential: 'managedidentity'
  EVENTHUB__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption depends on the region and needs always-ready instances (cost at idle); off for the default
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    // checkov:skip=CKV_AZURE_222: public endpoint on purpose: Microsoft Graph delivers change notifications to the app's webhook from the internet; the app has no VNet
    // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; always-ready instances would cost money at idle
    // checkov:skip=CKV_AZURE_17: no client certificates: Microsoft Graph change notifications cannot present one
    // checkov:skip=CKV_AZURE_213: no App Service health check on Flex Consumption; the host's own liveness and Application Insights cover it
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // Every app setting (Flex Consumption: no FUNCTIONS_WORKER_RUNTIME, no WEBSITE_RUN_FROM_PACKAGE).
      appSettings: [for setting in items(union(sharedSettings, azureOnlySettings)): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11' // pyproject.toml: requires-python >=3.11,<3.12
      }
    }
  }
}

// No FTP or SCM basic-auth publishing: azd deploys with Entra ID.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

@description('Name of the function app.')
output name string = functionApp.name

@description('Default host name of the function app, e.g. <name>.azurewebsites.net.')
output defaultHostName string = functionApp.properties.defaultHostName

@description('The app settings that also hold locally (the Values of local.settings.json, plus the worker runtime Core Tools needs).')
output localSettings object = union(sharedSettings, {
  FUNCTIONS_WORKER_RUNTIME: 'python'
})
