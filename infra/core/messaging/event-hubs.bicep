metadata description = 'Event Hubs namespace (Entra ID only) with the hubs IoT Hub routes to and the consumer group the functions read with.'

@description('Required. Name of the Event Hubs namespace.')
param name string

@description('Required. Azure region of the namespace.')
param location string

@description('Optional. Tags of the namespace. Defaults to {}.')
param tags object = {}

@description('Optional. Throughput units of the Standard namespace (1 TU = 1 MB/s or 1,000 events/s in). Defaults to 1.')
@minValue(1)
@maxValue(40)
param capacity int = 1

@description('Required. Names of the Event Hubs to create (from shared/iothub_routes.json).')
param eventHubNames array

@description('Optional. Partition count by hub name; a hub not listed gets 2. Partitions cap the parallelism of a trigger (one instance per partition) and cannot be changed on Standard after creation. Defaults to {}.')
param partitionCounts object = {}

@description('Required. Consumer group created on every hub for the function triggers (shared/settings.py CONSUMER_GROUP).')
param consumerGroupName string

@description('Optional. Days each hub keeps events (Standard tier: 1-7). Retention is how long the functions can be down, stalled or throttled before unread events expire: an outage is survived without loss if it is shorter than retention minus the time to drain the backlog it leaves. Defaults to 7.')
@minValue(1)
@maxValue(7)
param messageRetentionInDays int = 7

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: capacity
  }
  properties: {
    // Senders (IoT Hub) and receivers (the functions) authenticate with Entra ID; no SAS policies exist.
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    isAutoInflateEnabled: false
    zoneRedundant: false
  }
}

resource eventHubs 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = [for hubName in eventHubNames: {
  parent: namespace
  name: hubName
  properties: {
    partitionCount: contains(partitionCounts, hubName) ? partitionCounts[hubName] : 2
    messageRetentionInDays: messageRetentionInDays
  }
}]

resource consumerGroups 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = [for (hubName, i) in eventHubNames: {
  parent: eventHubs[i]
  name: consumerGroupName
  properties: {
    userMetadata: 'Azure Functions triggers'
  }
}]

@description('Resource id of the namespace.')
output resourceId string = namespace.id

@description('Name of the namespace.')
output name string = namespace.name

@description('Fully qualified namespace host, e.g. <name>.servicebus.windows.net (the triggers\' EVENTHUB__fullyQualifiedNamespace).')
output fullyQualifiedNamespace string = split(split(namespace.properties.serviceBusEndpoint, '//')[1], ':')[0]
