"""The ClickHouse query behind each alert measure (text and parameters; nothing runs here).

Threshold rules read ``(*group_by, value, samples)``; anomaly rules read
``(*group_by, window_start_ms, value, samples)`` per window.  Rollup measures read the
exact ``rollups`` table (1m windows, always aggregated); state measures read ``tasks``,
``agent_status`` (``FINAL``: one row per entity), ``task_executions`` and ``dlq``.
``now`` is a parameter: evaluation time is the caller's clock, not the server's.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.alerts.rules import Rule

NOW = "fromUnixTimestamp64Milli(toInt64({now_ms:Int64}), 'UTC')"

_ROLLUP_VALUE = {
    "failure_rate": ("sum(failures) / sum(successes + failures)", "sum(successes + failures)"),
    "count": ("toFloat64(sum(count))", "sum(count)"),
    "p50_duration_ms": ("tpQuantile(sumMap(duration_sketch), 0.50)", "sum(duration_count)"),
    "p95_duration_ms": ("tpQuantile(sumMap(duration_sketch), 0.95)", "sum(duration_count)"),
    "p99_duration_ms": ("tpQuantile(sumMap(duration_sketch), 0.99)", "sum(duration_count)"),
}


def _filters(rule: Rule, params: dict[str, Any]) -> list[str]:
    out = []
    for i, (col, want) in enumerate(sorted(rule.filter.items())):
        name = f"f{i}"
        if isinstance(want, list):
            params[name] = list(want)
            out.append(f"{col} IN {{{name}:Array(String)}}")
        else:
            params[name] = want
            out.append(f"{col} = {{{name}:String}}")
    return out


def _select(groups: list[str], exprs: list[str], table: str, where: list[str], extra_group: str = "") -> str:
    cols = ", ".join([*(f"toString({g})" for g in groups), *([extra_group] if extra_group else []), *exprs])
    sql = f"SELECT {cols} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    keys = [*groups, *([extra_group] if extra_group else [])]
    if keys:
        sql += " GROUP BY " + ", ".join(keys)
    return sql


def rule_query(rule: Rule, db: str, now_ms: int) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters that measure ``rule`` at ``now_ms``."""
    params: dict[str, Any] = {"now_ms": now_ms}
    where = _filters(rule, params)
    groups = list(rule.group_by)
    m = rule.measure
    w = rule.window_s
    src = rule.spec.source
    if src == "rollups":
        if m == "failure_rate":
            where += ["entity_type = 'task'", "outcome IN ('success', 'failure')"]
        if rule.type == "anomaly":
            return _anomaly_query(rule, db, now_ms, where, params)
        since = f"toStartOfMinute({NOW} - INTERVAL {w} SECOND)"
        where = ["granularity = '1m'", f"window_start >= {since}", f"window_start <= {NOW}", *where]
        if m == "rate_per_minute":
            minutes = f"greatest(1., dateDiff('millisecond', {since}, {NOW}) / 60000.)"
            exprs = [f"sum(count) / {minutes}", "sum(count)"]
        else:
            exprs = list(_ROLLUP_VALUE[m])
        return _select(groups, exprs, f"{db}.rollups", where), params
    if m == "queue_depth":
        where = ["NOT finished", "state IN ('CREATED', 'QUEUED')", *where]
        return _select(groups, ["toFloat64(count())", "1"], f"{db}.tasks FINAL", where), params
    if m == "stuck_tasks":
        where = [
            "NOT finished",
            "state NOT IN ('CREATED', 'QUEUED', 'PAUSED')",
            f"last_event_at < {NOW} - toIntervalMillisecond({int(rule.stuck_after * 1000)})",
            *where,
        ]
        return _select(groups, ["toFloat64(count())", "1"], f"{db}.tasks FINAL", where), params
    if m == "time_to_deadline_s":
        where = ["NOT finished", "deadline IS NOT NULL", *where]
        exprs = [f"min(dateDiff('millisecond', {NOW}, assumeNotNull(deadline))) / 1000.", "count()"]
        return _select(groups, exprs, f"{db}.tasks FINAL", where), params
    if m == "agents_offline_fraction":
        exprs = ["if(count() = 0, nan, countIf(status = 'offline') / count())", "count()"]
        return _select(groups, exprs, f"{db}.agent_status FINAL", where), params
    if m == "agent_active_tasks":
        where = ["status != 'offline'", *where]
        return _select(groups, ["toFloat64(max(active_tasks))", "count()"], f"{db}.agent_status FINAL", where), params
    if m == "abandoned_tasks":
        where = ["outcome = 'abandoned'", f"finished_at >= {NOW} - INTERVAL {w} SECOND", *where]
        return _select(groups, ["toFloat64(count())", "1"], f"{db}.task_executions FINAL", where), params
    if m == "dlq_rate_per_minute":
        where = [f"received_at >= {NOW} - INTERVAL {w} SECOND", *where]
        return _select(groups, [f"count() / {w / 60}", "1"], f"{db}.dlq", where), params
    raise ValueError(f"no query for measure {m!r}")


def _anomaly_query(
    rule: Rule, db: str, now_ms: int, where: list[str], params: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    step = rule.window_s * 1000
    current = now_ms - now_ms % step
    # one window more than the baseline: the last complete window is judged too
    params["first_ms"] = current - (rule.anomaly_settings.baseline_windows + 1) * step
    where = [
        f"granularity = '{rule.window}'",
        "window_start >= fromUnixTimestamp64Milli(toInt64({first_ms:Int64}), 'UTC')",
        f"window_start <= {NOW}",
        *where,
    ]
    if rule.measure == "rate_per_minute":
        exprs = [f"sum(count) / {rule.window_s / 60}", "sum(count)"]
    else:
        exprs = list(_ROLLUP_VALUE[rule.measure])
    ws = "toInt64(toUnixTimestamp(window_start)) * 1000"
    return _select(list(rule.group_by), exprs, f"{db}.rollups", where, extra_group=ws), params


def latest_states_query(db: str) -> str:
    """The last persisted row of every alert whose last state is pending or firing."""
    return (
        f"SELECT * FROM (SELECT * FROM {db}.alerts ORDER BY at DESC, notifications DESC "
        "LIMIT 1 BY fingerprint) WHERE state IN ('pending', 'firing')"
    )


def live_alerts_query(db: str) -> str:
    """(fingerprint, state, severity) of every alert whose latest change is pending or firing."""
    return (
        f"SELECT fingerprint, argMax(state, at) AS st, argMax(severity, at) FROM {db}.alerts "
        "GROUP BY fingerprint HAVING st IN ('pending', 'firing')"
    )


_ALERT_LIST_COLUMNS = "at, rule, state, change, severity, group_labels, value, threshold, summary"


def alert_history_query(db: str, limit: int, firing_only: bool) -> tuple[str, dict[str, Any]]:
    """The newest ``limit`` alert state changes (``firing_only``: the alerts firing now, by
    their latest change), for ``taskpulse alerts list``."""
    if firing_only:
        sql = (
            f"SELECT {_ALERT_LIST_COLUMNS} FROM (SELECT * FROM {db}.alerts ORDER BY at DESC, notifications DESC "
            "LIMIT 1 BY fingerprint) WHERE state = 'firing' ORDER BY at DESC LIMIT %(limit)s"
        )
    else:
        sql = f"SELECT {_ALERT_LIST_COLUMNS} FROM {db}.alerts ORDER BY at DESC LIMIT %(limit)s"
    return sql, {"limit": int(limit)}
