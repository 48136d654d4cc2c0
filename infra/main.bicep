targetScope = 'subscription'

metadata description = 'The automotive cloud: cars provision themselves through DPS onto one of several IoT Hubs and send telemetry there, routes carry it to Event Hubs, Python functions on Flex Consumption store it in Cosmos DB. Every service-to-service call uses a managed identity and RBAC; no resource keeps a usable key.'

@description('Required. Name of the azd environment; seeds the resource token and names the resource group.')
@minLength(1)
@maxLength(64)
param environmentName string

@description('Required. Azure region for every resource. It must offer Flex Consumption, IoT Hub and Cosmos DB serverless (e.g. eastus, eastus2, westus2, northeurope, westeurope, swedencentral, uksouth, australiaeast).')
@minLength(1)
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Optional. Object id of the person or pipeline running azd (azd sets AZURE_PRINCIPAL_ID); it gets the data roles to run the app locally against these resources and the API\'s Platform.Admin app role. Empty grants nothing. Defaults to \'\'.')
param principalId string = ''

@description('Optional. Kind of principal principalId is. Defaults to User.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Optional. Grant the function app\'s identity the Microsoft Graph application permissions Calendars.Read and OnlineMeetings.ReadWrite.All. The deployer must be allowed to grant app roles (Privileged Role Administrator or Global Administrator); otherwise an admin grants them later. Defaults to false.')
param grantGraphPermissions bool = false

@description('Optional. The IoT Hubs ("stamps") cars may be assigned to, by region: one hub holds at most 1,000,000 devices, and data residency keeps a market\'s cars on hubs in its region. Each entry is { nameSuffix: string, location: string, region: string }: nameSuffix (distinct, lower-case letters and digits) is appended to the hub\'s name (iot-<token>-<suffix>; the first stamp keeps \'\' and is today\'s hub), location is its Azure region (\'\' = location), region is the label the allocation function matches a car\'s market against. Every stamp is an IoT Hub with the routes of shared/iothub_routes.json into the one Event Hubs namespace (docs/stamps.md says why), linked to the Device Provisioning Service; the first is also the default hub (IOTHUB_HOSTNAME) of cars registered without DPS. An array of plain objects, not a user-defined type: neither Bicep parser the checks use (pycep) reads those yet. Defaults to one stamp, today\'s hub: [{ nameSuffix: \'\', location: \'\', region: \'default\' }].')
@minLength(1)
@maxLength(10)
param iotHubStamps array = [
  {
    nameSuffix: ''
    location: ''
    region: 'default'
  }
]

@description('Optional. Development and test fleets: registering a symmetric-key car answers its device key, derived from the development-fleet enrollment group\'s key (PROVISIONING_DEVELOPMENT_KEYS), and the function app may read that key (a custom role of two DPS data actions; creating it needs Owner or User Access Administrator). Never in production: cars there carry certificates. Defaults to false.')
param provisioningDevelopmentKeys bool = false

@description('Optional. Units of the Device Provisioning Service (S1; each 1,000 registrations per minute). Defaults to 1.')
@minValue(1)
@maxValue(10)
param dpsCapacity int = 1

@description('Optional. Resource id of an existing action group the fleet health alerts notify (infra/app/monitoring.bicep; thresholds and runbooks in docs/operations.md). \'\' fires them without notifying anyone. Defaults to \'\'.')
param alertActionGroupId string = ''

@description('Optional. IoT Hub tier of every stamp. Defaults to S1.')
@allowed([
  'S1'
  'S2'
  'S3'
])
param iotHubSkuName string = 'S1'

@description('Optional. IoT Hub units of every stamp (S1: 400,000 messages/day each). Defaults to 1.')
@minValue(1)
@maxValue(200)
param iotHubCapacity int = 1

@description('Optional. Event Hubs Standard throughput units. Defaults to 1.')
@minValue(1)
@maxValue(40)
param eventHubsCapacity int = 1

@description('Optional. Partitions of the telemetry hub: the most function instances that read telemetry in parallel. Fixed once created. Defaults to 4.')
@minValue(1)
@maxValue(32)
param telemetryPartitionCount int = 4

@description('Optional. Partitions of the requests hub. Fixed once created. Defaults to 2.')
@minValue(1)
@maxValue(32)
param requestsPartitionCount int = 2

@description('Optional. Days every Event Hub keeps events (Standard tier: 1-7): the longest outage of the functions that loses nothing, less the time to drain the backlog. Defaults to 7.')
@minValue(1)
@maxValue(7)
param eventHubsRetentionInDays int = 7

