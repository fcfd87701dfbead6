"""DDL of the alerting tables (``alerts``: every alert state change).

One row per change of one alert (rule + group): ``pending``, ``firing``, ``resolved``,
``inactive`` (a pending alert whose condition cleared before ``for``) and ``renotify``
(a still-firing alert notified again after the repeat interval).  The last row of each
``fingerprint`` is that alert's current state: the alerting role reloads it at start.
"""

from __future__ import annotations

ALERTS_TTL_DAYS = 365
DT = "DateTime64(3, 'UTC')"


def alerts_ddl(db: str) -> list[str]:
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
TTL toDateTime(at) + INTERVAL {ALERTS_TTL_DAYS} DAY""",
    ]
