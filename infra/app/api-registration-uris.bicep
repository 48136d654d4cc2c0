metadata description = 'Second step of the API\'s app registration: its identifier URI api://<appId> and the dashboard\'s SPA redirect URIs. An application cannot name its own appId when it is created, and the redirect URI needs the function app\'s host name, so this step runs after both exist. The Graph extension upserts by uniqueName with PATCH: only the properties declared here change, everything api-registration.bicep set stays.'

extension microsoftGraphV1

@description('Required. Unique name of the application created by api-registration.bicep.')
param uniqueName string

@description('Required. Its display name (the Graph extension requires it on every declaration).')
param displayName string

@description('Required. Its application (client) id.')
param appId string

@description('Required. Default host name of the function app that serves the dashboard, e.g. <name>.azurewebsites.net.')
param functionHostName string

// MSAL.js returns to the page it signed in from (authorization code + PKCE): the deployed dashboard and the one a
// local host serves (func start, port 7071).
var redirectUris = [
  'https://${functionHostName}/api/dashboard/'
  'http://localhost:7071/api/dashboard/'
]

resource application 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  identifierUris: [
    'api://${appId}'
  ]
  spa: {
    redirectUris: redirectUris
  }
}

@description('Identifier URI of the API: prefix of its scopes (api://<appId>/Fleet.Access) and an accepted audience.')
output identifierUri string = 'api://${application.appId}'

@description('The dashboard\'s SPA redirect URIs.')
output redirectUris array = redirectUris