@description('Optional. Cosmos DB capacity mode: serverless (pay per request) or autoscale (provisioned RU/s shared by the database). Defaults to serverless.')
@allowed([
  'serverless'
  'autoscale'
])
param cosmosCapacityMode string = 'serverless'

@description('Optional. Highest RU/s of the database in autoscale mode. Defaults to 1000.')
@minValue(1000)
@maxValue(1000000)
param cosmosAutoscaleMaxThroughput int = 1000

@description('Optional. Default time to live in seconds by container name, overriding shared/cosmos_containers.json, e.g. { "telemetry": 604800 }. Defaults to {}.')
param cosmosContainerTtlOverrides object = {}

@description('Optional. Days a dead letter or parked message is kept in the deadletter blob container after its last change, by a lifecycle management rule (docs/data-model.md, "Retention"): long enough to fix and redrive. Defaults to 30.')
@minValue(1)
@maxValue(3650)
param deadLetterRetentionInDays int = 30

@description('Optional. Public https URL of the graph_notifications function, for Microsoft Graph change notifications (known after the first deployment); empty turns webhooks off and calendars sync on the timer only. Defaults to \'\'.')
param graphNotificationUrl string = ''

@description('Optional. Client id of the public client app registration cars sign drivers in with (SIGNIN_CLIENT_ID): "Allow public client flows" on, no redirect URI, no secret, delegated Calendars.Read, OnlineMeetings.ReadWrite, Mail.Send and offline_access (docs/accounts.md). Empty turns the car sign-in off: cars get feature_disabled. Defaults to \'\'.')
param signinClientId string = ''

@description('Optional. Authority of the car sign-in (SIGNIN_AUTHORITY): <login endpoint>common for work, school and personal Microsoft accounts, organizations for work and school only, consumers for personal only, or one tenant id. Defaults to this cloud\'s login endpoint + common.')
param signinAuthority string = '${environment().authentication.loginEndpoint}common'

@description('Optional. Region of the Azure Maps account (Azure Maps is offered in a few regions only; its data at rest stays there). Defaults to westeurope.')
param mapsLocation string = 'westeurope'

@description('Optional. Azure Maps endpoint the app calls (MAPS_BASE_URL): eu or us keep request processing in that geography, global lets Azure pick. Defaults to eu.')
@allowed([
  'eu'
  'us'
  'global'
])
param mapsGeography string = 'eu'

@description('Optional. Most instances the function app scales out to. Defaults to 100.')
@minValue(40)
@maxValue(1000)
param functionMaximumInstanceCount int = 100

@description('Optional. Memory of each function instance in MB. Defaults to 2048.')
@allowed([
  512
  2048
  4096
])
param functionInstanceMemoryMB int = 2048

@description('Optional. Retention of the analytics lake (docs/analytics.md "Retention"): days after its last change a lake file is deleted. Defaults to 730.')
@minValue(2)
@maxValue(3650)
param lakeRetentionInDays int = 730

@description('Optional. Days after its last change a lake file moves to the cool tier. Defaults to 30.')
@minValue(1)
param lakeCoolAfterDays int = 30

@description('Optional. Days Log Analytics keeps logs. Defaults to 30.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

// The single definitions shared with the code (see shared/): containers and IoT Hub routes.
var cosmosDefinition = loadJsonContent('../shared/cosmos_containers.json')
var iotHubRouting = loadJsonContent('../shared/iothub_routes.json')
// The API's app roles and delegated scope (app/api-registration.bicep reads the roles itself).
var authDefinition = loadJsonContent('../shared/auth/app_roles.json')

// shared/settings.py: CONSUMER_GROUP and DEADLETTER_CONTAINER.
var consumerGroupName = 'functions'
var deadLetterContainerName = 'deadletter'
// Queue the calendar sync works from; the host creates '<queue>-poison' on first failure, made here up front.
var calendarSyncQueueName = 'calendar-sync'
// Queue the command dispatch works from (shared/commands/config.py).
var commandDispatchQueueName = 'command-dispatch'
// Queue the car sign-in polls the token endpoint from, one message per pending device-code flow (shared/accounts).
var signinPollQueueName = 'signin-poll'
// Queue a collection policy's push goes on from, a page of cars per message (shared/collection/rollout.py).
var collectionRolloutQueueName = 'collection-rollout'

var abbrs = loadJsonContent('abbreviations.json')
// Same subscription, environment and region: same names, so a second `azd up` changes nothing.
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

var routedEventHubs = [for route in iotHubRouting.routes: route.eventHub]
var eventHubNames = union(routedEventHubs, [])
// The stamps' names and regions: the first keeps today's names, so adding DPS to a deployment changes no hub.
var stampSuffixes = [for stamp in iotHubStamps: empty(stamp.nameSuffix) ? '' : '-${stamp.nameSuffix}']
var stampLocations = [for stamp in iotHubStamps: empty(stamp.location) ? location : stamp.location]
var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module functionIdentity 'core/security/user-assigned-identity.bicep' = {
  name: 'function-identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}func-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'core/storage/storage-account.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    containerNames: [
      deploymentContainerName
      deadLetterContainerName
    ]
    expiringContainers: [
      {
        name: deadLetterContainerName
        days: deadLetterRetentionInDays
      }
    ]
    queueNames: [
      calendarSyncQueueName
      '${calendarSyncQueueName}-poison'
      commandDispatchQueueName
      '${commandDispatchQueueName}-poison'
      signinPollQueueName
      '${signinPollQueueName}-poison'
      collectionRolloutQueueName
      '${collectionRolloutQueueName}-poison'
    ]
  }
}

