metadata description = 'Key Vault for drivers\' token caches: RBAC only (no access policies), purge protection, 90 days of soft delete, and the RSA key that wraps each cache\'s data key (envelope encryption, shared/accounts/vault.py), rotated by policy. The function app\'s identity may wrap and unwrap with that one key and do nothing else; no person gets a role here (reading drivers\' tokens is a deliberate grant, never a default).'

@description('Required. Name of the vault (3-24 letters, digits and hyphens, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Required. Azure region of the vault.')
param location string

@description('Optional. Tags of the vault. Defaults to {}.')
param tags object = {}

@description('Optional. Name of the RSA key that wraps the data keys of drivers\' token caches (its versionless URI is TOKEN_KEY_ID). Defaults to token-key.')
param keyName string = 'token-key'

@description('Optional. Size of that RSA key in bits. Defaults to 3072.')
@allowed([
  3072
  4096
])
param keySize int = 3072

@description('Optional. Key Vault makes a new version of the key this long after the current one was created (ISO 8601 duration). New caches are wrapped with the newest version; older versions stay and still unwrap the caches they wrapped. Defaults to P90D.')
param keyRotationInterval string = 'P90D'

@description('Optional. Each version expires this long after it was created (ISO 8601 duration, longer than keyRotationInterval). An expired version wraps nothing new but still unwraps (Key Vault allows unwrap outside a key\'s validity window), and every refresh of a driver\'s token re-seals the cache with the newest version. Defaults to P2Y.')
param keyExpiryTime string = 'P2Y'

@description('Optional. Days a deleted vault or key can still be recovered (7-90); purge protection keeps anyone from shortening it. Defaults to 90.')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Required. Object id of the function app\'s identity: Key Vault Crypto Service Encryption User on the key (read its public part, wrap, unwrap).')
param functionPrincipalId string

// Built-in role: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/security
// Key Vault Crypto Service Encryption User: keys/read, keys/wrapKey/action, keys/unwrapKey/action. Nothing broader
// (no Crypto User: encrypt, decrypt, sign; no Crypto Officer: create, delete, rotate by hand).
var cryptoServiceEncryptionUserRoleId = 'e147488a-f6f5-4113-8e2d-b22465e65bf6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // checkov:skip=CKV_AZURE_109: no VNet in this template: the Flex Consumption app reaches the vault over its public endpoint; every request needs an Entra ID token and an RBAC role on the key
    // checkov:skip=CKV_AZURE_189: same reason: public network access stays on, with Entra ID and RBAC on every request
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Azure RBAC decides every data-plane call; access policies are never read (and none exist).
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'None'
    }
  }
}

resource key 'Microsoft.KeyVault/vaults/keys@2023-07-01' = {
  parent: vault
  name: keyName
  properties: {
    // checkov:skip=CKV_AZURE_112: HSM-backed keys need the Premium tier; a standard-tier software key wraps data keys of refresh tokens, which a stolen database copy alone still cannot open
    // checkov:skip=CKV_AZURE_40: an exp date would be a fixed timestamp (no utcNow in this template); the rotation policy below sets expiryTime on every version it creates
    kty: 'RSA'
    keySize: keySize
    keyOps: [
      'wrapKey'
      'unwrapKey'
    ]
    attributes: {
      enabled: true
      exportable: false
    }
    rotationPolicy: {
      attributes: {
        expiryTime: keyExpiryTime
      }
      lifetimeActions: [
        {
          trigger: {
            timeAfterCreate: keyRotationInterval
          }
          action: {
            type: 'rotate'
          }
        }
        {
          trigger: {
            timeBeforeExpiry: 'P30D'
          }
          action: {
            type: 'notify'
          }
        }
      ]
    }
  }
}

// Scoped to the key, not the vault: the app can use no other key that may ever be added here.
resource functionKeyUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(key.id, functionPrincipalId, cryptoServiceEncryptionUserRoleId)
  scope: key
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cryptoServiceEncryptionUserRoleId)
    principalId: functionPrincipalId
    principalType: 'ServicePrincipal'
  }
}

@description('Name of the vault.')
output name string = vault.name

@description('URI of the vault, e.g. https://<name>.vault.azure.net/.')
output vaultUri string = vault.properties.vaultUri

@description('Versionless identifier (JOSE kid, URI) of the wrapping key, the value of TOKEN_KEY_ID: the current version wraps, older ones still unwrap.')
output tokenWrapKid string = key.properties.keyUri
