"""DDL of the correlation tables: ``tasks`` (current state of every task), ``task_executions``
(one row per finished task), ``agent_status`` (latest state of each agent) and the
``task_groups`` view (live progress per group).

Each table is a ReplacingMergeTree keyed by its entity id with a ``version`` column: a
replayed write after a crash carries the same version and collapses, a correction (an
abandoned task that completes later) carries a higher one and wins.  Read them with
``FINAL`` (or ``argMax(…, version)``) for exactly one row per entity.
"""

from __future__ import annotations

TASKS_TTL_DAYS = 30
TASK_EXECUTIONS_TTL_DAYS = 730
DT = "DateTime64(3, 'UTC')"


def tasks_ddl(db: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {db}.tasks
(
    task_id String,
    version UInt64,
    state LowCardinality(String),
    task_type LowCardinality(String),
    group_key String,
    correlation_id String,
    agent LowCardinality(String),
    priority LowCardinality(String),
    requester_id String,
    created_at Nullable({DT}),
    started_at Nullable({DT}),
    finished_at Nullable({DT}),
    last_event_at {DT},
    deadline Nullable({DT}),
    progress Float64,
    retry_count UInt32,
    invalid_transitions UInt32,
    finished Bool,
    updated_at {DT}
)
ENGINE = ReplacingMergeTree(version)
ORDER BY task_id
TTL toDateTime(last_event_at) + INTERVAL {TASKS_TTL_DAYS} DAY""",
        f"""CREATE TABLE IF NOT EXISTS {db}.task_executions
(
    task_id String,
    version UInt64,
    finished_at {DT},
    created_at Nullable({DT}),
    queued_at Nullable({DT}),
    assigned_at Nullable({DT}),
    started_at Nullable({DT}),
    task_type LowCardinality(String),
    group_key String,
    correlation_id String,
    requester_id String,
    requester_type LowCardinality(String),
    request String,
    priority LowCardinality(String),
    agent LowCardinality(String),
    confidence Nullable(Float64),
    other_agents Map(String, Float64),
    outcome LowCardinality(String),
    success Bool,
    final_state LowCardinality(String),
    error String,
    retry_count UInt32,
    queue_wait_ms Nullable(Float64),
    execution_ms Nullable(Float64),
    review_ms Nullable(Float64),
    cycle_ms Nullable(Float64),
    paused_ms Float64,
    progress_checkpoints UInt32,
    invalid_transitions UInt32,
    events UInt32,
    updated_at {DT}
)
ENGINE = ReplacingMergeTree(version)
ORDER BY task_id
TTL toDateTime(finished_at) + INTERVAL {TASK_EXECUTIONS_TTL_DAYS} DAY""",
        f"""CREATE TABLE IF NOT EXISTS {db}.agent_status
(
    agent String,
    version UInt64,
    status LowCardinality(String),
    last_seen {DT},
    online_since Nullable({DT}),
    uptime_s Float64,
    active_tasks UInt32,
    cpu_percent Nullable(Float64),
    memory_mb Nullable(Float64),
    tasks_completed_today UInt32,
    tasks_finished_today UInt32,
    success_rate Nullable(Float64),
    avg_handling_ms Nullable(Float64),
    utilization Nullable(Float64),
    busy_s Float64,
    online_s Float64,
    updated_at {DT}
)
ENGINE = ReplacingMergeTree(version)
ORDER BY agent""",
        f"""CREATE VIEW IF NOT EXISTS {db}.task_groups AS
SELECT
    group_key,
    count() AS total,
    countIf(state IN ('CREATED', 'QUEUED')) AS pending,
    countIf(NOT finished AND state NOT IN ('CREATED', 'QUEUED')) AS in_progress,
    countIf(state = 'COMPLETED') AS completed,
    countIf(finished AND state != 'COMPLETED') AS failed,
    round(100 * (completed + failed) / total, 1) AS percentage,
    min(created_at) AS first_created_at,
    max(finished_at) AS last_finished_at,
    if(completed + failed = 0 OR completed + failed = total OR last_finished_at <= first_created_at,
       NULL,
       last_finished_at + toIntervalMillisecond(toInt64(
           (total - completed - failed) * dateDiff('millisecond', first_created_at, last_finished_at)
           / (completed + failed)))) AS estimated_completion
FROM {db}.tasks FINAL
WHERE group_key != ''
GROUP BY group_key""",
    ]
