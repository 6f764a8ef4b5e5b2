// Least-privilege role assignments for the two apps' identities.
//
//   pipeline: Storage Blob Data Owner and Storage Queue Data Contributor on the account (host
//             storage with blob-trigger receipts and leases, datasets, registry, the poison
//             queue); Azure Service Bus Data Owner on each queue it is triggered by, and on
//             those queues only; Sender on the other queues it hands runs and alerts to.
//
// Why Data Owner and not Data Receiver on the trigger queues: on Flex Consumption the
// platform scales a Service Bus trigger by target (active messages per instance) and reads
// each queue's message count with the app's own connection, a runtime-properties read that
// needs the Manage right. Receiver lacks it: scaling degrades and the scale controller logs
// "unauthorized". Data Owner is the only built-in data role with Manage; scoped to the four
// trigger queues it adds nothing on any other queue or on the namespace.
//   serving:  Storage Blob Data Owner on the account (host storage: keys and leases; the
//             registry, inference logs, feedback); Sender on the alerts queue only. No queue
//             role: it has no blob trigger.
//   both:     Monitoring Metrics Publisher on Application Insights (local auth is off).
param storageAccountName string
param namespaceName string
param appInsightsName string
param servingPrincipalId string
param pipelinePrincipalId string
param pipelineReceives array
param pipelineSends array
param servingSends array
@description('The operator (azd: the signed-in user): blob and queue data on the account, dead letters on the bus; empty for none.')
param operatorPrincipalId string = ''
param operatorPrincipalType string = 'User'

var roleIds = {
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  serviceBusDataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  serviceBusDataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  serviceBusDataReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: namespaceName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

var storageGrants = [
  { principal: pipelinePrincipalId, role: roleIds.blobDataOwner }
  { principal: pipelinePrincipalId, role: roleIds.queueDataContributor }
  { principal: servingPrincipalId, role: roleIds.blobDataOwner }
]

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for grant in storageGrants: {
  scope: account
  name: guid(account.id, grant.principal, grant.role)
  properties: {
    principalId: grant.principal
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.role)
  }
}]

resource receiveQueues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' existing = [for q in pipelineReceives: {
  parent: namespace
  name: q
}]

// Receive, and Manage for the scale controller's queue-length read (above); Owner includes Send,
// so the trigger queues need no Sender assignment of their own.
resource pipelineTriggerOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in pipelineReceives: {
  scope: receiveQueues[i]
  name: guid(namespace.id, q, pipelinePrincipalId, roleIds.serviceBusDataOwner)
  properties: {
    principalId: pipelinePrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataOwner)
  }
}]

resource pipelineSendQueues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' existing = [for q in pipelineSends: {
  parent: namespace
  name: q
}]

resource pipelineSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in pipelineSends: {
  scope: pipelineSendQueues[i]
  name: guid(namespace.id, q, pipelinePrincipalId, roleIds.serviceBusDataSender)
  properties: {
    principalId: pipelinePrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataSender)
  }
}]

resource servingSendQueues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' existing = [for q in servingSends: {
  parent: namespace
  name: q
}]

resource servingSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in servingSends: {
  scope: servingSendQueues[i]
  name: guid(namespace.id, q, servingPrincipalId, roleIds.serviceBusDataSender)
  properties: {
    principalId: servingPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.serviceBusDataSender)
  }
}]

resource telemetryRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for principal in [servingPrincipalId, pipelinePrincipalId]: {
  scope: appInsights
  name: guid(appInsights.id, principal, roleIds.monitoringMetricsPublisher)
  properties: {
    principalId: principal
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.monitoringMetricsPublisher)
  }
}]

// The operator: drop datasets and read the registry (Blob Data Contributor), list and replay
// poisoned blobs (Queue Data Contributor), list and replay dead letters (Receiver and Sender
// on the namespace: python -m ops receives from each $deadletterqueue and sends back).
var operatorGrants = empty(operatorPrincipalId) ? [] : [
  { scope: 'storage', role: roleIds.blobDataContributor }
  { scope: 'storage', role: roleIds.queueDataContributor }
  { scope: 'bus', role: roleIds.serviceBusDataReceiver }
  { scope: 'bus', role: roleIds.serviceBusDataSender }
]

resource operatorStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for grant in filter(operatorGrants, g => g.scope == 'storage'): {
  scope: account
  name: guid(account.id, operatorPrincipalId, grant.role)
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.role)
  }
}]

resource operatorBusRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for grant in filter(operatorGrants, g => g.scope == 'bus'): {
  scope: namespace
  name: guid(namespace.id, operatorPrincipalId, grant.role)
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', grant.role)
  }
}]
