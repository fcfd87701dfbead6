"""The analytics views: one ClickHouse view per KPI of seed 000 and the assignment
calibration of seed 001, each at the grain that lets one short query give the KPI for any
period and filter (``pipeline.core.analytics.queries`` holds those queries; the README's
"Analytics" section lists them).

Conventions shared by every view:

- finished tasks are read from ``task_executions FINAL`` (the latest version of each task:
  a corrected record counts once, as corrected);
- events are read with ``LIMIT 1 BY id`` (an event delivered twice counts once);
- *decided* tasks are the finished ones that succeeded, failed or were abandoned (cancelled
  tasks are neither a success nor an error);
- confidences are probabilities: a value above 1 is read as a percentage (seed 001 sends
  ``92``), then clamped to [0, 1].

Every view keeps one row per fact (a finished task, a review, a feedback, an availability
interval, a recovery, …) with the columns its KPI needs, so the KPI of any period and filter
is one exact query (medians and interval overlaps included).

Migrations: ``analytics_steps`` (numbers shared with the other domains).
"""

from __future__ import annotations

from pipeline.core.migrations import Step

#: the analytics domain's step number (after the tasks domain's cost step)
ANALYTICS_STEP = 10

#: a task_executions row's confidence as a probability in [0, 1]
PROB = "least(greatest(if(confidence > 1, confidence / 100, confidence), 0), 1)"
#: the same for a value of the other agents' map
ALT_PROB = "least(greatest(if(c > 1, c / 100, c), 0), 1)"

DECIDED = "outcome IN ('success', 'failure', 'abandoned')"

#: view name → what it holds (README and ``taskpulse report`` name them)
VIEWS: dict[str, str] = {
    "kpi_throughput": "one row per finished task: completed (succeeded) or not",
    "kpi_task_times": "one row per finished task: cycle, wait (queue) and processing (execution minus paused) time",
    "kpi_first_time_success": "one row per decided task: succeeded with no retry",
    "kpi_review": "one row per review (task.review with passed true / false)",
    "kpi_satisfaction": "one row per user.feedback: score (0-10), user, task",
    "kpi_defects": "one row per delivered task (succeeded, reopened after COMPLETED, or failed a review): "
    "reopened, failed_review",
    "kpi_errors": "one row per decided task: failed (failed or abandoned) and its error text",
    "kpi_cost": "one row per finished task: cost, currency, tokens, unpriced tokens, success",
    "kpi_agent_uptime": "one row per agent availability interval (from one agent event to the next): up or down",
    "kpi_agent_busy": "one row per interval in which an agent executed at least one task",
    "kpi_mttr": "one row per recovery: an agent's first failure after a success → its next success",
    "calibration": "one row per decided task with a confidence: the confidence as a probability, its bucket "
    "(0-9: tenths), success, squared error (its mean is the Brier score)",
    "calibration_choice": "one row per decided task rated by other agents: the chosen agent's confidence, the "
    "best-rated alternative and its confidence, the outcome",
}


def analytics_steps(db: str) -> list[Step]:
    """The analytics domain's migration steps."""
    return [Step.of(ANALYTICS_STEP, "analytics views: KPIs (kpi_*) and calibration", analytics_ddl(db))]


