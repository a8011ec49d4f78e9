// Fraud detection service on Azure: Function App (Flex Consumption), Storage (host, queue,
// models), Azure SQL (Entra-only), Key Vault (model signing key), Log Analytics +
// Application Insights. Deployed by `azd up` (see docs/deployment.md).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name: names the resource group and seeds the resource names.')
param environmentName string

@minLength(1)
@description('Region of every resource. It must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the principal running azd (AZURE_PRINCIPAL_ID); the default Entra admin of the SQL server.')
param principalId string

@description('Object id of the SQL server\'s Entra administrator (a user or, better, a group). Defaults to the deploying principal.')
param sqlAdminObjectId string = ''

@description('Display name of that administrator (UPN or group name); shown as the server admin login.')
param sqlAdminLogin string = 'entra-sql-admin'

@allowed([
  'User'
  'Group'
  'Application'
])
@description('Kind of principal the SQL administrator is.')
param sqlAdminPrincipalType string = 'User'

@minValue(1)
@maxValue(1000)
@description('Upper bound of Flex Consumption instances (caps cost and SQL connections).')
param maximumInstanceCount int = 40

@allowed([
  2048
  4096
])
@description('Instance memory of the function app. The retrain peaks at ~1.6 GB on 1M transactions: 2048 is the floor.')
param instanceMemoryMB int = 2048

@description('Six-field NCRONTAB (UTC) of the retrain timer.')
param retrainSchedule string = '0 0 */6 * * *'

@secure()
@description('HMAC key that signs published models. azd generates it once and keeps it in .azure/<env>/config.json, so re-provisioning does not rotate it.')
@metadata({
  azd: {
    type: 'generate'
    config: {
      length: 48
      noSpecial: true
    }
  }
})
param modelSigningKey string

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'fraud-detection'
}
// The name of the service in azure.yaml: azd finds the function app by this tag.
var serviceName = 'api'
var transactionsQueue = 'transactions'
// The poison queue's name is fixed by the Functions host: <queue>-poison.
var queueNames = [
  transactionsQueue
  '${transactionsQueue}-poison'
]
var modelContainer = 'models'
var deploymentContainer = 'app-package'
var databaseName = 'fraud'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module monitoring 'core/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
  }
}

module identity 'core/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'id-func-${resourceToken}'
  }
}

module storage 'core/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'st${resourceToken}'
    containers: [
      modelContainer
      deploymentContainer
    ]
    queues: queueNames
  }
}

module keyVault 'core/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'kv-${resourceToken}'
    modelSigningKey: modelSigningKey
  }
}

module sql 'core/sql.bicep' = {
  name: 'sql'
  scope: rg
  params: {
    location: location
    tags: tags
    serverName: 'sql-${resourceToken}'
    databaseName: databaseName
    adminObjectId: empty(sqlAdminObjectId) ? principalId : sqlAdminObjectId
    adminLogin: sqlAdminLogin
    adminPrincipalType: sqlAdminPrincipalType
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsWorkspaceId
  }
}

module roles 'app/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    queueNames: queueNames
    keyVaultName: keyVault.outputs.name
    signingKeySecretName: keyVault.outputs.signingKeySecretName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

module appSettings 'app/appsettings.bicep' = {
  name: 'appsettings'
  scope: rg
  params: {
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    transactionsQueue: transactionsQueue
    modelContainer: modelContainer
    sqlServerFqdn: sql.outputs.serverFqdn
    databaseName: sql.outputs.databaseName
    signingKeySecretUri: keyVault.outputs.signingKeySecretUri
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    retrainSchedule: retrainSchedule
  }
}

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    location: location
    tags: tags
    serviceTags: { 'azd-service-name': serviceName }
    planName: 'plan-${resourceToken}'
    name: 'func-${resourceToken}'
    identityId: identity.outputs.id
    deploymentContainerUrl: '${storage.outputs.blobEndpoint}${deploymentContainer}'
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    appSettings: appSettings.outputs.settings
  }
  // The identity must hold its roles before the host first starts: it reads the deployment
  // package and host storage, and resolves the Key Vault reference, with them.
  dependsOn: [
    roles
  ]
}

// Outputs: azd stores them in .azure/<env>/.env; the postprovision hook reads them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = functionApp.outputs.url
output AZURE_FUNCTION_IDENTITY_NAME string = identity.outputs.name
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_SQL_SERVER_NAME string = sql.outputs.serverName
output AZURE_SQL_SERVER_FQDN string = sql.outputs.serverFqdn
output AZURE_SQL_DATABASE_NAME string = sql.outputs.databaseName
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
