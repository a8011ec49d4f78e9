// The function app on the Flex Consumption plan (FC1, Linux): Python runtime, instance
// memory and scale limit in functionAppConfig, the deployment package in a blob container
// read with the app's user-assigned identity, app settings from app/appsettings.bicep.
param location string
param tags object
@description('Tags of the site only: azd finds the service by its azd-service-name tag, which must not be on the plan too.')
param serviceTags object
param planName string
param name string
param identityId string
param deploymentContainerUrl string
param maximumInstanceCount int
param instanceMemoryMB int
@description('Application settings (name: value), built in app/appsettings.bicep.')
param appSettings object

// The Python version the project targets (README, Dockerfile, CI): tests/unit/test_infra.py
// keeps the three in step.
var pythonVersion = '3.11'

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone-redundant Flex Consumption plans exist only in some regions; see docs/deployment.md to enable it where offered
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the payment switch and label sources call the API over the internet; callers authenticate with per-function keys (docs/deployment.md), a private endpoint needs a VNet this deployment does not have
  // checkov:skip=CKV_AZURE_17: callers are machines holding a function key; mutual TLS would need client certificates at every caller and is not what this API's contract asks for
  // checkov:skip=CKV_AZURE_212: Flex Consumption has no fixed worker count (numberOfWorkers); the platform scales instances per function, from zero up to maximumInstanceCount
  // checkov:skip=CKV_AZURE_213: Flex Consumption manages instance health itself and does not use the App Service health-check path; the app has no health endpoint to point it at
  name: name
  location: location
  tags: union(tags, serviceTags)
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    clientCertEnabled: false
    // Key Vault references (MODEL_SIGNING_KEY) are resolved with the user-assigned identity.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

output name string = site.name
output url string = 'https://${site.properties.defaultHostName}'
