metadata description = 'A user-assigned managed identity: the only credential a service of the automotive cloud uses.'

@description('Required. Name of the identity.')
param name string

@description('Required. Azure region of the identity.')
param location string

@description('Optional. Tags of the identity. Defaults to {}.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource id of the identity.')
output resourceId string = identity.id

@description('Name of the identity.')
output name string = identity.name

@description('Object (principal) id of the identity\'s service principal, for role assignments.')
output principalId string = identity.properties.principalId

@description('Client (application) id of the identity, for AZURE_CLIENT_ID and `*__clientId` settings.')
output clientId string = identity.properties.clientId
