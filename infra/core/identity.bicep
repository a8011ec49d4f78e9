// The function app's user-assigned managed identity. It exists before the app, so its
// role assignments (storage, Key Vault, Application Insights) are in place when the host
// first starts, and it survives a re-created app (the SQL database user stays valid).
param location string
param tags object
param name string

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
