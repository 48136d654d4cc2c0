metadata description = 'Grants the function app\'s identity Microsoft Graph application permissions, so calendar sync and Teams meetings need no client secret. Needs a deployer allowed to grant app roles (Privileged Role Administrator or Global Administrator).'

extension microsoftGraphV1

@description('Required. Object id of the function app identity\'s service principal.')
param principalId string

// The Graph calls the code makes: calendarView delta (read) and onlineMeetings/createOrGet (write).
var grantedPermissions = [
  'Calendars.Read'
  'OnlineMeetings.ReadWrite.All'
]

// Microsoft Graph's well-known application id, the same in every tenant.
var microsoftGraphAppId = '00000003-0000-0000-c000-000000000000'

resource microsoftGraph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: microsoftGraphAppId
}

resource grants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for permission in grantedPermissions: {
  principalId: principalId
  resourceId: microsoftGraph.id
  appRoleId: filter(microsoftGraph.appRoles, role => role.value == permission && contains(role.allowedMemberTypes, 'Application'))[0].id
}]

@description('The Microsoft Graph application permissions granted.')
output grantedPermissions array = grantedPermissions
