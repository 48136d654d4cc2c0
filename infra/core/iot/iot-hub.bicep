metadata description = 'IoT Hub for the cars, with its own identity allowed to send to Event Hubs, and message routes from shared/iothub_routes.json to identity-based Event Hubs endpoints.'

@description('Required. Name of the IoT Hub.')
param name string

@description('Required. Name of the user-assigned identity IoT Hub uses to write to Event Hubs.')
param identityName string

@description('Required. Azure region of the hub and its identity.')
param location string

@description('Optional. Tags of the hub and its identity. Defaults to {}.')
param tags object = {}

@description('Optional. Pricing tier. Defaults to S1 (400,000 messages/day per unit; F1 and the Basic tiers lack cloud-to-device messages or device twins).')
@allowed([
  'S1'
  'S2'
  'S3'
])
param skuName string = 'S1'

@description('Optional. Number of units of the tier. Defaults to 1.')
@minValue(1)
@maxValue(200)
param capacity int = 1

@description('Required. Name of the Event Hubs namespace the routes write to (same resource group).')
param eventHubNamespaceName string

@description('Required. Routing definition, the content of shared/iothub_routes.json: { routes: [{ name, condition, eventHub }], fallback: bool }.')
param routing object

// Azure Event Hubs Data Sender: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/analytics#azure-event-hubs-data-sender
var eventHubsDataSenderRoleId = '2b629674-e913-4c01-ae53-ef4638d8f975'

// One endpoint per distinct hub; a route names its endpoint by hub name.
var routedEventHubs = [for route in routing.routes: route.eventHub]
var endpointNames = union(routedEventHubs, [])

resource eventHubNamespace 'Microsoft.EventHub/namespaces@2024-01-01' existing = {
  name: eventHubNamespaceName
}

// A user-assigned identity (not the hub's system-assigned one) so the role assignment exists before the hub:
// IoT Hub checks that it can reach every endpoint when the hub is created.
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
  tags: tags
}

resource senderRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventHubNamespace.id, identity.id, eventHubsDataSenderRoleId)
  scope: eventHubNamespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataSenderRoleId)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource iotHub 'Microsoft.Devices/IotHubs@2023-06-30' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    capacity: capacity
  }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    // Public network access and no IP filter: cars connect over mobile networks from changing addresses.
    // disableLocalAuth turns off the hub-level shared access policies (iothubowner, service, registryRead...):
    // back-end services and people use Entra ID + RBAC (IoT Hub Data Contributor). Devices are not affected:
    // disableDeviceSAS stays false, so each car keeps authenticating with its own device key (device SAS).
    disableLocalAuth: true
    disableDeviceSAS: false
    disableModuleSAS: true
    minTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    enableDataResidency: false
    eventHubEndpoints: {
      // The built-in endpoint only receives what the fallback route sends; nothing reads it (it needs SAS).
      events: {
        retentionTimeInDays: 1
        partitionCount: 2
      }
    }
    routing: {
      endpoints: {
        eventHubs: [for hubName in endpointNames: {
          name: hubName
          authenticationType: 'identityBased'
          identity: {
            userAssignedIdentity: identity.id
          }
          endpointUri: 'sb://${split(split(eventHubNamespace.properties.serviceBusEndpoint, '//')[1], ':')[0]}'
          entityPath: hubName
          subscriptionId: subscription().subscriptionId
          resourceGroup: resourceGroup().name
        }]
        serviceBusQueues: []
        serviceBusTopics: []
        storageContainers: []
      }
      routes: [for route in routing.routes: {
        name: route.name
        source: 'DeviceMessages'
        condition: route.condition
        endpointNames: [
          route.eventHub
        ]
        isEnabled: true
      }]
      fallbackRoute: {
        name: '$fallback'
        source: 'DeviceMessages'
        condition: 'true'
        endpointNames: [
          'events'
        ]
        isEnabled: routing.fallback
      }
    }
  }
  dependsOn: [
    senderRoleAssignment
  ]
}

@description('Resource id of the IoT Hub.')
output resourceId string = iotHub.id

@description('Name of the IoT Hub.')
output name string = iotHub.name

@description('Host name devices and services connect to, e.g. <name>.azure-devices.net.')
output hostName string = iotHub.properties.hostName

@description('Object id of the identity IoT Hub routes with.')
output identityPrincipalId string = identity.properties.principalId
