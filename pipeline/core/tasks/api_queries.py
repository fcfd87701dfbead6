"""The tasks domain's queries behind the HTTP API's resources (``/api/v1/tasks``, ``agents``,
``groups``), as text plus parameters like ``queries``.  Lists page by keyset
(``core.paging``): each query asks for ``limit + 1`` rows after the cursor's key.  Pure.

Every read of a ReplacingMergeTree uses ``FINAL``: one row per task / agent, its latest
version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.core.paging import Filters

Query = tuple[str, dict[str, Any]]

TASK_COLUMNS = (
    "task_id", "state", "task_type", "group_key", "correlation_id", "agent", "priority", "requester_id",
    "created_at", "started_at", "finished_at", "last_event_at", "deadline", "progress", "retry_count",
    "invalid_transitions", "finished",
)  # fmt: skip

#: sort name → the Int64 key expression of a task (tie-break: task_id in the same direction)
TASK_SORTS: dict[str, str] = {
    "-last_event_at": "toUnixTimestamp64Milli(last_event_at)",
    "last_event_at": "toUnixTimestamp64Milli(last_event_at)",
    "-created_at": "ifNull(toUnixTimestamp64Milli(created_at), 0)",
    "created_at": "ifNull(toUnixTimestamp64Milli(created_at), 0)",
    "task_id": "toInt64(0)",
    "-task_id": "toInt64(0)",
}


@dataclass(frozen=True)
class TaskFilter:
    """``/api/v1/tasks`` filters; each list matches any of its values; ``since_ms`` /
    ``until_ms`` bound the task's last activity (``last_event_at``), ``[since, until)``."""

    states: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    task_types: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    finished: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def where(self, params: dict[str, Any]) -> str:
        out = ["1"]
        for col, values, name in (
            ("state", self.states, "states"), ("agent", self.agents, "agents"),
            ("task_type", self.task_types, "types"), ("group_key", self.groups, "groups"),
        ):  # fmt: skip
            if values:
                out.append(f"{col} IN %({name})s")
                params[name] = list(values)
        if self.since_ms is not None:
            out.append("last_event_at >= fromUnixTimestamp64Milli(%(since)s, 'UTC')")
            params["since"] = int(self.since_ms)
        if self.until_ms is not None:
            out.append("last_event_at < fromUnixTimestamp64Milli(%(until)s, 'UTC')")
            params["until"] = int(self.until_ms)
        if self.finished is not None:
            out.append("finished = %(finished)s")
            params["finished"] = self.finished
        return " AND ".join(out)


def tasks_page(db: str, f: TaskFilter, sort: str, after: tuple[int, str] | None, limit: int) -> Query:
    """``TASK_COLUMNS`` and the sort key of up to ``limit + 1`` tasks after ``after``."""
    key = TASK_SORTS[sort]
    desc = sort.startswith("-")
    params: dict[str, Any] = {"limit": int(limit) + 1}
    where = f.where(params)
    if after is not None:
        where += f" AND (k, task_id) {'<' if desc else '>'} (%(after_k)s, %(after_id)s)"
        params["after_k"], params["after_id"] = int(after[0]), str(after[1])
    order = "DESC" if desc else "ASC"
    sql = (
        f"SELECT {', '.join(TASK_COLUMNS)}, {key} AS k FROM {db}.tasks FINAL WHERE {where} "
        f"ORDER BY k {order}, task_id {order} LIMIT %(limit)s"
    )
    return sql, params


def task_count(db: str, f: TaskFilter) -> Query:
    params: dict[str, Any] = {}
    return f"SELECT count() FROM {db}.tasks FINAL WHERE {f.where(params)}", params


def task_record(db: str, task_id: str) -> Query:
    return f"SELECT {', '.join(TASK_COLUMNS)} FROM {db}.tasks FINAL WHERE task_id = %(id)s", {"id": task_id}


