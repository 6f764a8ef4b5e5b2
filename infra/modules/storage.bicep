// The storage account: the app's containers (shared/ modules own their layout), the
// Functions hosts' storage (AzureWebJobsStorage, identity-based), the Flex deployment
// packages, and the platform's poison queue. Shared keys are off: identities only.
param namePrefix string
param location string
param inferenceLogRetentionDays int
param monitoringRetentionDays int
param workspaceId string

// Every container the code reads or writes; tests/deploy/test_infra.py keeps this list and
// the code in step. The Functions host creates its own (azure-webjobs-hosts, -secrets).
var dataContainers = [
  'datasets'
  'quarantine'
  'runs'
  'registry'
  'inference-logs'
  'feedback'
  'monitoring'
  'exams'
  // Event Grid's dead-letter destination (modules/eventgrid.bicep); python -m ops replays from it
  'eventgrid-deadletter'
]

var servingPackageContainer = 'app-package-serving'
var pipelinePackageContainer = 'app-package-pipeline'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_43: the name is built to the rules (st + lower-case prefix + uniqueString, take 24), which checkov cannot evaluate
  // checkov:skip=CKV_AZURE_35: no virtual network in this template: Flex apps without VNet integration and Event Grid reach the account over its public endpoint; access is identity-only (shared keys off): an Entra token and an RBAC role are the gate
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: public network access is needed without a VNet; every request needs an Entra token and an RBAC role
  name: take('st${namePrefix}${uniqueString(resourceGroup().id)}', 24)
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_GRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    encryption: {
      requireInfrastructureEncryption: true
      keySource: 'Microsoft.Storage'
      services: {
        blob: { enabled: true, keyType: 'Account' }
        queue: { enabled: true, keyType: 'Account' }
      }
    }
    sasPolicy: {
      expirationAction: 'Log'
      sasExpirationPeriod: '0.01:00:00'
    }
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for name in concat(dataContainers, [servingPackageContainer, pipelinePackageContainer]): {
  parent: blobService
  name: name
  properties: {
    publicAccess: 'None'
  }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

// The Functions host writes a blob that failed poisonBlobThreshold (5) times here; it would
// create it itself, declared so that `python -m ops list` finds it before the first one.
resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: 'webjobs-blobtrigger-poison'
}

// Inference logs and monitoring reports grow without end; keep a window of each.
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'inference-logs-retention'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['inference-logs/']
            }
            actions: {
              baseBlob: {
                delete: { daysAfterModificationGreaterThan: inferenceLogRetentionDays }
              }
            }
          }
        }
        {
          name: 'monitoring-retention'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: ['blockBlob']
              prefixMatch: ['monitoring/']
            }
            actions: {
              baseBlob: {
                delete: { daysAfterModificationGreaterThan: monitoringRetentionDays }
              }
            }
          }
        }
      ]
    }
  }
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: blobService
  name: 'to-log-analytics'
  properties: {
    workspaceId: workspaceId
    logs: [
      { category: 'StorageRead', enabled: true }
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: queueService
  name: 'to-log-analytics'
  properties: {
    workspaceId: workspaceId
    logs: [
      { category: 'StorageRead', enabled: true }
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
  }
}

output accountName string = account.name
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output servingPackageContainer string = servingPackageContainer
output pipelinePackageContainer string = pipelinePackageContainer
