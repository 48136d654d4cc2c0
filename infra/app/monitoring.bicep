metadata description = 'Fleet health in Azure Monitor: a workbook over the app\'s OpenTelemetry metrics (shared/observability/metrics.json, customMetrics in Application Insights) and log alert rules with the thresholds below. docs/operations.md has a runbook section per alert.'

@description('Required. Name of the Application Insights component the app sends its telemetry to.')
param applicationInsightsName string

@description('Required. Azure region of the workbook and the alert rules.')
param location string

@description('Optional. Tags of the workbook and the alert rules. Defaults to {}.')
param tags object = {}

@description('Optional. Resource id of the action group the alerts notify (e-mail, SMS, webhook, ITSM); \'\' fires them without notifying anyone (they still show in Azure Monitor). Defaults to \'\'.')
param actionGroupId string = ''

@description('Optional. Whether the alert rules evaluate. Defaults to true.')
param alertsEnabled bool = true

@description('Optional. Ingestion lag alert: a partition whose worst batch lag (enqueued in Event Hubs → batch committed, carlink.ingest.lag) exceeds this many minutes within 15 minutes. Event Hubs keep events 7 days, so lag is delay, not loss. Defaults to 5.')
@minValue(1)
@maxValue(1440)
param lagMinutes int = 5

@description('Optional. Partition not progressing: a partition that has committed no batch (carlink.ingest.batches) for this many minutes while events waited for it all that time (carlink.ingest.backlog never 0), typically a batch failing and retried for ever, or a consumer that does not run. A quiet partition (backlog 0) does not fire; without backlog figures the rule falls back to "no batch for this many minutes". Defaults to 15.')
@minValue(5)
@maxValue(300)
param stalledPartitionMinutes int = 15

@description('Optional. Dead-letter rate alert: dead-lettered plus parked messages, in percent of all telemetry messages in 15 minutes (carlink.ingest.messages). Defaults to 1.')
@minValue(1)
@maxValue(100)
param deadLetterPercent int = 1

@description('Optional. Dead-letter rate alert: fewest dead-lettered or parked messages in 15 minutes before the rate counts (one broken car at night is not an incident). Defaults to 10.')
@minValue(1)
param deadLetterMinimum int = 10

@description('Optional. Throttling alert: Graph or Azure Maps requests answered 429, in percent of that service\'s requests in 15 minutes (carlink.graph.requests, carlink.maps.requests; every retry counted). Defaults to 10.')
@minValue(1)
@maxValue(100)
param throttledPercent int = 10

@description('Optional. Command failure alert: failed plus expired commands, in percent of the commands that settled in 30 minutes (carlink.commands.outcomes). Defaults to 20.')
@minValue(1)
@maxValue(100)
param commandFailurePercent int = 20

@description('Optional. Command failure alert: fewest settled commands in 30 minutes before the rate counts. Defaults to 5.')
@minValue(1)
param commandMinimum int = 5

