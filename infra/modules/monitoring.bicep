// Application Insights on a Log Analytics workspace. Local auth is off: only Entra tokens
// (the apps' identities, role Monitoring Metrics Publisher) may send telemetry.
param namePrefix string
param location string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${namePrefix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 90
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${namePrefix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

output workspaceId string = workspace.id
output appInsightsName string = appInsights.name
output appInsightsId string = appInsights.id
// An address (ingestion endpoint and resource id), not a credential: local auth is off.
output appInsightsConnectionString string = appInsights.properties.ConnectionString
