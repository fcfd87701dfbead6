"""Which state a task event moves its task to, and which states are final.  A shared core
module: the task lifecycle (``core.tasks``) and the metrics role's state (``core.metrics``)
read tasks the same way.  Pure.
"""

from __future__ import annotations

from typing import Any

from pipeline.events import TaskState, task_state_of

S = TaskState
#: states after which a task is closed
TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.ABANDONED})


def target_state(event_type: str, data: dict[str, Any]) -> TaskState | None:
    """The state an event moves its task to (None: the event type is not a task transition)."""
    if event_type == "task.created":
        return S.CREATED
    if event_type == "task.queued":
        return S.QUEUED
    if event_type == "task.assigned":
        return S.ASSIGNED
    if event_type in ("task.started", "task.resumed", "task.progress"):
        return S.EXECUTING
    if event_type == "task.review":
        return S.REVIEWING if data.get("passed", True) else S.REJECTED
    if event_type == "task.completed":
        return S.COMPLETED if data.get("success", True) else S.FAILED
    if event_type == "task.failed":
        return S.RETRY if data.get("will_retry") else S.FAILED
    if event_type == "task.paused":
        return S.PAUSED
    if event_type == "task.cancelled":
        return S.CANCELLED
    if event_type == "task.abandoned":
        return S.ABANDONED
    if event_type == "task.status_changed":
        return task_state_of(data.get("status"))
    return None
