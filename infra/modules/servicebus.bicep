// Service Bus: one queue per pipeline hop, plus the alerts queue. Local (SAS) auth is off:
// senders and receivers are the apps' identities with queue-scoped roles (roles.bicep).
param namePrefix string
param location string
param queueNames array

// Standard tier: Microsoft-managed encryption at rest (customer-managed keys need Premium), and
// the public endpoint, as the apps have no VNet; with SAS off every call needs a token and a role.
resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: 'sb-${namePrefix}-${uniqueString(resourceGroup().id)}'
  location: location
  sku: {
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

// The platform's semantics the code relies on: peek-lock with 10 deliveries, then the
// dead-letter queue (python -m ops lists and replays it). The lock is renewed by the
// Functions host while a function runs (host.json maxAutoLockRenewalDuration).
resource queues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for name in queueNames: {
  parent: namespace
  name: name
  properties: {
    maxDeliveryCount: 10
    lockDuration: 'PT1M'
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P14D'
    // No duplicate detection: handlers are idempotent by message id, and `ops replay` resends
    // a dead letter with its own id, which duplicate detection would drop.
  }
}]

output namespaceName string = namespace.name
output fullyQualifiedNamespace string = '${namespace.name}.servicebus.windows.net'