// The analytics lake (issue 18): its own ADLS Gen2 account, written by the function app's identity only.
module lake 'core/storage/data-lake.bicep' = {
  name: 'lake'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}lake${resourceToken}'
    location: location
    tags: tags
    coolAfterDays: lakeCoolAfterDays
    retentionInDays: lakeRetentionInDays
  }
}

module monitoring 'core/monitor/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
  }
}

// Fleet health: the workbook and alert rules over the app's metrics (docs/operations.md).
module fleetHealth 'app/monitoring.bicep' = {
  name: 'fleet-health'
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    location: location
    tags: tags
    actionGroupId: alertActionGroupId
  }
}

module eventHubs 'core/messaging/event-hubs.bicep' = {
  name: 'event-hubs'
  scope: rg
  params: {
    name: '${abbrs.eventHubNamespaces}${resourceToken}'
    location: location
    tags: tags
    capacity: eventHubsCapacity
    eventHubNames: eventHubNames
    partitionCounts: {
      telemetry: telemetryPartitionCount
      requests: requestsPartitionCount
    }
    consumerGroupName: consumerGroupName
    messageRetentionInDays: eventHubsRetentionInDays
  }
}

// Every stamp: the same hub module, the same routes, the same Event Hubs namespace (ingestion is unchanged, and a
// car that moves hubs keeps writing to the same partitions: docs/stamps.md).
module iotHubs 'core/iot/iot-hub.bicep' = [for (stamp, i) in iotHubStamps: {
  name: 'iot-hub${stampSuffixes[i]}'
  scope: rg
  params: {
    name: '${abbrs.devicesIotHubs}${resourceToken}${stampSuffixes[i]}'
    identityName: '${abbrs.managedIdentityUserAssignedIdentities}iot-${resourceToken}${stampSuffixes[i]}'
    location: stampLocations[i]
    tags: tags
    skuName: iotHubSkuName
    capacity: iotHubCapacity
    eventHubNamespaceName: eventHubs.outputs.name
    routing: iotHubRouting
  }
}]

// DPS's own identity, created first: its role on every hub must exist before DPS links them.
module dpsIdentity 'core/security/user-assigned-identity.bicep' = {
  name: 'dps-identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}dps-${resourceToken}'
    location: location
    tags: tags
  }
}

module iotHubRbac 'app/iot-hub-rbac.bicep' = [for (stamp, i) in iotHubStamps: {
  name: 'iot-hub-rbac${stampSuffixes[i]}'
  scope: rg
  params: {
    iotHubName: iotHubs[i].outputs.name
    functionPrincipalId: functionIdentity.outputs.principalId
    dpsPrincipalId: dpsIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}]

module provisioningService 'core/iot/provisioning-service.bicep' = {
  name: 'provisioning-service'
  scope: rg
  params: {
    name: '${abbrs.devicesProvisioningServices}${resourceToken}'
    location: location
    tags: tags
    identityId: dpsIdentity.outputs.resourceId
    linkedHubs: [for (stamp, i) in iotHubStamps: {
      hostName: iotHubs[i].outputs.hostName
      location: stampLocations[i]
    }]
    capacity: dpsCapacity
  }
  dependsOn: [
    iotHubRbac
  ]
}

module cosmos 'core/database/cosmos-account.bicep' = {
  name: 'cosmos'
  scope: rg
  params: {
    name: '${abbrs.documentDBDatabaseAccounts}${resourceToken}'
    location: location
    tags: tags
    definition: cosmosDefinition
    capacityMode: cosmosCapacityMode
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    containerTtlOverrides: cosmosContainerTtlOverrides
  }
}

// Drivers' token caches are sealed under this vault's key (envelope encryption); the app may only wrap and unwrap.
module keyVault 'core/security/key-vault.bicep' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    functionPrincipalId: functionIdentity.outputs.principalId
  }
}

