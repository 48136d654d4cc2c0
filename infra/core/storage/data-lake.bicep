metadata description = 'The analytics lake (docs/analytics.md): an ADLS Gen2 account (hierarchical namespace) reachable only with Entra ID, one container of Parquet tables, and lifecycle rules (cool tier, then deletion after the retention).'

@description('Required. Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Required. Azure region of the account.')
param location string

@description('Optional. Tags of the account. Defaults to {}.')
param tags object = {}

@description('Optional. Redundancy of the account. Defaults to Standard_LRS (the lake is re-creatable from Cosmos DB for as long as Cosmos keeps the data; pick ZRS/GRS when it must outlive that).')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Optional. The lake container (the app setting LAKE_CONTAINER). Defaults to lake.')
param containerName string = 'lake'

@description('Optional. Days after its last change a lake file moves to the cool tier (analysts read recent days most; cool storage costs about half). Defaults to 30.')
@minValue(1)
param coolAfterDays int = 30

@description('Optional. Retention of the lake: days after its last change a lake file is deleted (docs/analytics.md "Retention"; the privacy notice must name it). Must exceed coolAfterDays. Defaults to 730 (two years of fleet history).')
@minValue(2)
param retentionInDays int = 730

// Its data roles (the function app writes, analysts read) are assigned in app/rbac.bicep with the others.

resource lake 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    // checkov:skip=CKV_AZURE_35: no VNet in this template; public endpoint, but every request needs Entra ID (shared keys off)
    // checkov:skip=CKV_AZURE_59: same reason: Flex Consumption and Power BI reach the lake over its public endpoint
    // checkov:skip=CKV_AZURE_206: LRS by default; the lake is rebuilt from Cosmos DB within its retention, skuName selects ZRS/GRS
    accessTier: 'Hot'
    isHnsEnabled: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: 'Enabled'
    supportsHttpsTrafficOnly: true
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: lake
  name: 'default'
  properties: {
    // Soft delete is not used: an erased car's rows must be gone, not recoverable for a week.
    deleteRetentionPolicy: {
      enabled: false
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}

// Azure runs the policy once a day: a file may stay up to a day longer in a tier than its limit says.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: lake
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'lake-cool-then-expire'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${containerName}/'
              ]
            }
            actions: {
              baseBlob: {
                tierToCool: {
                  daysAfterModificationGreaterThan: coolAfterDays
                }
                delete: {
                  daysAfterModificationGreaterThan: max(retentionInDays, coolAfterDays + 1)
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    container
  ]
}

@description('Name of the lake\'s storage account.')
output name string = lake.name

@description('Blob endpoint of the lake (the app setting LAKE_BLOB_SERVICE_URI), e.g. https://<account>.blob.core.windows.net/.')
output blobEndpoint string = lake.properties.primaryEndpoints.blob

@description('Data Lake (dfs) endpoint, for Fabric shortcuts and Power BI: https://<account>.dfs.core.windows.net/.')
output dfsEndpoint string = lake.properties.primaryEndpoints.dfs

@description('The lake container.')
output containerName string = container.name
