// The whole system in one resource group: storage, Service Bus, telemetry, two function apps.
//
//   azd up                     (azure.yaml: provision, package both apps, deploy, then the
//                               postdeploy hook subscribes the pipeline app to dataset events)
//   az deployment group create -g <group> -f infra/main.bicep -p infra/main.parameters.json ...
//
// Event Grid validates its webhook against the running pipeline app, whose blobs_extension
// key exists only once the code is there: infra/hooks/postdeploy.sh deploys
// modules/eventgrid.bicep after publishing (or run this template again with
// deployEventSubscription=true). docs/deploying.md has both routes.
//
// No connection strings or keys: every connection is identity-based (<connection>__* app
// settings and role assignments), shared-key access is off on the storage account, local
// (SAS) auth is off on Service Bus and on Application Insights. The Application Insights
// connection string is an address, not a credential: with local auth off, ingestion needs
// the app's Entra token (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).
targetScope = 'resourceGroup'

@description('Lower-case letters and digits, 3-11 characters: the start of every resource name.')
@minLength(3)
@maxLength(11)
param namePrefix string

param location string = resourceGroup().location

@description('Days an inference-log part is kept (monitoring reads at most the last window).')
@minValue(1)
param inferenceLogRetentionDays int = 30

@description('Days a monitoring report is kept.')
@minValue(1)
param monitoringRetentionDays int = 90

@description('Second run, after publishing: subscribe the pipeline app to BlobCreated events of datasets/.')
param deployEventSubscription bool = false

@description('Memory per instance of the pipeline app (Flex Consumption: 512, 2048 or 4096 MB). Fits need it.')
@allowed([512, 2048, 4096])
param pipelineInstanceMemoryMB int = 4096

@description('Memory per instance of the serving app.')
@allowed([512, 2048, 4096])
param servingInstanceMemoryMB int = 2048

@description('Most instances the pipeline app scales to (each fit holds one).')
param pipelineMaximumInstanceCount int = 10

@description('Most instances the serving app scales to.')
param servingMaximumInstanceCount int = 40

@description('Let a dataset over its spec\'s [training] azureml_above_bytes be fitted by an Azure Machine Learning command job (serverless compute) instead of in the pipeline app; with azureMLWorkspaceName empty, the template creates the workspace (modules/azureml-workspace.bicep).')
param fitBackendAzureML bool = false

@description('An existing Azure Machine Learning workspace in this resource group, with the environment mlops-fit registered (docs/deploying.md); the pipeline identity gets AzureML Data Scientist on it. Empty: with fitBackendAzureML, the template creates mlw-<namePrefix> and registers the environment itself.')
param azureMLWorkspaceName string = ''

@description('The VM size of the fit jobs (serverless compute).')
param azureMLInstanceType string = 'Standard_E4s_v3'

@description('A user or service principal given the data roles the quickstart and python -m ops need (azd passes the signed-in user); empty for none.')
param principalId string = ''

@description('The kind of principalId.')
@allowed(['User', 'ServicePrincipal', 'Group'])
param principalType string = 'User'

@description('The commit being deployed: recorded in every version\'s lineage (the workflow passes the Git SHA).')
param codeVersion string = ''

// The Azure ML workspace the fit jobs go to: the one named, or (empty name) mlw-<namePrefix>,
// created by modules/azureml-workspace.bicep. The jobs' environment is registered under this
// name there (by hand in a workspace of your own); shared/pipeline/azureml.py defaults to it too.
var createAzureMLWorkspace = fitBackendAzureML && empty(azureMLWorkspaceName)
var azureMLWorkspace = createAzureMLWorkspace ? 'mlw-${namePrefix}' : azureMLWorkspaceName
var azureMLEnvironment = 'mlops-fit'

// The queue names the code uses (shared/settings.py defaults), each an app setting below.
var queues = {
  convert: 'model-convert'
  register: 'model-register'
  promote: 'model-promote'
  retrain: 'model-retrain'
  alerts: 'model-alerts'
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    namePrefix: namePrefix
    location: location
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    namePrefix: namePrefix
    location: location
    inferenceLogRetentionDays: inferenceLogRetentionDays
    monitoringRetentionDays: monitoringRetentionDays
    workspaceId: monitoring.outputs.workspaceId
  }
}