def analytics_ddl(db: str) -> list[str]:
    """Every analytics view as it is now (``CREATE OR REPLACE``: a step re-run is harmless)."""
    te = f"{db}.task_executions FINAL"

    def events(where: str) -> str:
        return f"(SELECT * FROM {db}.events WHERE {where} LIMIT 1 BY id)"

    task = "task_id, finished_at, agent, task_type, group_key"
    views = {
        "kpi_throughput": f"""
SELECT {task}, outcome = 'success' AS completed FROM {te}""",
        "kpi_task_times": f"""
SELECT {task}, outcome, cycle_ms, queue_wait_ms AS wait_ms,
    if(execution_ms IS NULL, NULL, greatest(execution_ms - paused_ms, 0)) AS processing_ms
FROM {te}""",
        "kpi_first_time_success": f"""
SELECT {task}, outcome = 'success' AND retry_count = 0 AS first_time_success
FROM {te} WHERE {DECIDED}""",
        "kpi_review": f"""
SELECT id, event_time, entity_id AS task_id, agent, task_type, verdict AS passed
FROM (SELECT id, event_time, entity_id, agent, task_type,
          JSONExtract(current_state, 'passed', 'Nullable(Bool)') AS verdict
      FROM {events("event_type = 'task.review'")})
WHERE verdict IS NOT NULL""",
        "kpi_satisfaction": f"""
SELECT id, event_time, JSONExtractString(current_state, 'task_id') AS task_id,
    JSONExtractString(current_state, 'user_id') AS user_id, JSONExtractFloat(current_state, 'score') AS score
FROM {events("event_type = 'user.feedback'")}""",
        "kpi_defects": f"""
SELECT {task}, outcome,
    arrayExists(x -> startsWith(x, 'COMPLETED->'), invalid_transition_list) AS reopened,
    task_id IN (SELECT entity_id FROM {events("event_type = 'task.review'")}
                WHERE JSONExtract(current_state, 'passed', 'Nullable(Bool)') = false) AS failed_review
FROM {te} WHERE outcome = 'success' OR reopened OR failed_review""",
        "kpi_errors": f"""
SELECT {task}, outcome, outcome IN ('failure', 'abandoned') AS failed, error
FROM {te} WHERE {DECIDED}""",
        "kpi_cost": f"""
SELECT {task}, outcome = 'success' AS success, cost, currency, tokens, unpriced_tokens FROM {te}""",
        # up: every agent event but agent.offline and a status change to offline
        "kpi_agent_uptime": f"""
SELECT agent, up, at AS from_time, ifNull(next_at, greatest(now64(3), at)) AS to_time
FROM (
    SELECT agent, event_time AS at,
        NOT (event_type = 'agent.offline'
             OR (event_type = 'agent.status_changed' AND JSONExtractString(current_state, 'status') = 'offline')) AS up,
        leadInFrame(toNullable(event_time)) OVER (PARTITION BY agent ORDER BY event_time, id
                                                  ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS next_at
    FROM {events("entity_type = 'agent' AND agent != ''")})""",
        "kpi_agent_busy": f"""
SELECT agent, min(s) AS from_time, max(e) AS to_time
FROM (
    SELECT agent, s, e,
        sum(new_island) OVER (PARTITION BY agent ORDER BY s, task_id ROWS UNBOUNDED PRECEDING) AS island
    FROM (
        SELECT agent, task_id, s, e,
            s > max(e) OVER (PARTITION BY agent ORDER BY s, task_id
                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS new_island
        FROM (SELECT agent, task_id, assumeNotNull(started_at) AS s, finished_at AS e FROM {te}
              WHERE agent != '' AND started_at IS NOT NULL AND finished_at > started_at)))
GROUP BY agent, island""",
        "kpi_mttr": f"""
SELECT agent, failed_at, finished_at AS recovered_at, dateDiff('millisecond', failed_at, finished_at) AS recovery_ms
FROM (
    SELECT agent, finished_at, ok, prev_ok,
        max(if(NOT ok AND prev_ok, toNullable(finished_at), NULL))
            OVER (PARTITION BY agent ORDER BY finished_at, task_id ROWS UNBOUNDED PRECEDING) AS failed_at
    FROM (
        SELECT agent, task_id, finished_at, outcome = 'success' AS ok,
            lagInFrame(outcome = 'success', 1, true)
                OVER (PARTITION BY agent ORDER BY finished_at, task_id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
                AS prev_ok
        FROM {te} WHERE agent != '' AND {DECIDED}))
WHERE ok AND NOT prev_ok""",
        "calibration": f"""
SELECT task_id, finished_at, agent, task_type, group_key, p AS confidence,
    toUInt8(least(floor(p * 10), 9)) AS bucket, ok AS success, pow(p - ok, 2) AS squared_error
FROM (SELECT task_id, finished_at, agent, task_type, group_key, {PROB} AS p, outcome = 'success' AS ok FROM {te}
      WHERE confidence IS NOT NULL AND agent != '' AND {DECIDED})""",
        "calibration_choice": f"""
SELECT task_id, finished_at, agent, task_type, group_key, {PROB} AS confidence,
    best.1 AS best_alternative, best.2 AS best_alternative_confidence,
    {PROB} >= best.2 AS chosen_top_rated, outcome = 'success' AS success
FROM (SELECT *, arrayReduce('argMax', arrayMap((a, c) -> (a, {ALT_PROB}), mapKeys(other_agents),
                                                mapValues(other_agents)),
                           arrayMap((a, c) -> ({ALT_PROB}, a), mapKeys(other_agents), mapValues(other_agents)))
                 AS best
      FROM {te} WHERE confidence IS NOT NULL AND agent != '' AND {DECIDED} AND length(other_agents) > 0)""",
    }
    assert set(views) == set(VIEWS)
    return [f"CREATE OR REPLACE VIEW {db}.{name} AS{sql}" for name, sql in views.items()]