// Azure Maps for travel figures (issue 17): Entra ID only; the app reads it with Azure Maps Data Reader.
module maps 'core/maps/maps-account.bicep' = {
  name: 'maps'
  scope: rg
  params: {
    name: '${abbrs.mapsAccounts}${resourceToken}'
    location: mapsLocation
    tags: tags
    geography: mapsGeography
    functionPrincipalId: functionIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

// The API's app registration (Microsoft Graph extension). The deployer must be allowed to register applications
// (default for members unless the tenant turned it off, or Application Developer) and becomes its owner.
module apiRegistration 'app/api-registration.bicep' = {
  name: 'api-registration'
  scope: rg
  params: {
    uniqueName: 'automotive-cloud-api-${resourceToken}'
    displayName: 'Automotive cloud API (${environmentName})'
    functionPrincipalId: functionIdentity.outputs.principalId
    adminPrincipalId: principalId
  }
}

module functionApp 'app/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: functionIdentity.outputs.resourceId
    identityClientId: functionIdentity.outputs.clientId
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageQueueEndpoint: storage.outputs.queueEndpoint
    lakeBlobEndpoint: lake.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    cosmosEndpoint: cosmos.outputs.endpoint
    cosmosDatabaseName: cosmos.outputs.databaseName
    eventHubsFullyQualifiedNamespace: eventHubs.outputs.fullyQualifiedNamespace
    iotHubHostName: iotHubs[0].outputs.hostName
    iotHubStamps: [for (stamp, i) in iotHubStamps: {
      hostName: iotHubs[i].outputs.hostName
      region: stamp.region
    }]
    dpsIdScope: provisioningService.outputs.idScope
    provisioningDevelopmentKeys: provisioningDevelopmentKeys
    dpsHostName: provisioningService.outputs.serviceOperationsHostName
    graphNotificationUrl: graphNotificationUrl
    apiClientId: apiRegistration.outputs.appId
    apiScope: 'api://${apiRegistration.outputs.appId}/${authDefinition.scopes[0].value}'
    allowedTenantIds: tenant().tenantId
    tokenKeyId: keyVault.outputs.tokenWrapKid
    signinClientId: signinClientId
    signinAuthority: signinAuthority
    mapsBaseUrl: maps.outputs.baseUrl
    mapsClientId: maps.outputs.clientId
    maximumInstanceCount: functionMaximumInstanceCount
    instanceMemoryMB: functionInstanceMemoryMB
    telemetryPartitionCount: telemetryPartitionCount
  }
}