module bus 'modules/servicebus.bicep' = {
  name: 'servicebus'
  params: {
    namePrefix: namePrefix
    location: location
    queueNames: [queues.convert, queues.register, queues.promote, queues.retrain, queues.alerts]
  }
}

// One identity per app, so each holds only the roles its functions need.
resource servingIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${namePrefix}-serving'
  location: location
}

resource pipelineIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${namePrefix}-pipeline'
  location: location
}

// App settings both apps need. MlopsStorage and ServiceBusConnection are the bindings'
// connection names; the __ forms make them identity-based (the code's SDK clients read the
// same names). Queue names and limits are the code's defaults, spelled out.
var commonSettings = {
  MLOPS_STORAGE_BACKEND: 'azure'
  MLOPS_BUS_BACKEND: 'azure'
  MLOPS_MODELS_DIR: 'models'
  MlopsStorage__blobServiceUri: storage.outputs.blobEndpoint
  MlopsStorage__queueServiceUri: storage.outputs.queueEndpoint
  MlopsStorage__credential: 'managedidentity'
  ServiceBusConnection__fullyQualifiedNamespace: bus.outputs.fullyQualifiedNamespace
  ServiceBusConnection__credential: 'managedidentity'
  MLOPS_QUEUE_ALERTS: queues.alerts
  MLOPS_BLOB_TRIGGER_SOURCE: 'eventgrid'
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.appInsightsConnectionString
  MLOPS_TRACE_PREDICT_SAMPLE: '0.01'
}

var servingSettings = union(commonSettings, {
  MLOPS_APP_ROLE: 'serving'
  MlopsStorage__clientId: servingIdentity.properties.clientId
  ServiceBusConnection__clientId: servingIdentity.properties.clientId
  MLOPS_MAX_REQUEST_BYTES: '4194304'
  MLOPS_MAX_BATCH_ROWS: '10000'
  MLOPS_ALIAS_CHECK_SECONDS: '2'
  MLOPS_INFERENCE_LOG_SAMPLE: '1.0'
  MLOPS_INFERENCE_LOG_FLUSH_SECONDS: '5'
  MLOPS_INFERENCE_LOG_MAX_BYTES: '67108864'
  MLOPS_MAX_STRING_CHARS: '256'
})

var pipelineSettings = union(commonSettings, {
  MLOPS_APP_ROLE: 'pipeline'
  MlopsStorage__clientId: pipelineIdentity.properties.clientId
  ServiceBusConnection__clientId: pipelineIdentity.properties.clientId
  MLOPS_QUEUE_CONVERT: queues.convert
  MLOPS_QUEUE_REGISTER: queues.register
  MLOPS_QUEUE_PROMOTE: queues.promote
  MLOPS_QUEUE_RETRAIN: queues.retrain
  MLOPS_MAX_DATASET_BYTES: '209715200'
  MLOPS_MONITOR_SCHEDULE: '0 */10 * * * *'
  MLOPS_MONITOR_WINDOW_MINUTES: '60'
  MLOPS_ROLLOUT: 'on'
  MLOPS_ROLLOUT_SCHEDULE: '*/30 * * * * *'
  MLOPS_DRIFT_SHARE: '0.5'
  MLOPS_CODE_VERSION: codeVersion
  MLOPS_TRANSIENT_RETRY_SECONDS: '120'
  // This app serves no requests: its fits need not yield the CPU (the local host, which
  // serves too, runs them at the idle priority).
  MLOPS_FIT_PRIORITY: 'normal'
  MLOPS_FIT_YIELD: '0'
  // Fits over a spec's azureml_above_bytes go to Azure ML when enabled (shared/pipeline/azureml.py)
  MLOPS_FIT_BACKEND: fitBackendAzureML ? 'azureml' : 'process'
  MLOPS_AZUREML_SUBSCRIPTION_ID: subscription().subscriptionId
  MLOPS_AZUREML_RESOURCE_GROUP: resourceGroup().name
  MLOPS_AZUREML_WORKSPACE: azureMLWorkspace
  MLOPS_AZUREML_IDENTITY_CLIENT_ID: pipelineIdentity.properties.clientId
  MLOPS_AZUREML_INSTANCE_TYPE: azureMLInstanceType
  MLOPS_AZUREML_ENVIRONMENT: 'azureml:${azureMLEnvironment}@latest'
})

