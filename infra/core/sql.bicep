// Azure SQL logical server with Microsoft Entra-only authentication (no SQL logins, no
// passwords anywhere) and one serverless database. The app's identity becomes a database
// user through infra/hooks/postprovision.sh: Bicep cannot create contained users.
param location string
param tags object
param serverName string
param databaseName string

@description('Object id of the Entra administrator (user, group or service principal).')
param adminObjectId string
@description('Display name of the Entra administrator.')
param adminLogin string
@allowed([
  'User'
  'Group'
  'Application'
])
param adminPrincipalType string

param logAnalyticsWorkspaceId string

@description('Minutes of inactivity before the serverless database pauses; -1 never pauses. Resuming takes about a minute, during which predict scores degraded and persist retries, so a live service keeps -1.')
param autoPauseDelayMinutes int = -1

@description('Maximum vCores of the serverless database.')
param maxVCores int = 2

resource server 'Microsoft.Sql/servers@2021-11-01' = {
  // checkov:skip=CKV_AZURE_113: no VNet/private endpoint here; the firewall admits Azure services only (rule below) and every login needs an Entra token (Entra-only authentication)
  name: serverName
  location: location
  tags: tags
  properties: {
    version: '12.0'
    minimalTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    restrictOutboundNetworkAccess: 'Disabled'
    administrators: {
      administratorType: 'ActiveDirectory'
      azureADOnlyAuthentication: true
      login: adminLogin
      sid: adminObjectId
      principalType: adminPrincipalType
      tenantId: tenant().tenantId
    }
  }
}

// "Allow Azure services and resources to access this server" (0.0.0.0 - 0.0.0.0): Flex
// Consumption has no fixed outbound addresses without a VNet, so this is how the function
// app reaches the server. It admits traffic from any Azure tenant's resources, which is why
// the server accepts Entra tokens only: network reachability alone grants nothing.
resource allowAzureServices 'Microsoft.Sql/servers/firewallRules@2021-11-01' = {
  parent: server
  name: 'AllowAllWindowsAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
}

resource database 'Microsoft.Sql/servers/databases@2021-11-01' = {
  // checkov:skip=CKV_AZURE_229: zone-redundant serverless General Purpose is not offered in every region and costs more; the service degrades (scores without history, persist retries) rather than fails on a database outage
  // checkov:skip=CKV_AZURE_23: auditing is set once on the server (auditingSettings below) and covers every database; a database-level policy would audit twice
  // checkov:skip=CKV_AZURE_25: threat detection is set once on the server (securityAlertPolicies below, every alert type) and covers every database
  // checkov:skip=CKV_AZURE_26: same; the server's policy mails the subscription admins, and Defender for Cloud's security contacts receive the alerts
  // checkov:skip=CKV_AZURE_27: same; the server-level policy has emailAccountAdmins on
  parent: server
  name: databaseName
  location: location
  tags: tags
  sku: {
    name: 'GP_S_Gen5'
    tier: 'GeneralPurpose'
    family: 'Gen5'
    capacity: maxVCores
  }
  properties: {
    autoPauseDelay: autoPauseDelayMinutes
    minCapacity: json('0.5')
    maxSizeBytes: 34359738368
    zoneRedundant: false
    requestedBackupStorageRedundancy: 'Geo'
    collation: 'SQL_Latin1_General_CP1_CI_AS'
  }
}

// Server auditing to Log Analytics (SQLSecurityAuditEvents of the master database's
// diagnostic setting carry the audit of every database on the server).
resource auditing 'Microsoft.Sql/servers/auditingSettings@2021-11-01' = {
  parent: server
  name: 'default'
  properties: {
    state: 'Enabled'
    isAzureMonitorTargetEnabled: true
    // Kept 90 days: the Log Analytics workspace's retention (core/monitoring.bicep).
    retentionDays: 90
    // Who logged in (or failed to) and every change of users, roles, permissions and
    // schema. Not BATCH_COMPLETED_GROUP (the portal default): it would log every insert of
    // the persist function, hundreds a second, into Log Analytics.
    auditActionsAndGroups: [
      'SUCCESSFUL_DATABASE_AUTHENTICATION_GROUP'
      'FAILED_DATABASE_AUTHENTICATION_GROUP'
      'DATABASE_PRINCIPAL_CHANGE_GROUP'
      'DATABASE_ROLE_MEMBER_CHANGE_GROUP'
      'DATABASE_PERMISSION_CHANGE_GROUP'
      'SCHEMA_OBJECT_CHANGE_GROUP'
    ]
  }
}

resource masterDatabase 'Microsoft.Sql/servers/databases@2021-11-01' existing = {
  // checkov:skip=CKV_AZURE_23: a reference to the existing master database (the scope of the audit diagnostic setting), not a deployed resource; the server-level auditing covers it
  // checkov:skip=CKV_AZURE_25: same reference; the server-level threat detection covers it
  parent: server
  name: 'master'
}

resource auditDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'sql-audit-to-log-analytics'
  scope: masterDatabase
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'SQLSecurityAuditEvents'
        enabled: true
      }
    ]
  }
}

// Microsoft Defender for SQL threat detection, every alert type (billed per server).
resource threatDetection 'Microsoft.Sql/servers/securityAlertPolicies@2021-11-01' = {
  parent: server
  name: 'Default'
  properties: {
    state: 'Enabled'
    emailAccountAdmins: true
    disabledAlerts: []
  }
}

output serverName string = server.name
output serverFqdn string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
