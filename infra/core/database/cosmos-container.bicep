metadata description = 'One Cosmos DB container: hash partition key (hierarchical with more than one path), an index of only the listed paths, optional default time to live.'

@description('Required. Name of the Cosmos DB account.')
param accountName string

@description('Required. Name of the database.')
param databaseName string

@description('Required. Name of the container.')
param name string

@description('Required. Partition key paths, top level first: one (e.g. [\'/vehicleId\']), or up to three for a hierarchical key (e.g. [\'/brandId\', \'/id\']).')
@minLength(1)
@maxLength(3)
param partitionKeyPaths array

@description('Required. Paths to index, e.g. [\'/vehicleId/?\']; everything else is excluded.')
param includedPaths array

@description('Required. Composite indexes, each a list of { path, order } (a filter property, then the ORDER BY one); [] for none.')
param compositeIndexes array

@description('Optional. Turn time to live on for the container. Defaults to false.')
param enableTtl bool = false

@description('Optional. Default time to live of an item in seconds (-1 = on, items expire only if they set ttl). Used only when enableTtl is true. Defaults to -1.')
@minValue(-1)
param defaultTtl int = -1

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' existing = {
  name: accountName
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' existing = {
  parent: account
  name: databaseName
}

var indexedPaths = [for path in includedPaths: {
  path: path
}]

resource container 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: name
  properties: {
    resource: union({
      id: name
      partitionKey: {
        paths: partitionKeyPaths
        kind: length(partitionKeyPaths) > 1 ? 'MultiHash' : 'Hash'
        version: 2
      }
      // Index only what the code queries: every write costs fewer RUs.
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: indexedPaths
        excludedPaths: [
          {
            path: '/*'
          }
        ]
        compositeIndexes: compositeIndexes
      }
    }, enableTtl ? {
      defaultTtl: defaultTtl
    } : {})
  }
}

@description('Name of the container.')
output name string = container.name
