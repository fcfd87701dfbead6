"""The alerting domain's queries behind ``/api/v1/alerts`` and ``/api/v1/anomalies``, and the
rows of ``anomaly_evaluations`` (what the alerting role stores of each anomaly evaluation).
Text plus parameters; lists page by keyset (``core.paging``).  Pure.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pipeline.core.alerts.rules import Observation
from pipeline.core.paging import Filters

Query = tuple[str, dict[str, Any]]

ALERT_COLUMNS = (
    "at", "rule", "fingerprint", "state", "change", "severity", "group_labels", "labels", "value", "threshold",
    "active_since", "fired_at", "resolved_at", "summary", "description",
)  # fmt: skip

ANOMALY_COLUMNS = ["at", "rule", "labels", "value", "baseline", "stddev", "zscore", "samples", "breached"]


def _after(f: Filters, after: tuple[int, str, str] | None, cols: str) -> None:
    if after is not None:
        f.add(f"({cols}) < (%(after_t)s, %(after_a)s, %(after_b)s)",
              after_t=int(after[0]), after_a=str(after[1]), after_b=str(after[2]))  # fmt: skip


def alerts_page(
    db: str, firing: bool, rules: tuple[str, ...], severities: tuple[str, ...],
    after: tuple[int, str, str] | None, limit: int,
) -> Query:  # fmt: skip
    """``ALERT_COLUMNS`` + key (at ms, fingerprint, change) of up to ``limit + 1`` rows, newest
    first: every state change (history), or (``firing``) each alert firing now, by its latest change."""
    f = Filters(limit)
    if rules:
        f.add("rule IN %(rules)s", rules=list(rules))
    if severities:
        f.add("severity IN %(severities)s", severities=list(severities))
    source = f"{db}.alerts"
    if firing:
        source = (
            f"(SELECT * FROM {db}.alerts ORDER BY at DESC, notifications DESC LIMIT 1 BY fingerprint) "
            "WHERE state = 'firing'"
        )
        source = f"(SELECT * FROM {source})"
    _after(f, after, "toUnixTimestamp64Milli(at), fingerprint, change")
    sql = (
        f"SELECT {', '.join(ALERT_COLUMNS)}, toUnixTimestamp64Milli(at) AS k FROM {source} "
        f"WHERE {f.sql} ORDER BY k DESC, fingerprint DESC, change DESC LIMIT %(limit)s"
    )
    return sql, f.params


def anomalies_page(
    db: str, rules: tuple[str, ...], breached: bool | None, since_ms: int | None, until_ms: int | None,
    after: tuple[int, str, str] | None, limit: int,
) -> Query:  # fmt: skip
    """``ANOMALY_COLUMNS`` + key (at ms, rule, labels as JSON) of up to ``limit + 1``
    evaluations, newest first."""
    f = Filters(limit)
    if rules:
        f.add("rule IN %(rules)s", rules=list(rules))
    if breached is not None:
        f.add("breached = %(breached)s", breached=breached)
    if since_ms is not None:
        f.add("at >= fromUnixTimestamp64Milli(%(since)s, 'UTC')", since=int(since_ms))
    if until_ms is not None:
        f.add("at < fromUnixTimestamp64Milli(%(until)s, 'UTC')", until=int(until_ms))
    _after(f, after, "toUnixTimestamp64Milli(at), rule, toJSONString(labels)")
    sql = (
        f"SELECT {', '.join(ANOMALY_COLUMNS)}, toUnixTimestamp64Milli(at) AS k, toJSONString(labels) AS lk "
        f"FROM {db}.anomaly_evaluations WHERE {f.sql} "
        "ORDER BY k DESC, rule DESC, lk DESC LIMIT %(limit)s"
    )
    return sql, f.params


def anomaly_rows(rule: str, observations: list[Observation], now_ms: int) -> list[list[Any]]:
    """The ``anomaly_evaluations`` rows (``ANOMALY_COLUMNS`` order) of one
    anomaly rule's evaluation: one per group that had a baseline to be judged against."""
    at = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    return [
        [at, rule, dict(o.labels), o.value, float(o.extra["baseline"]), float(o.extra["stddev"]),
         float(o.extra["z"]), int(o.samples), bool(o.breached)]
        for o in observations
        if "z" in o.extra
    ]  # fmt: skip