module servingApp 'modules/functionapp.bicep' = {
  name: 'serving-app'
  params: {
    name: 'func-${namePrefix}-serving'
    serviceName: 'serving'
    location: location
    identityId: servingIdentity.id
    identityClientId: servingIdentity.properties.clientId
    storageAccountName: storage.outputs.accountName
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainer: storage.outputs.servingPackageContainer
    instanceMemoryMB: servingInstanceMemoryMB
    maximumInstanceCount: servingMaximumInstanceCount
    appSettings: servingSettings
  }
}

module pipelineApp 'modules/functionapp.bicep' = {
  name: 'pipeline-app'
  params: {
    name: 'func-${namePrefix}-pipeline'
    serviceName: 'pipeline'
    location: location
    identityId: pipelineIdentity.id
    identityClientId: pipelineIdentity.properties.clientId
    storageAccountName: storage.outputs.accountName
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainer: storage.outputs.pipelinePackageContainer
    instanceMemoryMB: pipelineInstanceMemoryMB
    maximumInstanceCount: pipelineMaximumInstanceCount
    appSettings: pipelineSettings
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    storageAccountName: storage.outputs.accountName
    namespaceName: bus.outputs.namespaceName
    appInsightsName: monitoring.outputs.appInsightsName
    servingPrincipalId: servingIdentity.properties.principalId
    pipelinePrincipalId: pipelineIdentity.properties.principalId
    pipelineReceives: [queues.convert, queues.register, queues.promote, queues.retrain]
    // the trigger queues' Data Owner role (for target-based scaling) includes Send on them
    pipelineSends: [queues.alerts]
    servingSends: [queues.alerts]
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
  }
}

// With fitBackendAzureML and no workspace named: a workspace of this deployment's own (its storage
// account and Key Vault, this template's Application Insights), the pipeline identity attached,
// and the environment the jobs run in.
module azuremlWorkspace 'modules/azureml-workspace.bicep' = if (createAzureMLWorkspace) {
  name: 'azureml-workspace'
  params: {
    name: azureMLWorkspace
    namePrefix: namePrefix
    location: location
    appInsightsId: monitoring.outputs.appInsightsId
    pipelineIdentityId: pipelineIdentity.id
    pipelinePrincipalId: pipelineIdentity.properties.principalId
    environmentName: azureMLEnvironment
  }
}

// The pipeline identity submits fit jobs to the workspace, and the jobs run as it: on the workspace
// named by azureMLWorkspaceName, or on the one created above (hence the dependency).
module azureml 'modules/azureml.bicep' = if (fitBackendAzureML) {
  name: 'azureml'
  params: {
    workspaceName: azureMLWorkspace
    principalId: pipelineIdentity.properties.principalId
  }
  dependsOn: [
    azuremlWorkspace
  ]
}

module events 'modules/eventgrid.bicep' = if (deployEventSubscription) {
  name: 'eventgrid'
  params: {
    storageAccountName: storage.outputs.accountName
    location: location
    functionAppName: pipelineApp.outputs.name
    functionName: 'train'
    container: 'datasets'
    deadLetterContainer: 'eventgrid-deadletter'
  }
}

// UPPER_CASE: azd writes each output into the environment (.azure/<env>/.env), where
// infra/hooks/postdeploy.sh and the workflow read them.
output AZURE_LOCATION string = location
output SERVING_APP_NAME string = servingApp.outputs.name
output PIPELINE_APP_NAME string = pipelineApp.outputs.name
output SERVING_URL string = 'https://${servingApp.outputs.defaultHostName}/api'
output STORAGE_ACCOUNT_NAME string = storage.outputs.accountName
output SERVICE_BUS_NAMESPACE string = bus.outputs.fullyQualifiedNamespace
// The fit jobs' workspace (empty without fitBackendAzureML): where `az ml job list` looks.
output AZUREML_WORKSPACE_NAME string = fitBackendAzureML ? azureMLWorkspace : ''
