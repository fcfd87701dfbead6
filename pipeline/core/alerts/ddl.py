"""DDL of the alerting tables (``alerts``: every alert state change; ``anomaly_evaluations``:
what each anomaly rule judged at each evaluation).

One row per change of one alert (rule + group): ``pending``, ``firing``, ``resolved``,
``inactive`` (a pending alert whose condition cleared before ``for``) and ``renotify``
(a still-firing alert notified again after the repeat interval).  The last row of each
``fingerprint`` is that alert's current state: the alerting role reloads it at start.

Migrations: ``alerts_steps`` (numbers shared with the other domains, ``pipeline.core.migrations``).
"""

from __future__ import annotations

from pipeline.core.migrations import Retention, Step, days_ttl

DT = "DateTime64(3, 'UTC')"


def ttl_expressions(retention: Retention) -> dict[str, str]:
    """The TTL of the alerts and anomaly tables (``TASKPULSE_TTL_ALERTS_DAYS``)."""
    return {"alerts": days_ttl("at", retention.alerts), "anomaly_evaluations": days_ttl("at", retention.alerts)}


def alerts_steps(db: str, retention: Retention) -> list[Step]:
    """The alerting domain's migration steps."""
    return [
        Step.of(3, "alerts table", alerts_ddl(db, retention)[:1]),
        Step.of(8, "anomaly_evaluations table (what each anomaly rule judged)", alerts_ddl(db, retention)[1:]),
    ]


def alerts_ddl(db: str, retention: Retention) -> list[str]:
    """The alerting tables as they are now."""
    return [
        f"""CREATE TABLE IF NOT EXISTS {db}.alerts
(
    at {DT},
    rule LowCardinality(String),
    fingerprint String,
    state LowCardinality(String),
    change LowCardinality(String),
    severity LowCardinality(String),
    group_labels Map(String, String),
    labels Map(String, String),
    value Nullable(Float64),
    threshold Float64,
    active_since Nullable({DT}),
    fired_at Nullable({DT}),
    resolved_at Nullable({DT}),
    last_notified_at Nullable({DT}),
    notifications UInt32,
    summary String,
    description String
)
ENGINE = MergeTree
ORDER BY (rule, fingerprint, at)
TTL {ttl_expressions(retention)["alerts"]}""",
        # One row per anomaly rule, group and evaluation that had a baseline: the value of the
        # window judged, the EWMA baseline and its deviation, the z-score and the verdict.
        f"""CREATE TABLE IF NOT EXISTS {db}.anomaly_evaluations
(
    at {DT},
    rule LowCardinality(String),
    labels Map(String, String),
    value Nullable(Float64),
    baseline Float64,
    stddev Float64,
    zscore Float64,
    samples UInt64,
    breached Bool
)
ENGINE = MergeTree
ORDER BY (rule, at)
TTL {ttl_expressions(retention)["anomaly_evaluations"]}""",
    ]
