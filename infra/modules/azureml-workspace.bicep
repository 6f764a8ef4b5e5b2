// An Azure Machine Learning workspace for the azureml fit backend (shared/pipeline/azureml.py),
// deployed by main.bicep only with fitBackendAzureML=true and azureMLWorkspaceName empty. With a
// workspace name given, main.bicep creates nothing here and modules/azureml.bicep only grants the
// role on that workspace, as before.
//
// What a workspace requires, each created here but Application Insights (the monitoring
// module's): a storage account (its default datastores: the job's code snapshot, logs and
// outputs), a Key Vault (connection secrets; none are written by this template) and, on its first
// image build, a container registry, which Azure ML creates itself when the workspace names none.
// The environment the jobs run in, mlops-fit, is registered here from requirements.txt; the
// pipeline identity gets AzureML Data Scientist on the workspace from modules/azureml.bicep, the
// same module the existing-workspace route uses, and here a data role on the workspace's storage.
//
// Shared keys are off on the storage account and the workspace reaches its datastores with
// identities (systemDatastoresAuthMode 'Identity', GA in 2025-06-01; Azure ML documents a
// workspace on a shared-key-disabled account as a preview feature).
param name string
param namePrefix string
param location string
@description('The resource id of the Application Insights the workspace reports to (modules/monitoring.bicep).')
param appInsightsId string
@description('The pipeline app\'s user-assigned identity: attached to the workspace, so serverless jobs can run as it.')
param pipelineIdentityId string
param pipelinePrincipalId string
@description('The environment the fit jobs run in (main.bicep sets MLOPS_AZUREML_ENVIRONMENT to azureml:<this>@latest).')
param environmentName string

// The base image of the job's environment. Azure ML's own curated images are referenced by their
// full registry address, and an environment built from a conda file must name one (the API takes
// an image or a Docker build context, nothing else): this is the Ubuntu 22.04 + conda image Azure
// ML's documentation uses for custom conda environments, and the one registry address in infra/.
// It is a parameter, so a deployment may point it at a registry of its own.
@description('The base image of the mlops-fit environment (an Azure ML curated image).')
param baseImage string = 'mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest'

var roleIds = {
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
}

// The job's packages: requirements.txt's pinned lines (comments and blank lines dropped), so the
// job runs what the pipeline app runs. Python 3.11, as the function apps (functionapp.bicep).
// tests/deploy/test_azureml_workspace.py evaluates these three expressions and compares the pip
// list with requirements.txt. (No map(): checkov's Bicep parser knows filter() but not map().)
// Interpolation, not concat(): the linter's prefer-interpolation rule warns on concat of strings.
var requirementLines = split(replace(loadTextContent('../../requirements.txt'), '\r', ''), '\n')
var pins = filter(requirementLines, line => !empty(trim(line)) && !startsWith(trim(line), '#'))
var condaFile = 'name: ${environmentName}\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n    - ${join(pins, '\n    - ')}\n'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_43: the name is built to the rules (stml + lower-case prefix + uniqueString, take 24), which checkov cannot evaluate
  // checkov:skip=CKV_AZURE_35: no virtual network in this template: serverless jobs and the pipeline app reach the workspace's storage over its public endpoint; access is identity-only (shared keys off): an Entra token and an RBAC role are the gate
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: public network access is needed without a virtual network; every request needs an Entra token and an RBAC role
  name: take('stml${namePrefix}${uniqueString(resourceGroup().id, 'azureml')}', 24)
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_GRS'
  }
  properties: {
    accessTier: 'Hot'
    // Azure ML's default datastores are blob containers and a file share: no hierarchical namespace
    isHnsEnabled: false
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
        file: { enabled: true, keyType: 'Account' }
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

resource vault 'Microsoft.KeyVault/vaults@2024-11-01' = {
  name: take('kvml${namePrefix}${uniqueString(resourceGroup().id, 'azureml')}', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Azure RBAC, no access policies. Soft delete with purge protection: a deleted vault stays
    // recoverable for the retention period and its name stays taken (docs/deploying.md).
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enablePurgeProtection: true
    // Nothing but trusted Azure services (the workspace) reaches it; this template stores no secret in it.
    publicNetworkAccess: 'disabled'
    networkAcls: {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
    }
  }
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2025-06-01' = {
  // checkov:skip=CKV2_AZURE_49: no virtual network in this template: the pipeline app (Flex Consumption without VNet integration) submits jobs to the workspace's public endpoint; every call needs an Entra token and an RBAC role on the workspace
  // checkov:skip=CKV_AZURE_243: a private endpoint needs a managed or customer virtual network, which this template does not deploy (same reason as CKV2_AZURE_49)
  name: name
  location: location
  kind: 'Default'
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  identity: {
    // The system-assigned identity is the workspace's own (its storage, vault, registry); the
    // pipeline identity is attached so that a job with identity type managed runs as it.
    type: 'SystemAssigned,UserAssigned'
    userAssignedIdentities: {
      '${pipelineIdentityId}': {}
    }
  }
  properties: {
    friendlyName: name
    description: 'Fits over a spec\'s azureml_above_bytes, as command jobs on serverless compute (serverless-mlops).'
    storageAccount: storage.id
    keyVault: vault.id
    applicationInsights: appInsightsId
    systemDatastoresAuthMode: 'Identity'
    publicNetworkAccess: 'Enabled'
    hbiWorkspace: false
    v1LegacyMode: false
  }
}

resource fitEnvironment 'Microsoft.MachineLearningServices/workspaces/environments@2025-06-01' = {
  parent: workspace
  name: environmentName
  properties: {
    description: 'The fit job\'s packages: requirements.txt, as the pipeline app runs them.'
  }
}

// A version is immutable once created: named for its content, a changed requirements.txt adds a
// version (which @latest, the newest created, then names) and an unchanged one redeploys the same.
resource environmentVersion 'Microsoft.MachineLearningServices/workspaces/environments/versions@2025-06-01' = {
  parent: fitEnvironment
  name: uniqueString(condaFile, baseImage)
  properties: {
    description: 'requirements.txt on ${baseImage}'
    image: baseImage
    condaFile: condaFile
    osType: 'Linux'
    autoRebuild: 'Disabled'
  }
}

// The pipeline identity uploads the job's code snapshot to the workspace's default datastore and
// the job (running as the same identity) reads it and writes its logs and outputs: with shared
// keys off, that is a data role on the account.
resource pipelineStorageRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, pipelinePrincipalId, roleIds.blobDataContributor)
  properties: {
    principalId: pipelinePrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.blobDataContributor)
  }
}

output name string = workspace.name
output resourceGroupName string = resourceGroup().name
output subscriptionId string = subscription().subscriptionId
output environmentName string = fitEnvironment.name
