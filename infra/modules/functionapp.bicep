// One function app on Flex Consumption: Python 3.11, a user-assigned identity for every
// connection (host storage, deployment package, the app's bindings and SDK clients).
param name string
param location string
@description('The azure.yaml service this app is (azd finds the app by its azd-service-name tag).')
param serviceName string
param identityId string
param identityClientId string
param storageAccountName string
param blobEndpoint string
param deploymentContainer string
param instanceMemoryMB int
param maximumInstanceCount int
@description('The app settings of this app (name: value); none of them is a secret.')
param appSettings object

// Settings the Functions host itself reads: its own storage, identity-based.
var hostSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy for Flex Consumption exists only in some regions; set zoneRedundant where the region has it
  name: 'plan-${name}'
  location: location
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_213: Flex Consumption has no App Service health check; the serving app answers GET /api/health for probes
  // checkov:skip=CKV_AZURE_212: zone redundancy and a minimum of instances are Premium/Dedicated features; Flex Consumption scales out on demand
  // checkov:skip=CKV_AZURE_222: public network access is how clients reach the prediction API and how Event Grid reaches the blob webhook; no VNet in this template
  // checkov:skip=CKV_AZURE_17: client certificates: callers authenticate with function keys, not mTLS
  name: name
  location: location
  tags: {
    'azd-service-name': serviceName
  }
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
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainer}'
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
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [for setting in items(union(hostSettings, appSettings)): {
        name: setting.key
        value: setting.value
      }]
    }
  }
}

// Basic-auth publishing (FTP and SCM) off: deployments authenticate with Entra (OIDC in CI).
resource ftp 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scm 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = app.name
output defaultHostName string = app.properties.defaultHostName
