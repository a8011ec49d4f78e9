// Every application setting of the function app, in one explicit object (no resources here:
// app/function.bicep applies it). tests/unit/test_infra.py reads the names below and fails
// when the code (shared/config.py) reads a setting this object does not set.
//
// Not set on purpose (the test's allow-list says the same):
//   AzureWebJobsStorage  - a connection string; storage is reached by identity through
//                          AzureWebJobsStorage__* (the account has shared keys disabled).
//   DATABASE_URL         - the local SQLite/PostgreSQL URL; SQL_CONNECTION_STRING wins over it.
// Not settable on Flex Consumption: FUNCTIONS_EXTENSION_VERSION, FUNCTIONS_WORKER_RUNTIME and
// the Python version come from functionAppConfig.runtime (app/function.bicep).
param identityClientId string
param storageAccountName string
param blobEndpoint string
param queueEndpoint string
param transactionsQueue string
param modelContainer string
param sqlServerFqdn string
param databaseName string
param signingKeySecretUri string
param applicationInsightsConnectionString string
param retrainSchedule string

var appSettings = {
  // Functions host storage and the app's own blobs and queues, by identity (no key). The
  // host and shared/storage/clients.py read the same names.
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__blobServiceUri: blobEndpoint
  AzureWebJobsStorage__queueServiceUri: queueEndpoint
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // DefaultAzureCredential in the app code picks the user-assigned identity by this id.
  AZURE_CLIENT_ID: identityClientId
  // Telemetry with an Entra token (the component has local authentication disabled).
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  TRANSACTIONS_QUEUE: transactionsQueue
  MODEL_CONTAINER: modelContainer
  // Entra managed identity (Uid = the identity's client id); there is no password to hold.
  SQL_CONNECTION_STRING: 'Driver={ODBC Driver 18 for SQL Server};Server=tcp:${sqlServerFqdn},1433;Database=${databaseName};Uid=${identityClientId};Authentication=ActiveDirectoryMsi;Encrypt=yes;TrustServerCertificate=no;Connection Timeout=30;'
  // Resolved by App Service from Key Vault with the identity; the value never appears here.
  MODEL_SIGNING_KEY: '@Microsoft.KeyVault(SecretUri=${signingKeySecretUri})'
  RETRAIN_SCHEDULE: retrainSchedule
  // The documented defaults (tests/unit/test_infra.py checks each equals shared/config.py's).
  RETRAIN_THRESHOLD: '1000'
  MIN_TRAINING_ROWS: '200'
  MODEL_REFRESH_SECONDS: '60'
  THRESHOLD_RULE: 'max_f1'
  HISTORY_TIMEOUT_MS: '250'
  ENQUEUE_TIMEOUT_MS: '5000'
  PREDICT_MAX_AGE_HOURS: '24'
  // Training: a bounded sample of the recent labeled population, sized for the 2 GB instance.
  TRAINING_WINDOW_DAYS: '90'
  TRAINING_MAX_ROWS: '400000'
  UNLABELED_AS_GENUINE_AFTER_DAYS: '0'
  // Training reads from the primary. With a read replica (Business Critical / Hyperscale read
  // scale-out), point these at it: ...;ApplicationIntent=ReadOnly;
  TRAINING_DATABASE_URL: ''
  TRAINING_SQL_CONNECTION_STRING: ''
  // The champion/challenger gate and its guard set.
  PROMOTION_TOLERANCE: '0.01'
  GATE_MIN_FRAUDS: '30'
  GATE_CONFIDENCE: '0.9'
  GUARD_TOLERANCE: '0.02'
  LABEL_MATURITY_DAYS: '14'
  GUARD_MAX_ROWS: '20000'
  LABEL_ORPHAN_DAYS: '7'
  // Decisions by expected cost (currency units of the amounts).
  DECISION_POLICY: 'cost'
  REVIEW_COST: '5'
  DECLINE_COST: '25'
  FRAUD_LOSS: 'amount'
  // Monitoring: drift of live traffic (PSI) recorded by the retrain timer, and the console's reads.
  DRIFT_RETRAIN_PSI: '0.25'
  DRIFT_WINDOW_HOURS: '168'
  DRIFT_SAMPLE_ROWS: '2000'
  MONITORING_TIMEOUT_MS: '5000'
}

output settings object = appSettings
