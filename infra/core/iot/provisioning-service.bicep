metadata description = 'IoT Hub Device Provisioning Service (DPS) linked to every IoT Hub stamp through its own user-assigned identity: no hub connection string, and no DPS shared access policy (Entra ID + RBAC for the service API).'

@description('Required. Name of the provisioning service.')
param name string

@description('Required. Azure region of the provisioning service (its data stays there; linked hubs may be in any region).')
param location string

@description('Optional. Tags of the provisioning service. Defaults to {}.')
param tags object = {}

@description('Required. Resource id of the user-assigned identity DPS registers devices on the linked hubs with; it must hold IoT Hub Data Contributor on each hub before the link is made.')
param identityId string

@description('Required. The IoT Hubs to link, each { hostName: \'<hub>.azure-devices.net\', location: \'<Azure region of the hub>\' }.')
@minLength(1)
param linkedHubs array

@description('Optional. Allocation policy for enrollments that name none. Ours always name the custom one (the function app\'s /api/provisioning/allocate webhook, set on each enrollment group by infra/hooks/postprovision.sh: ARM cannot set a webhook); GeoLatency keeps a car that escaped it on the nearest hub rather than a hashed one in any region. Defaults to GeoLatency.')
@allowed([
  'GeoLatency'
  'Hashed'
  'Static'
])
param allocationPolicy string = 'GeoLatency'

@description('Optional. Units of the S1 tier (each: 1,000 registrations per minute, docs "DPS quotas and limits"). Defaults to 1.')
@minValue(1)
@maxValue(10)
param capacity int = 1

// API 2026-08-31 is the first GA version whose linked-hub entry takes authenticationType, hostName and
// selectedUserAssignedIdentityResourceId (generated/deviceprovisioningservices in Azure/bicep-types-az); earlier
// ones require a connection string with a hub shared access key, which our hubs do not have (disableLocalAuth).
resource provisioningService 'Microsoft.Devices/provisioningServices@2026-08-31' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'S1'
    capacity: capacity
  }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    // Cars reach DPS over mobile networks from changing addresses: public, like the hubs.
    publicNetworkAccess: 'Enabled'
    // No shared access policies (provisioningserviceowner...): enrollments are managed with Entra ID and the
    // Device Provisioning Service Data roles. Devices are not affected: they attest with X.509, TPM or a key.
    disableLocalAuth: true
    allocationPolicy: allocationPolicy
    iotHubs: [for hub in linkedHubs: {
      hostName: hub.hostName
      location: hub.location
      authenticationType: 'UserAssigned'
      selectedUserAssignedIdentityResourceId: identityId
      applyAllocationPolicy: true
      allocationWeight: 1
    }]
  }
}

@description('Resource id of the provisioning service.')
output resourceId string = provisioningService.id

@description('Name of the provisioning service (az iot dps ... --dps-name).')
output name string = provisioningService.name

@description('ID scope cars provision with.')
output idScope string = provisioningService.properties.idScope

@description('Service endpoint for enrollments, e.g. <name>.azure-devices-provisioning.net.')
output serviceOperationsHostName string = provisioningService.properties.serviceOperationsHostName

@description('Device endpoint cars connect to, global.azure-devices-provisioning.net.')
output deviceProvisioningHostName string = provisioningService.properties.deviceProvisioningHostName
