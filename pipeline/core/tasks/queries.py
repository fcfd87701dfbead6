"""The tasks domain's queries, as text plus parameters (``%(name)s`` placeholders, bound by
the ClickHouse client): what the correlation role reads back after a recovery, what the
metrics role seeds its gauges from, and a task group's progress for ``taskpulse status
--group``.  Pure."""

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
    """(task_id, id, event_type, event time ms, current_state, metadata) of the given tasks' events."""
    return (
        "SELECT entity_id, id, event_type, toUnixTimestamp64Milli(event_time), current_state, metadata "
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
