metadata description = 'Cosmos DB for NoSQL account (Entra ID only), the database and every container of shared/cosmos_containers.json.'

@description('Required. Name of the Cosmos DB account.')
param name string

@description('Required. Azure region of the account.')
param location string

@description('Optional. Tags of the account. Defaults to {}.')
param tags object = {}

@description('Required. Database name and containers, the content of shared/cosmos_containers.json: { database, containers: [{ name, partitionKey, subpartitionKeys?, defaultTtl, includedPaths, compositeIndexes }] }.')
param definition object

@description('Optional. Capacity mode: serverless (pay per request, ~0 at idle) or autoscale provisioned throughput shared by the database\'s containers. Defaults to serverless.')
@allowed([
  'serverless'
  'autoscale'
])
param capacityMode string = 'serverless'

@description('Optional. Highest RU/s autoscale may scale the database to (it bills at least 10% of it every hour). Used only when capacityMode is autoscale. Defaults to 1000.')
@minValue(1000)
@maxValue(1000000)
param autoscaleMaxThroughput int = 1000

@description('Optional. Default time to live in seconds by container name, overriding shared/cosmos_containers.json (-1 = on without expiry), e.g. { telemetry: 604800 }. Defaults to {} (the JSON values).')
param containerTtlOverrides object = {}

var serverless = capacityMode == 'serverless'

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: name
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    // checkov:skip=CKV_AZURE_99: no VNet in this template; every request needs an Entra ID token (local auth off)
    // checkov:skip=CKV_AZURE_101: same reason: the Flex Consumption app reaches Cosmos DB over its public endpoint
    databaseAccountOfferType: 'Standard'
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    capabilities: serverless ? [
      {
        name: 'EnableServerless'
      }
    ] : []
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
    enableAutomaticFailover: false
    enableMultipleWriteLocations: false
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: definition.database
  properties: {
    resource: {
      id: definition.database
    }
    options: serverless ? {} : {
      autoscaleSettings: {
        maxThroughput: autoscaleMaxThroughput
      }
    }
  }
}

// One deployment per container: a property loop (includedPaths) cannot sit inside the union() that makes
// defaultTtl optional, so each container is its own small template.
module containers 'cosmos-container.bicep' = [for container in definition.containers: {
  name: 'cosmos-container-${container.name}'
  params: {
    accountName: account.name
    databaseName: database.name
    name: container.name
    partitionKeyPaths: concat([container.partitionKey], contains(container, 'subpartitionKeys') ? container.subpartitionKeys : [])
    includedPaths: container.includedPaths
    compositeIndexes: container.compositeIndexes
    enableTtl: contains(containerTtlOverrides, container.name) || container.defaultTtl != null
    defaultTtl: contains(containerTtlOverrides, container.name) ? containerTtlOverrides[container.name] : (container.defaultTtl ?? -1)
  }
}]

@description('Resource id of the account.')
output resourceId string = account.id

@description('Name of the account.')
output name string = account.name

@description('Account endpoint, e.g. https://<account>.documents.azure.com:443/.')
output endpoint string = account.properties.documentEndpoint

@description('Name of the database.')
output databaseName string = database.name
