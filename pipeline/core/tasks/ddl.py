"""DDL of the correlation tables: ``tasks`` (current state of every task), ``task_executions``
(one row per finished task), ``agent_status`` (latest state of each agent) and the
``task_groups`` view (live progress per group).

Each table is a ReplacingMergeTree keyed by its entity id with a ``version`` column: a
replayed write after a crash carries the same version and collapses, a correction (an
abandoned task that completes later) carries a higher one and wins; ``abandoned_verdicts``
keeps that it was once judged abandoned.  Read them with
``FINAL`` (or ``argMax(…, version)``) for exactly one row per entity.

Migrations: ``tasks_steps`` (numbers shared with the other domains, ``pipeline.core.migrations``).
"""

from __future__ import annotations

from pipeline.core.migrations import Retention, Step, days_ttl

DT = "DateTime64(3, 'UTC')"

#: the step that added cost to task_executions (numbers are shared between domains; the
#: analytics domain's steps follow it)
COST_STEP = 9

#: the cost columns of task_executions (``pipeline.core.cost``), as ``name type``
COST_COLUMNS = (
    "cost Nullable(Float64)", "currency LowCardinality(String)", "tokens UInt64", "unpriced_tokens UInt64",
)


def ttl_expressions(retention: Retention) -> dict[str, str]:
    """The TTL each correlation table should have (``TASKPULSE_TTL_*``; agent_status keeps
    the latest state of every agent, without TTL)."""
    return {
        "tasks": days_ttl("last_event_at", retention.tasks),
        "task_executions": days_ttl("finished_at", retention.task_executions),
    }


def tasks_steps(db: str, retention: Retention) -> list[Step]:
    """The correlation domain's migration steps."""
    return [
        Step.of(2, "correlation tables (tasks, task_executions, agent_status) and their views",
                tasks_ddl(db, retention)),
        Step.of(5, "task_executions: abandoned_verdicts, history_dropped", [
            f"ALTER TABLE {db}.task_executions ADD COLUMN IF NOT EXISTS abandoned_verdicts UInt32 AFTER events",
            f"ALTER TABLE {db}.task_executions ADD COLUMN IF NOT EXISTS history_dropped UInt32 "
            "AFTER abandoned_verdicts",
        ]),
        Step.of(COST_STEP, "task_executions: cost, currency, tokens, unpriced_tokens; task_rollups with cost", [
            *(f"ALTER TABLE {db}.task_executions ADD COLUMN IF NOT EXISTS {col}" for col in COST_COLUMNS),
            f"CREATE OR REPLACE VIEW {db}.task_rollups AS {_task_rollups_select(db, with_cost=True)}",
        ]),
    ]  # fmt: skip


def tasks_ddl(db: str, retention: Retention) -> list[str]:
    """The correlation tables and views as they are now (each statement idempotent)."""
    ttl = ttl_expressions(retention)
    cost_columns = ",\n    ".join(COST_COLUMNS)
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
TTL {ttl["tasks"]}""",
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
    invalid_transition_list Array(String),
    events UInt32,
    abandoned_verdicts UInt32,
    history_dropped UInt32,
    updated_at {DT},
    {cost_columns}
)
ENGINE = ReplacingMergeTree(version)
ORDER BY task_id
TTL {ttl["task_executions"]}""",
        f"""CREATE TABLE IF NOT EXISTS {db}.agent_status
(
    agent String,
    version UInt64,
    status LowCardinality(String),
    status_since {DT},
    last_seen {DT},
    online_since Nullable({DT}),
    active_tasks UInt32,
    cpu_percent Nullable(Float64),
    memory_mb Nullable(Float64),
    busy_s Float64,
    online_s Float64,
    utilization Nullable(Float64),
    updated_at {DT}
)
ENGINE = ReplacingMergeTree(version)
ORDER BY agent""",
        # The agent grid: availability (agent_status) with today's work (task_executions).
        f"""CREATE VIEW IF NOT EXISTS {db}.agent_overview AS
SELECT
    s.agent AS agent, s.status AS status, s.last_seen AS last_seen,
    if(s.online_since IS NULL, 0, dateDiff('second', s.online_since, now64(3))) AS uptime_s,
    s.active_tasks AS active_tasks, s.cpu_percent AS cpu_percent, s.memory_mb AS memory_mb,
    s.utilization AS utilization,
    ifNull(t.completed_today, 0) AS tasks_completed_today,
    ifNull(t.finished_today, 0) AS tasks_finished_today,
    t.success_rate AS success_rate,
    t.avg_handling_ms AS avg_handling_ms
FROM (SELECT * FROM {db}.agent_status FINAL) AS s
LEFT JOIN
(
    SELECT agent,
        countIf(outcome = 'success') AS completed_today,
        count() AS finished_today,
        countIf(outcome = 'success') / count() AS success_rate,
        avg(execution_ms) AS avg_handling_ms
    FROM {db}.task_executions FINAL
    WHERE finished_at >= toStartOfDay(now64(3, 'UTC'))
    GROUP BY agent
) AS t ON s.agent = t.agent
SETTINGS join_use_nulls = 1""",
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
        # Lifecycle window aggregates, computed from the latest version of every finished
        # task (so a corrected record, abandoned then completed, counts once, as completed).
        # (with cost from step COST_STEP on: this statement may run on an older task_executions)
        f"CREATE VIEW IF NOT EXISTS {db}.task_rollups AS {_task_rollups_select(db, with_cost=False)}",
    ]


def _task_rollups_select(db: str, with_cost: bool) -> str:
    """Lifecycle window aggregates, computed from the latest version of every finished task
    (so a corrected record, abandoned then completed, counts once, as completed), with what
    the tasks cost (``cost``: the sum over tasks that reported usage)."""
    cost = ",\n    sum(cost) AS cost,\n    any(currency) AS currency,\n    sum(tokens) AS tokens" if with_cost else ""
    return f"""
SELECT
    multiIf(secs = 60, '1m', secs = 300, '5m', secs = 3600, '1h', '1d') AS granularity,
    toDateTime(intDiv(toUnixTimestamp(finished_at), secs) * secs, 'UTC') AS window_start,
    agent, task_type, outcome,
    count() AS tasks,
    sum(retry_count) AS retries,
    quantilesExactIf(0.5, 0.95, 0.99)(queue_wait_ms, queue_wait_ms IS NOT NULL) AS queue_wait_p50_p95_p99,
    quantilesExactIf(0.5, 0.95, 0.99)(execution_ms, execution_ms IS NOT NULL) AS execution_p50_p95_p99,
    quantilesExactIf(0.5, 0.95, 0.99)(cycle_ms, cycle_ms IS NOT NULL) AS cycle_p50_p95_p99,
    avg(queue_wait_ms) AS queue_wait_avg_ms,
    avg(execution_ms) AS execution_avg_ms,
    avg(cycle_ms) AS cycle_avg_ms{cost}
FROM {db}.task_executions FINAL
ARRAY JOIN [60, 300, 3600, 86400] AS secs
GROUP BY granularity, window_start, agent, task_type, outcome"""
