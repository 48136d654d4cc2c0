metadata description = 'Data-plane roles of the function app\'s identity and, optionally, of the developer who runs the app locally against Azure. Data roles only: no Owner, Contributor or User Access Administrator.'

@description('Required. Object id of the function app\'s user-assigned identity.')
param functionPrincipalId string

@description('Optional. Object id of the developer or pipeline to grant the same data access for local runs (azd sets AZURE_PRINCIPAL_ID); empty grants nothing. Defaults to \'\'.')
param userPrincipalId string = ''

@description('Optional. Kind of principal userPrincipalId is. Defaults to User.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param userPrincipalType string = 'User'

@description('Optional. Whether registration hands out development device keys (PROVISIONING_DEVELOPMENT_KEYS): only then may the function app read the keys of the symmetric-key enrollment groups. Defaults to false.')
param developmentKeys bool = false

@description('Required. Name of the storage account.')
param storageAccountName string

@description('Required. Name of the analytics lake\'s storage account (ADLS Gen2).')
param lakeAccountName string

@description('Required. Name of the Event Hubs namespace.')
param eventHubNamespaceName string

@description('Required. Name of the Device Provisioning Service (the IoT Hub stamps get their roles in app/iot-hub-rbac.bicep, one module per hub).')
param provisioningServiceName string

@description('Required. Name of the Cosmos DB account.')
param cosmosAccountName string

@description('Required. Name of the Application Insights component.')
param applicationInsightsName string

// Built-in role ids: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles
// Host storage (leases, Event Hubs checkpoints, timers), the deployment package and dead letters.
var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
// The analytics lake: read, write and delete Parquet files (export, repair, erasure), on the lake account only.
var storageBlobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
// The calendar-sync and command-dispatch work queues (queue triggers and their poison queues).
var storageQueueDataContributorRoleId = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
// Event Hubs triggers.
var eventHubsDataReceiverRoleId = 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'
// Developers only: publish test events to the hubs.
var eventHubsDataSenderRoleId = '2b629674-e913-4c01-ae53-ef4638d8f975'
// Development mode only: the function app reads a symmetric-key enrollment group's key (a car's development key is
// derived from it: POST /enrollmentGroups/{id}/attestationmechanism). That is DPS's "Fetch Attestation Mechanism
// Details" data action, which the built-in Device Provisioning Service Data Reader (provisioningServices/*/read)
// does not include, and Data Contributor would also let the app write enrollments: hence a role of exactly these
// two data actions, assignable in this resource group only. Production (no development keys) grants nothing on DPS.
// Data actions: https://learn.microsoft.com/azure/role-based-access-control/permissions/internet-of-things
var enrollmentKeyReaderDataActions = [
  'Microsoft.Devices/provisioningServices/enrollmentGroups/read'
  'Microsoft.Devices/provisioningServices/attestationmechanism/details/action'
]
// Developers only: create and update enrollment groups (infra/hooks/postprovision.sh runs as you).
var dpsDataContributorRoleId = 'dfce44e4-17b7-4bd1-a6d1-04996ec95633'
// Entra ID-authenticated telemetry to Application Insights (local auth is off).
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'
// Cosmos DB data plane (a Cosmos DB role, not an Azure RBAC one): Cosmos DB Built-in Data Contributor.
var cosmosDataContributorRoleId = '00000000-0000-0000-0000-000000000002'

var grantUser = !empty(userPrincipalId)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource lake 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: lakeAccountName
}

resource eventHubNamespace 'Microsoft.EventHub/namespaces@2024-01-01' existing = {
  name: eventHubNamespaceName
}

resource provisioningService 'Microsoft.Devices/provisioningServices@2026-08-31' existing = {
  name: provisioningServiceName
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' existing = {
  name: cosmosAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// ---- the function app's identity ----

resource functionStorageBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionPrincipalId, storageBlobDataOwnerRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionLake 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(lake.id, functionPrincipalId, storageBlobDataContributorRoleId)
  scope: lake
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionStorageQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionPrincipalId, storageQueueDataContributorRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributorRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionEventHubsReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventHubNamespace.id, functionPrincipalId, eventHubsDataReceiverRoleId)
  scope: eventHubNamespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataReceiverRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource enrollmentKeyReader 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (developmentKeys) {
  name: guid(resourceGroup().id, 'dps-enrollment-key-reader')
  properties: {
    roleName: 'DPS enrollment group key reader (${resourceGroup().name})'
    description: 'Reads the enrollment groups of the Device Provisioning Service and their attestation (a symmetric-key group\'s key), nothing else: development device keys of the automotive cloud.'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: enrollmentKeyReaderDataActions
        notDataActions: []
      }
    ]
  }
}

resource functionDps 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (developmentKeys) {
  name: guid(provisioningService.id, functionPrincipalId, enrollmentKeyReader.id)
  scope: provisioningService
  properties: {
    roleDefinitionId: enrollmentKeyReader.id
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionMonitoring 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, functionPrincipalId, monitoringMetricsPublisherRoleId)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource functionCosmos 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: cosmos
  name: guid(cosmos.id, functionPrincipalId, cosmosDataContributorRoleId)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributorRoleId}'
    principalId: functionPrincipalId
    scope: cosmos.id
  }
}

// ---- the developer (local runs against Azure), only when userPrincipalId is set ----

resource userStorageBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantUser) {
  name: guid(storage.id, userPrincipalId, storageBlobDataOwnerRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

resource userStorageQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantUser) {
  name: guid(storage.id, userPrincipalId, storageQueueDataContributorRoleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributorRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

resource userEventHubsReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantUser) {
  name: guid(eventHubNamespace.id, userPrincipalId, eventHubsDataReceiverRoleId)
  scope: eventHubNamespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataReceiverRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

resource userEventHubsSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantUser) {
  name: guid(eventHubNamespace.id, userPrincipalId, eventHubsDataSenderRoleId)
  scope: eventHubNamespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataSenderRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

resource userDps 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantUser) {
  name: guid(provisioningService.id, userPrincipalId, dpsDataContributorRoleId)
  scope: provisioningService
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dpsDataContributorRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

resource userCosmos 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = if (grantUser) {
  parent: cosmos
  name: guid(cosmos.id, userPrincipalId, cosmosDataContributorRoleId)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${cosmosDataContributorRoleId}'
    principalId: userPrincipalId
    scope: cosmos.id
  }
}