@description('Optional. Function failure alert: failed invocations (Application Insights requests) plus failed Event Hubs batches (carlink.ingest.batches, outcome failed) in 15 minutes. Defaults to 5.')
@minValue(1)
param functionFailureCount int = 5

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// customMetrics rows of the OpenTelemetry distro: `name` is the metric's name, attributes are customDimensions; a
// histogram arrives per export interval as valueSum / valueCount / valueMin / valueMax (no buckets, so no
// percentiles in Azure: the workbook shows the mean and the worst).
var lagQuery = 'customMetrics | where name == "carlink.ingest.lag" | extend partition = tostring(customDimensions.partition), fn = tostring(customDimensions["function"]) | summarize worstSeconds = max(valueMax), meanSeconds = sum(valueSum) / sum(valueCount) by bin(timestamp, 5m), fn, partition | order by timestamp asc'
var throughputQuery = 'customMetrics | where name == "carlink.ingest.messages" | extend outcome = tostring(customDimensions.outcome) | summarize messages = sum(valueSum) by bin(timestamp, 5m), outcome | order by timestamp asc'
var samplesQuery = 'customMetrics | where name == "carlink.ingest.samples" | extend outcome = tostring(customDimensions.outcome) | summarize samples = sum(valueSum) by bin(timestamp, 5m), outcome | order by timestamp asc'
var errorsQuery = 'customMetrics | where name == "carlink.ingest.messages" | extend outcome = tostring(customDimensions.outcome), reason = tostring(customDimensions.reason) | where outcome in ("dead_letter", "parked") | summarize messages = sum(valueSum) by outcome, reason | order by messages desc'
var backlogQuery = 'customMetrics | where name == "carlink.ingest.backlog" | extend hub = tostring(customDimensions.hub), partition = tostring(customDimensions.partition) | summarize events = max(valueMax) by bin(timestamp, 5m), series = strcat(hub, "/", partition) | order by timestamp asc'
var batchesQuery = 'customMetrics | where name == "carlink.ingest.batches" | extend fn = tostring(customDimensions["function"]), partition = tostring(customDimensions.partition), outcome = tostring(customDimensions.outcome) | summarize batches = sum(valueSum), last = max(timestamp) by fn, partition, outcome | order by fn asc, partition asc'
var requestUnitsQuery = 'customMetrics | where name == "carlink.cosmos.request_charge" | extend container = tostring(customDimensions.container), operation = tostring(customDimensions.operation) | summarize requestUnits = sum(valueSum) by bin(timestamp, 5m), container | order by timestamp asc'
var throttlingQuery = 'customMetrics | where name in ("carlink.graph.requests", "carlink.maps.requests") | extend outcome = tostring(customDimensions.outcome) | summarize requests = sum(valueSum), throttled = sumif(valueSum, outcome == "throttled") by bin(timestamp, 5m), service = name | order by timestamp asc'
var commandsQuery = 'customMetrics | where name == "carlink.commands.outcomes" | extend command = tostring(customDimensions.command), status = tostring(customDimensions.status), reason = tostring(customDimensions.reason) | summarize commands = sum(valueSum) by command, status, reason | order by commands desc'
var commandLatencyQuery = 'customMetrics | where name == "carlink.commands.latency" | extend command = tostring(customDimensions.command), status = tostring(customDimensions.status) | summarize meanSeconds = sum(valueSum) / sum(valueCount), worstSeconds = max(valueMax), commands = sum(valueCount) by command, status'
var carsQuery = 'customMetrics | where name in ("carlink.calendar.agenda_pushes", "carlink.accounts.signins", "carlink.iothub.c2d_undeliverable") | summarize count_ = sum(valueSum) by name, dimensions = tostring(customDimensions) | order by name asc'
var functionFailuresQuery = 'requests | where success == false | summarize failures = count() by bin(timestamp, 5m), operation_Name | order by timestamp asc'

