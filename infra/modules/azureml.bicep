// The pipeline identity's role on an existing Azure Machine Learning workspace: it submits
// the fit jobs (shared/pipeline/azureml.py) and they run as it. AzureML Data Scientist allows
// creating and reading jobs in the workspace and nothing on its compute quotas or settings.
param workspaceName string
param principalId string

var dataScientist = 'f6c7c914-8db3-469d-8ca1-694a8f32e121'

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' existing = {
  name: workspaceName
}

resource submitter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: workspace
  name: guid(workspace.id, principalId, dataScientist)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', dataScientist)
  }
}
