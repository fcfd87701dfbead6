"""The analytics queries, as text plus parameters (``%(name)s``, bound by the client): one
query per KPI over its view (``pipeline.core.analytics.ddl``) for a period ``[start, end)``
and optional filters (agent, task type, group), the per-agent and calibration tables of the
report, and the history the forecasts learn from.  Pure.

Each KPI query answers one row; ``pipeline.core.analytics.kpis.summarize`` turns the
answers into named values.  The API's ``kpis`` resource can run ``kpi_queries`` and
``summarize`` as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.core.periods import Period

Query = tuple[str, dict[str, Any]]

#: filter name → the column it compares (``--filter agent=coder``)
FILTERS = {"agent": "agent", "task_type": "task_type", "group": "group_key"}


def parse_filters(items: list[str]) -> dict[str, str]:
    """``["agent=coder", "task_type=research"]`` → a dict; ValueError naming a bad item."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in FILTERS or not value.strip():
            raise ValueError(f"--filter {item!r}: use NAME=VALUE with NAME one of {', '.join(FILTERS)}")
        out[key] = value.strip()
    return out


def _span(p: Period) -> dict[str, Any]:
    return {"start": int(p.start_ms), "end": int(p.end_ms)}


def _in(col: str) -> str:
    return f"{col} >= fromUnixTimestamp64Milli(%(start)s, 'UTC') AND {col} < fromUnixTimestamp64Milli(%(end)s, 'UTC')"


def _filters(filters: Mapping[str, str], params: dict[str, Any], allowed: tuple[str, ...]) -> str:
    out = ""
    for key, value in sorted(filters.items()):
        if key in allowed:
            params[f"f_{key}"] = value
            out += f" AND {FILTERS[key]} = %(f_{key})s"
    return out


def _task_filter(db: str, filters: Mapping[str, str], params: dict[str, Any], col: str = "task_id") -> str:
    """Rows of events about tasks: the filters apply through the task they name."""
    if not filters:
        return ""
    inner = _filters(filters, params, tuple(FILTERS))
    return f" AND {col} IN (SELECT task_id FROM {db}.task_executions FINAL WHERE 1{inner})"


def _clip(frm: str, to: str) -> str:
    """Milliseconds of ``[frm, to)`` inside the period."""
    return (f"greatest(0, dateDiff('millisecond', greatest({frm}, fromUnixTimestamp64Milli(%(start)s, 'UTC')), "
            f"least({to}, fromUnixTimestamp64Milli(%(end)s, 'UTC'))))")  # fmt: skip


def _times(col: str) -> str:
    return f"avg({col}), quantileExact(0.5)({col}), quantileExact(0.95)({col})"


ALL = ("agent", "task_type", "group")


def kpi_queries(db: str, p: Period, filters: Mapping[str, str] | None = None) -> dict[str, Query]:
    """KPI name → its one-row query for period ``p`` (``summarize`` reads the answers)."""
    f = dict(filters or {})

    def q(sql: str, allowed: tuple[str, ...] = ALL) -> Query:
        params = _span(p)
        return sql + _filters(f, params, allowed), params

    def tq(sql: str) -> Query:  # a query on task events, filtered through their task
        params = _span(p)
        return sql + _task_filter(db, f, params), params

    out = {
        "throughput": q(f"SELECT count(), countIf(completed) FROM {db}.kpi_throughput WHERE {_in('finished_at')}"),
        "task_times": q(f"SELECT count(), {_times('cycle_ms')}, {_times('wait_ms')}, {_times('processing_ms')} "
                        f"FROM {db}.kpi_task_times WHERE {_in('finished_at')}"),
        "first_time_success": q(f"SELECT count(), countIf(first_time_success) FROM {db}.kpi_first_time_success "
                                f"WHERE {_in('finished_at')}"),
        "review": tq(f"SELECT count(), countIf(passed) FROM {db}.kpi_review WHERE {_in('event_time')}"),
        "satisfaction": tq(f"SELECT count(), avg(score) FROM {db}.kpi_satisfaction WHERE {_in('event_time')}"),
        "defects": q(f"SELECT count(), countIf(reopened OR failed_review) FROM {db}.kpi_defects "
                     f"WHERE {_in('finished_at')}"),
        "errors": q(f"SELECT count(), countIf(failed), countIf(outcome = 'abandoned') FROM {db}.kpi_errors "
                    f"WHERE {_in('finished_at')}"),
        "cost": q(f"SELECT count(), countIf(success), countIf(cost IS NOT NULL), sum(cost), "
                  f"anyIf(currency, currency != ''), sum(tokens), sum(unpriced_tokens) "
                  f"FROM {db}.kpi_cost WHERE {_in('finished_at')}"),
        "uptime": q(f"SELECT sumIf({_clip('from_time', 'to_time')}, up), sum({_clip('from_time', 'to_time')}), "
                    f"uniqExact(agent) FROM {db}.kpi_agent_uptime WHERE to_time > fromUnixTimestamp64Milli(%(start)s, "
                    "'UTC') AND from_time < fromUnixTimestamp64Milli(%(end)s, 'UTC')", ("agent",)),
        "mttr": q(f"SELECT count(), avg(recovery_ms) FROM {db}.kpi_mttr WHERE {_in('recovered_at')}", ("agent",)),
        "utilization": utilization_query(db, p, f, per_agent=False),
        "brier": q(f"SELECT count(), avg(squared_error) FROM {db}.calibration WHERE {_in('finished_at')}"),
    }  # fmt: skip
    return out


