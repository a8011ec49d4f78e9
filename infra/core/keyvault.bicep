// Key Vault holding the model signing key. Azure RBAC decides who reads it (no access
// policies); soft delete and purge protection keep a deleted key recoverable for 90 days.
param location string
param tags object
param name string

@secure()
param modelSigningKey string

var signingKeySecretName = 'model-signing-key'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: no VNet here; App Service resolves Key Vault references over the public endpoint and is not a trusted service for the firewall; reads need RBAC (Key Vault Secrets User on the one secret)
  // checkov:skip=CKV_AZURE_189: same reason; public network access stays on, authorization is Entra ID + RBAC only
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource signingKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  // checkov:skip=CKV_AZURE_41: an HMAC key that signs published models has no natural expiry; rotating it invalidates the signature of every published model (docs/deployment.md), so it is rotated deliberately, never by an expiry date
  parent: vault
  name: signingKeySecretName
  tags: tags
  properties: {
    value: modelSigningKey
    contentType: 'text/plain; HMAC-SHA256 key for model artifacts'
    attributes: {
      enabled: true
    }
  }
}

output name string = vault.name
output signingKeySecretName string = signingKey.name
// Without a version: App Service picks up a rotated secret (within 24 h, or on restart).
output signingKeySecretUri string = signingKey.properties.secretUri
