metadata description = 'Azure Maps account (Gen2) for calendar-aware driving (issue 17): Entra ID only (local key and SAS authentication disabled), reached by the function app\'s managed identity with Azure Maps Data Reader and the account\'s uniqueId as x-ms-client-id. The account needs no identity of its own (it links no storage).'

@description('Required. Name of the account.')
param name string

@description('Required. Azure region of the account (Azure Maps is offered in a few regions only; customer data at rest stays there).')
param location string

@description('Optional. Tags of the account. Defaults to {}.')
param tags object = {}

@description('Optional. Which Azure Maps endpoint the app calls: eu or us keep request processing in that geography, global lets Azure pick. Defaults to eu.')
@allowed([
  'eu'
  'us'
  'global'
])
param geography string = 'eu'

@description('Required. Object id of the function app\'s identity: Azure Maps Data Reader on the account.')
param functionPrincipalId string

@description('Optional. Object id of the developer or pipeline to grant the same read access for local runs against Azure; empty grants nothing. Defaults to \'\'.')
param userPrincipalId string = ''

@description('Optional. Kind of principal userPrincipalId is. Defaults to User.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param userPrincipalType string = 'User'

// Built-in role: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/web-and-mobile
// Azure Maps Data Reader: read-only data-plane access (search, route). Nothing broader (no Contributor, no keys).
var mapsDataReaderRoleId = '423170ca-a8f6-4b0f-8487-9e4eb8f49bfa'

var grantUser = !empty(userPrincipalId)

resource account 'Microsoft.Maps/accounts@2023-06-01' = {
  name: name
  location: location
  tags: tags
  kind: 'Gen2'
  sku: {
    name: 'G2'
  }
  properties: {
    // Entra ID tokens only: no shared keys, no SAS tokens; every call carries the caller's identity and RBAC role.
    disableLocalAuth: true
  }
}

resource functionReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, functionPrincipalId, mapsDataReaderRoleId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', mapsDataReaderRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource userReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantUser) {
  name: guid(account.id, userPrincipalId, mapsDataReaderRoleId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', mapsDataReaderRoleId)
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

@description('Name of the account.')
output name string = account.name

@description('The account\'s uniqueId: MAPS_CLIENT_ID, sent as x-ms-client-id with every request (not a secret).')
output clientId string = account.properties.uniqueId

@description('MAPS_BASE_URL: the endpoint of the chosen geography.')
output baseUrl string = geography == 'global' ? 'https://atlas.microsoft.com' : 'https://${geography}.atlas.microsoft.com'