def utilization_query(db: str, p: Period, filters: Mapping[str, str], per_agent: bool) -> Query:
    """Busy (at least one task executing) and up time of each agent in the period, or summed
    over agents: utilization = busy / up, idle = 1 - utilization (agents with no
    availability events have no up time and are left out)."""
    params = _span(p)
    fa = _filters(filters, params, ("agent",))
    clip = _clip("from_time", "to_time")
    inner = (
        f"SELECT u.agent AS agent, u.up_ms AS up_ms, least(ifNull(b.busy_ms, 0), u.up_ms) AS busy_ms FROM "
        f"(SELECT agent, sumIf({clip}, up) AS up_ms FROM {db}.kpi_agent_uptime WHERE 1{fa} GROUP BY agent "
        "HAVING up_ms > 0) AS u "
        f"LEFT JOIN (SELECT agent, sum({clip}) AS busy_ms FROM {db}.kpi_agent_busy WHERE 1{fa} GROUP BY agent) AS b "
        "ON u.agent = b.agent"
    )
    if per_agent:
        return f"SELECT agent, busy_ms, up_ms, busy_ms / up_ms FROM ({inner}) ORDER BY agent", params
    return f"SELECT count(), sum(busy_ms), sum(up_ms) FROM ({inner})", params


def agent_queries(db: str, p: Period, filters: Mapping[str, str] | None = None) -> dict[str, Query]:
    """Per-agent tables of the report (``summarize_agents`` joins them)."""
    f = dict(filters or {})

    def q(sql: str, group: str = "GROUP BY agent ORDER BY agent", allowed: tuple[str, ...] = ALL) -> Query:
        params = _span(p)
        return f"{sql}{_filters(f, params, allowed)} {group}", params

    clip = _clip("from_time", "to_time")
    return {
        "agent_tasks": q(
            "SELECT agent, count(), countIf(outcome = 'success'), countIf(outcome IN ('failure', 'abandoned')), "
            "countIf(outcome = 'success' AND retry_count = 0), countIf(outcome IN ('success', 'failure', "
            "'abandoned')), avg(execution_ms), sum(cost) "
            f"FROM {db}.task_executions FINAL WHERE agent != '' AND {_in('finished_at')}"),
        "agent_uptime": q(
            f"SELECT agent, sumIf({clip}, up), sum({clip}) FROM {db}.kpi_agent_uptime WHERE to_time > "
            "fromUnixTimestamp64Milli(%(start)s, 'UTC') AND from_time < fromUnixTimestamp64Milli(%(end)s, 'UTC')",
            allowed=("agent",)),
        "agent_mttr": q(f"SELECT agent, count(), avg(recovery_ms) FROM {db}.kpi_mttr WHERE {_in('recovered_at')}",
                        allowed=("agent",)),
        "agent_utilization": utilization_query(db, p, f, per_agent=True),
        "agent_brier": q(f"SELECT agent, count(), avg(squared_error) FROM {db}.calibration "
                         f"WHERE {_in('finished_at')}"),
    }  # fmt: skip


