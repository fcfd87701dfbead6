"""The tasks domain's queries, as text plus parameters (``%(name)s`` placeholders, bound by
the ClickHouse client; the database name is an identifier and is formatted in): what the
correlation role reads back after a recovery, what the metrics role seeds its gauges from, a
task group's progress for ``taskpulse status --group``, the pages of ``taskpulse export
csv`` (``taskpulse report``'s queries: ``pipeline.core.analytics.queries``).  Pure.

A literal ``%`` in a query's text is written ``%%`` (the client binds with ``%``); such a
query always has parameters."""

from __future__ import annotations

from typing import Any

Query = tuple[str, dict[str, Any]]


def task_versions(db: str, task_ids: list[str]) -> Query:
    """(task_id, highest version) of the given tasks' rows."""
    return f"SELECT task_id, max(version) FROM {db}.tasks WHERE task_id IN %(ids)s GROUP BY task_id", {"ids": task_ids}


def unfinished_tasks(db: str, keep_s: float) -> Query:
    """(task_id, highest version) of every task open in ClickHouse that saw an event within
    ``keep_s`` (older open tasks were expired, not lost)."""
    return (
        f"SELECT task_id, max(version) FROM {db}.tasks GROUP BY task_id "
        "HAVING NOT argMax(finished, version) AND max(last_event_at) > now64(3) - toIntervalSecond(%(keep)s)",
        {"keep": int(keep_s)},
    )


def task_events(db: str, task_ids: list[str]) -> Query:
    """(task_id, id, event_type, event time ms, current_state, metadata, metrics) of the given tasks' events."""
    return (
        "SELECT entity_id, id, event_type, toUnixTimestamp64Milli(event_time), current_state, metadata, metrics "
        f"FROM {db}.events WHERE entity_type = 'task' AND entity_id IN %(ids)s",
        {"ids": task_ids},
    )


def recent_agents(db: str, keep_s: float) -> Query:
    """The ``agent_status`` row of every agent seen within ``keep_s`` (older agents were
    forgotten, not lost), in the order ``Correlator.repair_agent`` reads it."""
    return (
        "SELECT agent, version, status, toUnixTimestamp64Milli(status_since), toUnixTimestamp64Milli(last_seen), "
        "toUnixTimestamp64Milli(online_since), active_tasks, cpu_percent, memory_mb, busy_s, online_s "
        f"FROM {db}.agent_status FINAL WHERE last_seen > now64(3) - toIntervalSecond(%(keep)s)",
        {"keep": int(keep_s)},
    )


def open_tasks(db: str, limit: int) -> Query:
    """(task_id, state, last event ms) of the most recently active open tasks."""
    return (
        f"SELECT task_id, state, toUnixTimestamp64Milli(last_event_at) FROM {db}.tasks FINAL "
        "WHERE NOT finished ORDER BY last_event_at DESC LIMIT %(limit)s",
        {"limit": int(limit)},
    )


def agent_gauges(db: str) -> Query:
    """(agent, status, active tasks, status since ms, cpu, memory) of every agent."""
    return (
        "SELECT agent, status, active_tasks, toUnixTimestamp64Milli(status_since), cpu_percent, "
        f"memory_mb FROM {db}.agent_status FINAL",
        {},
    )


def group_summary(db: str, group_key: str) -> Query:
    """The ``task_groups`` row of one group."""
    return f"SELECT * FROM {db}.task_groups WHERE group_key = %(key)s", {"key": group_key}


def group_states(db: str, group_key: str) -> Query:
    """(state, tasks) of one group, most common first."""
    return (
        f"SELECT state, count() FROM {db}.tasks FINAL WHERE group_key = %(key)s GROUP BY state ORDER BY 2 DESC",
        {"key": group_key},
    )


_TS = "ifNull(created_at, finished_at)"  # the export's timestamp: when the task was requested


def _export_where(since_ms: int | None, until_ms: int | None, agent: str | None, params: dict[str, Any]) -> str:
    where = ["1"]
    if since_ms is not None:
        where.append(f"{_TS} >= fromUnixTimestamp64Milli(%(since)s, 'UTC')")
        params["since"] = int(since_ms)
    if until_ms is not None:
        where.append(f"{_TS} < fromUnixTimestamp64Milli(%(until)s, 'UTC')")
        params["until"] = int(until_ms)
    if agent:
        where.append("agent = %(agent)s")
        params["agent"] = agent
    return " AND ".join(where)


def export_page(
    db: str,
    since_ms: int | None,
    until_ms: int | None,
    agent: str | None,
    after: tuple[str, str] | None,
    limit: int,
) -> Query:
    """One page of the task-log export (``core.tasks.export.csv_row`` reads its rows), after
    the keyset ``(timestamp text, task id)``, in that order."""
    params: dict[str, Any] = {"limit": int(limit)}
    where = _export_where(since_ms, until_ms, agent, params)
    if after is not None:
        where += f" AND ({_TS}, task_id) > (toDateTime64(%(after_ts)s, 3, 'UTC'), %(after_id)s)"
        params["after_ts"], params["after_id"] = after
    sql = (
        f"SELECT formatDateTime({_TS}, '%%Y-%%m-%%d %%H:%%i:%%S.%%f', 'UTC') AS ts, task_id, requester_id, "
        "request, agent, confidence, other_agents AS others, success, execution_ms, error "
        f"FROM {db}.task_executions FINAL WHERE {where} "
        f"ORDER BY {_TS}, task_id LIMIT %(limit)s"
    )
    return sql, params


def export_count(db: str, since_ms: int | None, until_ms: int | None, agent: str | None) -> Query:
    """The number of tasks the export with these filters writes."""
    params: dict[str, Any] = {}
    where = _export_where(since_ms, until_ms, agent, params)
    return f"SELECT count() FROM {db}.task_executions FINAL WHERE {where}", params