var workbookContent = {
  version: 'Notebook/1.0'
  items: [
    {
      type: 1
      name: 'intro'
      content: {
        json: '## Fleet health\nThe app\'s own metrics (names in shared/observability/metrics.json). Runbooks: docs/operations.md.'
      }
    }
    {
      type: 3
      name: 'lag'
      content: {
        version: 'KqlItem/1.0'
        title: 'Ingestion lag by partition (worst and mean seconds per 5 minutes)'
        query: lagQuery
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        size: 0
      }
    }
    {
      type: 3
      name: 'backlog'
      content: {
        version: 'KqlItem/1.0'
        title: 'Ingestion backlog by partition (events enqueued after the consumer\'s checkpoint, worst per 5 minutes)'
        query: backlogQuery
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        size: 0
      }
    }
    {
      type: 3
      name: 'batches'
      content: {
        version: 'KqlItem/1.0'
        title: 'Batches per partition (a partition whose last committed batch is old is not progressing)'
        query: batchesQuery
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
        size: 0
      }
    }
    {
      type: 3
      name: 'throughput'
      content: {
        version: 'KqlItem/1.0'
        title: 'Telemetry messages by outcome'
        query: throughputQuery
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        size: 0
      }
    }
    {
      type: 3
      name: 'samples'
      content: {
        version: 'KqlItem/1.0'
        title: 'Signal samples by outcome'
        query: samplesQuery
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        size: 0
      }
    }
    {
      type: 3
      name: 'errors'
      content: {
        version: 'KqlItem/1.0'
        title: 'Dead letters and parked messages by reason'
        query: errorsQuery
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
        size: 0
      }
    }
    {
      type: 3
      name: 'request-units'
      content: {
        version: 'KqlItem/1.0'
        title: 'Cosmos DB request units by container'
        query: requestUnitsQuery
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        size: 0
      }
    }
    {
      type: 3
      name: 'throttling'
      content: {
        version: 'KqlItem/1.0'
        title: 'Graph and Azure Maps requests and 429s'
        query: throttlingQuery
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        size: 0
      }
    }
    {
      type: 3
      name: 'commands'
      content: {
        version: 'KqlItem/1.0'
        title: 'Commands by outcome and reason'
        query: commandsQuery
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
        size: 0
      }
    }
    {
      type: 3
      name: 'command-latency'
      content: {
        version: 'KqlItem/1.0'
        title: 'Command latency, accepted → settled'
        query: commandLatencyQuery
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
        size: 0
      }
    }
    {
      type: 3
      name: 'cars'
      content: {
        version: 'KqlItem/1.0'
        title: 'Agenda pushes, sign-ins and undeliverable cloud-to-device messages'
        query: carsQuery
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'table'
        size: 0
      }
    }
    {
      type: 3
      name: 'function-failures'
      content: {
        version: 'KqlItem/1.0'
        title: 'Failed function invocations'
        query: functionFailuresQuery
        queryType: 0
        resourceType: 'microsoft.insights/components'
        visualization: 'timechart'
        size: 0
      }
    }
  ]
  fallbackResourceIds: [
    applicationInsights.id
  ]
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // A workbook's name must be a GUID: this one is stable per Application Insights component (redeploys update it).
  name: guid(applicationInsights.id, 'fleet-health')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Fleet health'
    category: 'workbook'
    sourceId: applicationInsights.id
    serializedData: string(workbookContent)
  }
}