def calibration_queries(db: str, p: Period, filters: Mapping[str, str] | None = None) -> dict[str, Query]:
    """The reliability table (agent, bucket: tasks, mean confidence, observed success rate),
    the Brier score per agent (in ``agent_queries``) and overall (``kpi_queries``), and the
    chosen agent vs the best-rated alternative."""
    f = dict(filters or {})

    def q(sql: str, tail: str) -> Query:
        params = _span(p)
        return f"{sql}{_filters(f, params, ALL)} {tail}", params

    return {
        "reliability": q(f"SELECT agent, bucket, count(), avg(confidence), avg(success) FROM {db}.calibration "
                         f"WHERE {_in('finished_at')}", "GROUP BY agent, bucket ORDER BY agent, bucket"),
        "reliability_all": q(f"SELECT bucket, count(), avg(confidence), avg(success) FROM {db}.calibration "
                             f"WHERE {_in('finished_at')}", "GROUP BY bucket ORDER BY bucket"),
        "choice": q(f"SELECT chosen_top_rated, count(), avg(success), avg(confidence), "
                    f"avg(best_alternative_confidence) FROM {db}.calibration_choice WHERE {_in('finished_at')}",
                    "GROUP BY chosen_top_rated ORDER BY chosen_top_rated DESC"),
    }  # fmt: skip


def history_queries(db: str, end_ms: int, days: int, filters: Mapping[str, str] | None = None) -> dict[str, Query]:
    """What the forecasts learn from: tasks created per hour (by task type) over the ``days``
    before ``end_ms``, and finished tasks' cycle times in finish order."""
    params: dict[str, Any] = {"start": int(end_ms - days * 86_400_000), "end": int(end_ms)}
    f = _filters(dict(filters or {}), params, ALL)
    created = "ifNull(created_at, finished_at)"
    return {
        "hourly_volume": (
            f"SELECT toUnixTimestamp(toStartOfHour({created})) * 1000, task_type, count() "
            f"FROM {db}.task_executions FINAL WHERE {_in(created)}{f} GROUP BY 1, 2 ORDER BY 1",
            params,
        ),
        "cycle_times": (
            f"SELECT task_type, toUnixTimestamp64Milli(finished_at), cycle_ms FROM {db}.task_executions FINAL "
            f"WHERE {_in('finished_at')}{f} AND cycle_ms IS NOT NULL AND outcome = 'success' "
            "ORDER BY finished_at, task_id",
            dict(params),
        ),
    }


def group_open_tasks(db: str, group_key: str) -> Query:
    """(task type, state, started ms or None) of a group's open tasks, and (total, finished) counts."""
    return (
        "SELECT task_type, state, toUnixTimestamp64Milli(started_at) "
        f"FROM {db}.tasks FINAL WHERE group_key = %(key)s AND NOT finished",
        {"key": group_key},
    )


def report_extra_queries(db: str, p: Period, filters: Mapping[str, str] | None = None) -> dict[str, Query]:
    """The time series and tables the report's charts and sections read besides the KPIs."""
    f = dict(filters or {})
    params = _span(p)
    fs = _filters(f, params, ALL)
    span = p.end_ms - p.start_ms
    bucket = "toStartOfHour(finished_at)" if span <= 3 * 86_400_000 else "toStartOfDay(finished_at)"
    return {
        "series": (
            f"SELECT toUnixTimestamp({bucket}) * 1000 AS t, count(), countIf(outcome = 'success'), "
            "countIf(outcome IN ('failure', 'abandoned')), avg(cycle_ms), sum(cost) "
            f"FROM {db}.task_executions FINAL WHERE {_in('finished_at')}{fs} GROUP BY t ORDER BY t",
            params,
        ),
        "by_type": (
            "SELECT task_type, count(), countIf(outcome = 'success'), avg(cycle_ms), quantileExact(0.95)(cycle_ms), "
            f"sum(cost) FROM {db}.task_executions FINAL WHERE {_in('finished_at')}{fs} GROUP BY task_type "
            "ORDER BY 2 DESC",
            dict(params),
        ),
        "top_errors": (
            f"SELECT error, count() FROM {db}.task_executions FINAL WHERE {_in('finished_at')}{fs} AND error != '' "
            "GROUP BY error ORDER BY 2 DESC, 1 LIMIT 5",
            dict(params),
        ),
        "health": (
            f"SELECT (SELECT count() FROM {db}.dlq WHERE {_in('received_at')}), "
            f"(SELECT count() FROM {db}.events WHERE event_type = 'system.error' AND {_in('event_time')}), "
            f"(SELECT count() FROM {db}.alerts WHERE change = 'firing' AND {_in('at')}), "
            f"(SELECT count() FROM {db}.events WHERE {_in('event_time')})",
            _span(p),
        ),
        "progress": (
            f"SELECT count() FROM {db}.events WHERE event_type = 'task.progress' AND {_in('event_time')}",
            _span(p),
        ),
        # where finished tasks are, for the advice of a period that holds none
        "finished_span": (
            "SELECT count(), toString(toStartOfMinute(min(finished_at))), toString(toStartOfMinute(max(finished_at))) "
            f"FROM {db}.task_executions FINAL",
            {},
        ),
    }
