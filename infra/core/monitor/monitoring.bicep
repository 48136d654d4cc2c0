metadata description = 'Log Analytics workspace and a workspace-based Application Insights that accepts only Entra ID-authenticated telemetry.'

@description('Required. Name of the Log Analytics workspace.')
param logAnalyticsName string

@description('Required. Name of the Application Insights component.')
param applicationInsightsName string

@description('Required. Azure region of both resources.')
param location string

@description('Optional. Tags of both resources. Defaults to {}.')
param tags object = {}

@description('Optional. Days the workspace keeps data. Defaults to 30 (included in the ingestion price).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    // Ingestion requires an Entra ID token (the app's identity with Monitoring Metrics Publisher): the
    // instrumentation key in the connection string alone cannot send telemetry.
    DisableLocalAuth: true
  }
}

@description('Name of the Application Insights component.')
output applicationInsightsName string = applicationInsights.name

@description('Application Insights connection string (not a secret: ingestion needs Entra ID, local auth is off).')
output connectionString string = applicationInsights.properties.ConnectionString
