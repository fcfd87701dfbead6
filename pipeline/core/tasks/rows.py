"""Correlation values → rows of ``tasks``, ``task_executions`` and ``agent_status``."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pipeline.core.tasks.correlation import agent_utilization, deadline_ms
from pipeline.core.tasks.lifecycle import TaskView
from pipeline.core.tasks.state import AgentSlot
from pipeline.core.timestamps import ms_to_datetime
from pipeline.events import TaskExecution

TASK_COLUMNS = [
    "task_id", "version", "state", "task_type", "group_key", "correlation_id", "agent", "priority",
    "requester_id", "created_at", "started_at", "finished_at", "last_event_at", "deadline", "progress",
    "retry_count", "invalid_transitions", "finished", "updated_at",
]  # fmt: skip

EXECUTION_COLUMNS = [
    "task_id", "version", "finished_at", "created_at", "queued_at", "assigned_at", "started_at",
    "task_type", "group_key", "correlation_id", "requester_id", "requester_type", "request", "priority",
    "agent", "confidence", "other_agents", "outcome", "success", "final_state", "error", "retry_count",
    "queue_wait_ms", "execution_ms", "review_ms", "cycle_ms", "paused_ms", "progress_checkpoints",
    "invalid_transitions", "invalid_transition_list", "events", "abandoned_verdicts", "history_dropped",
    "updated_at", "cost", "currency", "tokens", "unpriced_tokens",
]  # fmt: skip

AGENT_COLUMNS = [
    "agent", "version", "status", "status_since", "last_seen", "online_since", "active_tasks",
    "cpu_percent", "memory_mb", "busy_s", "online_s", "utilization", "updated_at",
]  # fmt: skip


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else ms_to_datetime(ms)


def task_rows(views: Iterable[tuple[TaskView, int]], now: datetime) -> list[tuple[Any, ...]]:
    rows = []
    for v, version in views:
        rows.append((
            v.task_id, version, v.state.value if v.state else "", v.task_type, v.group, v.correlation_id,
            v.agent, v.priority, v.requester_id, _dt(v.created_ms), _dt(v.started_ms),
            _dt(v.finished_ms), _dt(v.last_ms or 0), _dt(deadline_ms(v)), v.progress, v.retry_count,
            v.invalid_transitions, v.finished, now,
        ))  # fmt: skip
    return rows


def execution_rows(records: Iterable[TaskExecution], now: datetime) -> list[tuple[Any, ...]]:
    rows = []
    for r in records:
        rows.append((
            r.task_id, r.version, _dt(r.finished_ms), _dt(r.created_ms), _dt(r.queued_ms),
            _dt(r.assigned_ms), _dt(r.started_ms), r.task_type, r.group, r.correlation_id,
            r.requester_id, r.requester_type, r.request, r.priority, r.agent, r.confidence,
            r.other_agents, r.outcome, r.success, r.final_state.value, r.error, r.retry_count,
            r.queue_wait_ms, r.execution_ms, r.review_ms, r.cycle_ms, r.paused_ms,
            r.progress_checkpoints, r.invalid_transitions, r.invalid_transition_list, r.events,
            r.abandoned_verdicts, r.history_dropped, now, r.cost, r.currency, r.tokens, r.unpriced_tokens,
        ))  # fmt: skip
    return rows


def agent_rows(agents: dict[str, AgentSlot], now: datetime, now_ms: int) -> list[tuple[Any, ...]]:
    rows = []
    for agent, a in agents.items():
        rows.append((
            agent, a.version, a.status, _dt(a.since_ms), _dt(a.seen_ms), _dt(a.online_since_ms),
            a.active_tasks, a.cpu_percent, a.memory_mb, a.busy_ms / 1000, a.online_ms / 1000,
            agent_utilization(a, max(now_ms, a.since_ms)), now,
        ))  # fmt: skip
    return rows