// Second step of the registration: api://<appId> and the dashboard's redirect URIs (both known only now).
module apiRegistrationUris 'app/api-registration-uris.bicep' = {
  name: 'api-registration-uris'
  scope: rg
  params: {
    uniqueName: apiRegistration.outputs.uniqueName
    displayName: apiRegistration.outputs.displayName
    appId: apiRegistration.outputs.appId
    functionHostName: functionApp.outputs.defaultHostName
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    functionPrincipalId: functionIdentity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
    storageAccountName: storage.outputs.name
    lakeAccountName: lake.outputs.name
    eventHubNamespaceName: eventHubs.outputs.name
    provisioningServiceName: provisioningService.outputs.name
    developmentKeys: provisioningDevelopmentKeys
    cosmosAccountName: cosmos.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

module graphAppRoles 'app/graph-app-roles.bicep' = if (grantGraphPermissions) {
  name: 'graph-app-roles'
  scope: rg
  params: {
    principalId: functionIdentity.outputs.principalId
  }
}

@description('Azure region of the resources.')
output AZURE_LOCATION string = location

@description('Entra ID tenant of the subscription.')
output AZURE_TENANT_ID string = tenant().tenantId

@description('Resource group holding every resource.')
output AZURE_RESOURCE_GROUP string = rg.name

@description('Name of the function app (azd deploys the api service to it).')
output AZURE_FUNCTION_NAME string = functionApp.outputs.name

@description('HTTPS base address of the function app.')
output AZURE_FUNCTION_URL string = 'https://${functionApp.outputs.defaultHostName}'

@description('Client id of the function app\'s identity: the AppIds of the Teams application access policy.')
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = functionIdentity.outputs.clientId

@description('Object id of the function app identity\'s service principal (for granting Graph permissions by hand).')
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = functionIdentity.outputs.principalId

@description('Whether this deployment granted the Microsoft Graph permissions.')
output GRAPH_PERMISSIONS_GRANTED bool = grantGraphPermissions

@description('Application (client) id of the API\'s app registration (multi-tenant): audience of its tokens, client id of the dashboard, subject of admin consent in customer tenants.')
output API_CLIENT_ID string = apiRegistration.outputs.appId

@description('Identifier URI of the API: az account get-access-token --resource <this>.')
output API_IDENTIFIER_URI string = apiRegistrationUris.outputs.identifierUri

@description('Delegated scope users ask for: az account get-access-token --scope <this>.')
output API_SCOPE string = 'api://${apiRegistration.outputs.appId}/${authDefinition.scopes[0].value}'

@description('App roles of the API, assigned to users, groups or apps in the Entra admin center or with Microsoft Graph.')
output API_APP_ROLES array = apiRegistration.outputs.appRoleValues

@description('Object id of the API\'s service principal in this tenant (resource of app role assignments).')
output API_SERVICE_PRINCIPAL_ID string = apiRegistration.outputs.servicePrincipalId

@description('Whether this deployment made principalId a Platform.Admin of the API.')
output API_PLATFORM_ADMIN_ASSIGNED bool = !empty(principalId)

@description('The dashboard (MSAL.js sign-in; no key).')
output DASHBOARD_URL string = 'https://${functionApp.outputs.defaultHostName}/api/dashboard/'

@description('Cosmos DB account endpoint.')
output COSMOS_ENDPOINT string = cosmos.outputs.endpoint

@description('Cosmos DB database name.')
output COSMOS_DATABASE string = cosmos.outputs.databaseName

@description('Host name of the default IoT Hub (the first stamp): cars registered without DPS connect to it.')
output IOTHUB_HOSTNAME string = iotHubs[0].outputs.hostName

@description('Name of the default IoT Hub (for az iot hub device-identity ...).')
output IOTHUB_NAME string = iotHubs[0].outputs.name

@description('Every IoT Hub stamp: [{ name, hostName, location, region }], the first the default hub.')
output IOTHUB_STAMPS array = [for (stamp, i) in iotHubStamps: {
  name: iotHubs[i].outputs.name
  hostName: iotHubs[i].outputs.hostName
  location: stampLocations[i]
  region: stamp.region
}]

@description('Name of the Device Provisioning Service (az iot dps ... --dps-name).')
output DPS_NAME string = provisioningService.outputs.name

@description('ID scope cars provision with.')
output DPS_ID_SCOPE string = provisioningService.outputs.idScope

@description('Service endpoint of the Device Provisioning Service (enrollments).')
output DPS_HOSTNAME string = provisioningService.outputs.serviceOperationsHostName

@description('Device endpoint cars provision through (global.azure-devices-provisioning.net).')
output DPS_GLOBAL_ENDPOINT string = provisioningService.outputs.deviceProvisioningHostName

@description('Name of the vault of drivers\' token caches (its wrapping key\'s URI is TOKEN_KEY_ID in LOCAL_SETTINGS).')
output TOKEN_VAULT_NAME string = keyVault.outputs.name

@description('Event Hubs namespace name.')
output EVENTHUB_NAMESPACE string = eventHubs.outputs.name

@description('Event Hubs fully qualified namespace, e.g. <name>.servicebus.windows.net.')
output EVENTHUB_FULLY_QUALIFIED_NAMESPACE string = eventHubs.outputs.fullyQualifiedNamespace

@description('Blob endpoint of the analytics lake (LAKE_BLOB_SERVICE_URI).')
output LAKE_BLOB_SERVICE_URI string = lake.outputs.blobEndpoint

@description('Data Lake endpoint of the analytics lake, for Power BI / Fabric: https://<account>.dfs.core.windows.net/.')
output LAKE_DFS_ENDPOINT string = lake.outputs.dfsEndpoint

@description('Storage account name.')
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name

@description('Storage blob endpoint.')
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint

@description('Storage queue endpoint.')
output AZURE_STORAGE_QUEUE_ENDPOINT string = storage.outputs.queueEndpoint

@description('Application Insights connection string (ingestion needs Entra ID: not a secret).')
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString

@description('The Values of local.settings.json (written by the postprovision hook): the app\'s settings without the managed-identity ones, so a local host uses your own sign-in.')
output LOCAL_SETTINGS object = functionApp.outputs.localSettings
