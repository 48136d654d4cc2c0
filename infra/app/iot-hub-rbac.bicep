metadata description = 'Data-plane access to one IoT Hub stamp: the function app (replies, twin patches, direct methods, registry), the Device Provisioning Service (registers the cars it allocates here) and, optionally, the developer.'

@description('Required. Name of the IoT Hub.')
param iotHubName string

@description('Required. Object id of the function app\'s user-assigned identity.')
param functionPrincipalId string

@description('Required. Object id of the Device Provisioning Service\'s user-assigned identity.')
param dpsPrincipalId string

@description('Optional. Object id of the developer or pipeline to grant the same access for local runs; empty grants nothing. Defaults to \'\'.')
param userPrincipalId string = ''

@description('Optional. Kind of principal userPrincipalId is. Defaults to User.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param userPrincipalType string = 'User'

// IoT Hub Data Contributor: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/internet-of-things#iot-hub-data-contributor
// The function app: C2D messages, twins, direct methods, the registry. DPS: device identities and their initial
// twins, what a linked hub's shared access policy gave it (registry read/write, service connect).
var iotHubDataContributorRoleId = '4fc6c259-987e-4a07-842e-c321cc9d413f'

var grantUser = !empty(userPrincipalId)

resource iotHub 'Microsoft.Devices/IotHubs@2023-06-30' existing = {
  name: iotHubName
}

resource functionIotHub 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(iotHub.id, functionPrincipalId, iotHubDataContributorRoleId)
  scope: iotHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', iotHubDataContributorRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource dpsIotHub 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(iotHub.id, dpsPrincipalId, iotHubDataContributorRoleId)
  scope: iotHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', iotHubDataContributorRoleId)
    principalId: dpsPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userIotHub 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantUser) {
  name: guid(iotHub.id, userPrincipalId, iotHubDataContributorRoleId)
  scope: iotHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', iotHubDataContributorRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}