// Each query returns a row only when its condition holds; a rule fires when its query returns any row.
var alertRules = [
  {
    name: 'ingestion-lag'
    displayName: 'Ingestion lag over ${lagMinutes} minutes'
    description: 'A partition\'s worst batch lag (enqueued in Event Hubs → committed) is over ${lagMinutes} minutes. Runbook: docs/operations.md#alert-ingestion-lag.'
    severity: 2
    frequency: 'PT5M'
    window: 'PT15M'
    query: 'customMetrics | where name == "carlink.ingest.lag" | extend fn = tostring(customDimensions["function"]), partition = tostring(customDimensions.partition) | summarize worstSeconds = max(valueMax) by fn, partition | where worstSeconds > ${lagMinutes * 60}'
  }
  {
    name: 'partition-not-progressing'
    displayName: 'A partition is not progressing'
    description: 'A partition has committed no batch for ${stalledPartitionMinutes} minutes while events waited for it. Runbook: docs/operations.md#alert-partition-not-progressing.'
    severity: 1
    frequency: 'PT5M'
    window: 'PT6H'
    // Batches seen in the window (fn, partition) full-outer-joined with the backlog of the last N minutes: a partition
    // stalls when it committed nothing for N minutes and its backlog never fell to 0 meanwhile (or was not measured);
    // a consumer that never committed in the window but has a backlog fires too, a quiet partition does not.
    query: 'let since = ago(${stalledPartitionMinutes}m); let batches = customMetrics | where name == "carlink.ingest.batches" | extend fn = tostring(customDimensions["function"]), partition = tostring(customDimensions.partition), outcome = tostring(customDimensions.outcome) | summarize lastCommitted = maxif(timestamp, outcome == "committed"), failed = sumif(valueSum, outcome == "failed") by fn, partition; let waiting = customMetrics | where name == "carlink.ingest.backlog" and timestamp > since | extend fn = tostring(customDimensions["function"]), partition = tostring(customDimensions.partition) | summarize fewestWaiting = min(valueMin), mostWaiting = max(valueMax) by fn, partition; batches | join kind=fullouter waiting on fn, partition | extend fn = coalesce(fn, fn1), partition = coalesce(partition, partition1) | where (isempty(lastCommitted) or lastCommitted < since) and (isnull(fewestWaiting) or fewestWaiting > 0) | project fn, partition, lastCommitted, failed, fewestWaiting, mostWaiting'
  }
  {
    name: 'dead-letter-rate'
    displayName: 'Dead letters over ${deadLetterPercent} % of telemetry'
    description: 'Dead-lettered and parked messages are over ${deadLetterPercent} % of telemetry messages (at least ${deadLetterMinimum}) in 15 minutes. Runbook: docs/operations.md#alert-dead-letter-rate.'
    severity: 2
    frequency: 'PT5M'
    window: 'PT15M'
    query: 'customMetrics | where name == "carlink.ingest.messages" | extend outcome = tostring(customDimensions.outcome) | summarize total = sum(valueSum), contained = sumif(valueSum, outcome in ("dead_letter", "parked")) | where contained >= ${deadLetterMinimum} and contained * 100.0 / total > ${deadLetterPercent}'
  }
  {
    name: 'throttling-rate'
    displayName: 'Graph or Azure Maps throttling over ${throttledPercent} %'
    description: 'Over ${throttledPercent} % of the requests to Graph or Azure Maps were answered 429 in 15 minutes. Runbook: docs/operations.md#alert-throttling-rate.'
    severity: 3
    frequency: 'PT5M'
    window: 'PT15M'
    query: 'customMetrics | where name in ("carlink.graph.requests", "carlink.maps.requests") | extend outcome = tostring(customDimensions.outcome) | summarize total = sum(valueSum), throttled = sumif(valueSum, outcome == "throttled") by service = name | where throttled * 100.0 / total > ${throttledPercent}'
  }
  {
    name: 'command-failure-rate'
    displayName: 'Command failures over ${commandFailurePercent} %'
    description: 'Failed and expired commands are over ${commandFailurePercent} % of the commands that settled (at least ${commandMinimum}) in 30 minutes. Runbook: docs/operations.md#alert-command-failure-rate.'
    severity: 2
    frequency: 'PT10M'
    window: 'PT30M'
    query: 'customMetrics | where name == "carlink.commands.outcomes" | extend status = tostring(customDimensions.status) | summarize total = sum(valueSum), failed = sumif(valueSum, status in ("failed", "expired")) | where total >= ${commandMinimum} and failed * 100.0 / total > ${commandFailurePercent}'
  }
  {
    name: 'function-failures'
    displayName: 'Function failures'
    description: 'At least ${functionFailureCount} failed invocations or failed Event Hubs batches in 15 minutes. Runbook: docs/operations.md#alert-function-failures.'
    severity: 1
    frequency: 'PT5M'
    window: 'PT15M'
    query: 'union (requests | where success == false | summarize failures = count()), (customMetrics | where name == "carlink.ingest.batches" and tostring(customDimensions.outcome) == "failed" | summarize failures = toint(sum(valueSum))) | summarize failures = sum(failures) | where failures >= ${functionFailureCount}'
  }
]

resource alerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in alertRules: {
  name: '${applicationInsightsName}-${rule.name}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: alertsEnabled
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    scopes: [
      applicationInsights.id
    ]
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: empty(actionGroupId) ? [] : [
        actionGroupId
      ]
    }
  }
}]

@description('Resource id of the fleet health workbook.')
output workbookId string = workbook.id

@description('Names of the alert rules, in the order docs/operations.md lists their runbooks.')
output alertRuleNames array = [for (rule, i) in alertRules: alerts[i].name]
