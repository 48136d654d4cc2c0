metadata description = 'The API\'s Entra app registration: multi-tenant, v2 access tokens, the app roles and the Fleet.Access scope of shared/auth/app_roles.json, its service principal, a federated credential trusting the function app\'s identity (Graph in customer tenants without a secret) and Platform.Admin for the deployer. Identifier URI and dashboard redirect URIs follow in api-registration-uris.bicep, once the appId and the app\'s host name exist.'

extension microsoftGraphV1

@description('Required. Unique name of the application (the Graph extension\'s idempotency key): same environment, same registration.')
param uniqueName string

@description('Required. Display name shown in sign-in, consent and the Entra admin center.')
param displayName string

@description('Required. Object id of the function app identity\'s service principal: the subject of the federated credential.')
param functionPrincipalId string

@description('Optional. Object id of the user, group or service principal given Platform.Admin (azd: AZURE_PRINCIPAL_ID); empty assigns nothing. Defaults to \'\'.')
param adminPrincipalId string = ''

// The one definition of the roles and scopes, shared with shared/auth (enforcement) and the local provider's seed.
var definition = loadJsonContent('../../shared/auth/app_roles.json')

// Graph reads only these fields; the JSON's "scope" (where a membership applies) is the code's business.
var appRoles = [for role in definition.appRoles: {
  id: role.id
  value: role.value
  displayName: role.displayName
  description: role.description
  allowedMemberTypes: role.allowedMemberTypes
  isEnabled: true
}]

// 'User': a user may consent to Fleet.Access for themselves in the home tenant; customer tenants consent as admins.
var permissionScopes = [for scope in definition.scopes: {
  id: scope.id
  value: scope.value
  type: 'User'
  adminConsentDisplayName: scope.adminConsentDisplayName
  adminConsentDescription: scope.adminConsentDescription
  userConsentDisplayName: scope.userConsentDisplayName
  userConsentDescription: scope.userConsentDescription
  isEnabled: true
}]

// Azure CLI's well-known client id: pre-authorized for the delegated scope, so `az account get-access-token
// --resource api://<appId>` works without a consent prompt (the token still carries only the caller's roles).
var azureCliAppId = '04b07795-8ddb-461a-bbee-02f9e1bf7b46'

var platformAdminRoleId = filter(definition.appRoles, role => role.value == 'Platform.Admin')[0].id

// What a customer tenant's admin consents to besides the API itself: the Graph application permissions the app uses
// for consented drivers (calendar sync and Teams meetings), the same ones graph-app-roles.bicep grants at home.
var graphApplicationPermissions = [
  'Calendars.Read'
  'OnlineMeetings.ReadWrite.All'
]

// Microsoft Graph's well-known application id, the same in every tenant.
var microsoftGraphAppId = '00000003-0000-0000-c000-000000000000'

// The function app's identity is a managed identity of this tenant: its tokens are issued by this tenant's v2 endpoint.
var federationIssuer = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'

resource microsoftGraph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: microsoftGraphAppId
}

resource application 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  // Customer tenants (company fleets) are onboarded by admin consent; no personal Microsoft accounts.
  signInAudience: 'AzureADMultipleOrgs'
  api: {
    requestedAccessTokenVersion: 2
    oauth2PermissionScopes: permissionScopes
    preAuthorizedApplications: [
      {
        appId: azureCliAppId
        delegatedPermissionIds: [for scope in definition.scopes: scope.id]
      }
    ]
  }
  appRoles: appRoles
  requiredResourceAccess: [
    {
      resourceAppId: microsoftGraphAppId
      resourceAccess: [for permission in graphApplicationPermissions: {
        id: filter(microsoftGraph.appRoles, role => role.value == permission && contains(role.allowedMemberTypes, 'Application'))[0].id
        type: 'Role'
      }]
    }
  ]

  // No secret, no certificate: the function app presents a token of its managed identity as the client assertion.
  resource functionIdentityCredential 'federatedIdentityCredentials@v1.0' = {
    name: '${application.uniqueName}/function-app-identity'
    description: 'The function app\'s user-assigned managed identity acts as this app (Graph in customer tenants).'
    issuer: federationIssuer
    subject: functionPrincipalId
    audiences: [
      'api://AzureADTokenExchange'
    ]
  }
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: application.appId
}

resource platformAdmin 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (!empty(adminPrincipalId)) {
  principalId: adminPrincipalId
  resourceId: servicePrincipal.id
  appRoleId: platformAdminRoleId
}

@description('Application (client) id of the API: the audience of its tokens.')
output appId string = application.appId

@description('Unique name of the application, for the identifier URI step.')
output uniqueName string = application.uniqueName

@description('Display name of the application.')
output displayName string = application.displayName

@description('Object id of the API\'s service principal in this tenant.')
output servicePrincipalId string = servicePrincipal.id

@description('The app role values declared (from shared/auth/app_roles.json).')
output appRoleValues array = [for role in definition.appRoles: role.value]
