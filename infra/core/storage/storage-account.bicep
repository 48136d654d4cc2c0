metadata description = 'The function app\'s storage account (host state, Flex deployment package, dead letters, work queues), reachable only with Entra ID.'

@description('Required. Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Required. Azure region of the account.')
param location string

@description('Optional. Tags of the account. Defaults to {}.')
param tags object = {}

@description('Optional. Redundancy of the account. Defaults to Standard_LRS (host state and dead letters are re-creatable; pick a zone- or geo-redundant SKU for production).')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param skuName string = 'Standard_LRS'

@description('Required. Blob containers to create, e.g. the Flex Consumption deployment container and the dead-letter container.')
param containerNames array

@description('Optional. Blob containers whose blobs a lifecycle management rule deletes a number of days after their last change, as [{ name, days }] (retention of personal data, e.g. dead letters). Defaults to [].')
param expiringContainers array = []

@description('Optional. Queues to create. Defaults to [].')
param queueNames array = []

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    // checkov:skip=CKV_AZURE_35: no VNet in this template; public endpoint, but every request needs Entra ID (shared keys off)
    // checkov:skip=CKV_AZURE_59: same reason: Flex Consumption without VNet integration reaches storage over its public endpoint
    // checkov:skip=CKV_AZURE_206: LRS by default to keep a demo cheap; skuName selects ZRS/GRS/GZRS
    accessTier: 'Hot'
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
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for containerName in containerNames: {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}]

// Retention: each listed container's blobs are deleted once unchanged for its days (Azure runs the policy once a
// day, so a blob may outlive its limit by up to a day).
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = if (!empty(expiringContainers)) {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [for expiring in expiringContainers: {
        name: 'expire-${expiring.name}'
        enabled: true
        type: 'Lifecycle'
        definition: {
          filters: {
            blobTypes: [
              'blockBlob'
            ]
            prefixMatch: [
              '${expiring.name}/'
            ]
          }
          actions: {
            baseBlob: {
              delete: {
                daysAfterModificationGreaterThan: expiring.days
              }
            }
          }
        }
      }]
    }
  }
  dependsOn: [
    containers
  ]
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

@description('Resource id of the storage account.')
output resourceId string = storage.id

@description('Name of the storage account.')
output name string = storage.name

@description('Blob endpoint, e.g. https://<account>.blob.core.windows.net/.')
output blobEndpoint string = storage.properties.primaryEndpoints.blob

@description('Queue endpoint, e.g. https://<account>.queue.core.windows.net/.')
output queueEndpoint string = storage.properties.primaryEndpoints.queue
