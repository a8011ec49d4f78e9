// Every Azure role the function app's identity holds, each on the narrowest scope that
// works. Management roles (Owner, Contributor) are never needed: the app touches data only.
// The SQL database permissions are granted inside the database by infra/hooks/postprovision.sh.
param principalId string
param storageAccountName string
param queueNames array
param keyVaultName string
param signingKeySecretName string
param applicationInsightsName string

// Built-in role definition ids (identical in every tenant).
var roleIds = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [for name in queueNames: {
  parent: queueService
  name: name
}]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource signingKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: signingKeySecretName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Storage Blob Data Owner on the account. The Functions host requires Owner (not
// Contributor) for an identity-based AzureWebJobsStorage: it creates its containers
// (azure-webjobs-hosts, azure-webjobs-secrets) and keeps the function keys and the timer
// trigger's singleton locks there as blobs with leases. The same role covers the app's own
// blob use: model versions in `models` (read, publish, lease for the one-retrain-at-a-time
// lock) and Flex Consumption reading the deployment package from `app-package`.
resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roleIds.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor on the two queues only (transactions, transactions-poison),
// not the account. The queue trigger alone would need Reader + Message Processor, but the
// host also moves a failing message to the poison queue (add), predict enqueues (add), and
// the operator CLI's `poison requeue` reads and deletes poison messages and re-adds them:
// Contributor is the one built-in role that holds all of these, and it is a superset of
// Queue Data Reader, Message Processor and Message Sender, which are therefore not assigned.
resource queueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (name, i) in queueNames: {
  name: guid(queues[i].id, principalId, roleIds.storageQueueDataContributor)
  scope: queues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

// Key Vault Secrets User on the one secret (not the vault): App Service resolves the
// MODEL_SIGNING_KEY Key Vault reference with this identity and may read nothing else.
resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(signingKey.id, principalId, roleIds.keyVaultSecretsUser)
  scope: signingKey
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Metrics Publisher on the Application Insights component: it disables local
// (instrumentation key) authentication, so the host sends telemetry with an Entra token.
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, principalId, roleIds.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