EXECUTION_COLUMNS = (
    "finished_at", "outcome", "success", "final_state", "error", "confidence", "other_agents", "queue_wait_ms",
    "execution_ms", "review_ms", "cycle_ms", "paused_ms", "invalid_transition_list", "request",
)  # fmt: skip


def task_execution(db: str, task_id: str) -> Query:
    """The finished task's ``task_executions`` row (none while it is open)."""
    return (
        f"SELECT {', '.join(EXECUTION_COLUMNS)} FROM {db}.task_executions FINAL WHERE task_id = %(id)s",
        {"id": task_id},
    )


def task_timeline(db: str, task_id: str, cap: int) -> Query:
    """(id, event_type, event time ms, current_state, metadata) of a task's events, at most ``cap``."""
    return (
        "SELECT id, event_type, toUnixTimestamp64Milli(event_time) AS t, current_state, metadata "
        f"FROM {db}.events WHERE entity_type = 'task' AND entity_id = %(id)s ORDER BY t, id LIMIT %(cap)s",
        {"id": task_id, "cap": int(cap)},
    )


AGENT_COLUMNS = (
    "agent", "status", "last_seen", "uptime_s", "active_tasks", "cpu_percent", "memory_mb", "utilization",
    "tasks_completed_today", "tasks_finished_today", "success_rate", "avg_handling_ms",
)  # fmt: skip


def agents_page(db: str, statuses: tuple[str, ...], after: str | None, limit: int) -> Query:
    """``AGENT_COLUMNS`` of up to ``limit + 1`` agents after ``after``, by name."""
    f = Filters(limit)
    if statuses:
        f.add("status IN %(statuses)s", statuses=list(statuses))
    if after is not None:
        f.add("agent > %(after)s", after=after)
    return (
        f"SELECT {', '.join(AGENT_COLUMNS)} FROM {db}.agent_overview WHERE {f.sql} "
        "ORDER BY agent LIMIT %(limit)s",
        f.params,
    )


def agent_record(db: str, agent: str) -> Query:
    return f"SELECT {', '.join(AGENT_COLUMNS)} FROM {db}.agent_overview WHERE agent = %(a)s", {"a": agent}


def agent_current_tasks(db: str, agent: str, cap: int) -> Query:
    """(task_id, state, task_type, last event) of the agent's open tasks, latest first."""
    return (
        f"SELECT task_id, state, task_type, last_event_at FROM {db}.tasks FINAL "
        "WHERE agent = %(a)s AND NOT finished ORDER BY last_event_at DESC, task_id LIMIT %(cap)s",
        {"a": agent, "cap": int(cap)},
    )


def agent_recent_executions(db: str, agent: str, cap: int) -> Query:
    """(task_id, task_type, outcome, finished_at, execution_ms, queue_wait_ms) of the agent's latest finished tasks."""
    return (
        f"SELECT task_id, task_type, outcome, finished_at, execution_ms, queue_wait_ms FROM {db}.task_executions "
        "FINAL WHERE agent = %(a)s ORDER BY finished_at DESC, task_id LIMIT %(cap)s",
        {"a": agent, "cap": int(cap)},
    )


GROUP_COLUMNS = (
    "group_key", "total", "pending", "in_progress", "completed", "failed", "percentage", "first_created_at",
    "last_finished_at", "estimated_completion",
)  # fmt: skip


def groups_page(db: str, after: str | None, limit: int) -> Query:
    """``GROUP_COLUMNS`` of up to ``limit + 1`` task groups after ``after``, by key."""
    params: dict[str, Any] = {"limit": int(limit) + 1}
    where = "1"
    if after is not None:
        where = "group_key > %(after)s"
        params["after"] = after
    return (
        f"SELECT {', '.join(GROUP_COLUMNS)} FROM {db}.task_groups WHERE {where} ORDER BY group_key LIMIT %(limit)s",
        params,
    )


def group_record(db: str, key: str) -> Query:
    return f"SELECT {', '.join(GROUP_COLUMNS)} FROM {db}.task_groups WHERE group_key = %(key)s", {"key": key}
