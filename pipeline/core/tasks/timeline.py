"""A task's event timeline for ``/api/v1/tasks/{id}``: its events in event-time order (the
order the lifecycle replays them in), each with the state it moved the task from and to and
whether the lifecycle allows that transition.  Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core.task_states import target_state
from pipeline.core.tasks.lifecycle import ALLOWED, HistoryEntry, compact, sort_key
from pipeline.events import TaskState


@dataclass(frozen=True)
class TimelineStep:
    event_id: str
    event_type: str
    time_ms: int
    from_state: str | None
    to_state: str | None
    #: False: the lifecycle does not allow this transition (it is applied anyway, and flagged)
    valid: bool


def timeline(events: list[tuple[str, str, int, dict[str, Any], dict[str, Any]]]) -> list[TimelineStep]:
    """``(id, event_type, time ms, current_state, metadata)`` of a task's events → its timeline."""
    entries = sorted(
        (compact(eid, et, t, state, md) for eid, et, t, state, md in events),
        key=sort_key,
    )
    out: list[TimelineStep] = []
    state: TaskState | None = None
    for e in entries:
        new = _target(e)
        if new is None:
            out.append(TimelineStep(e.event_id, e.event_type, e.time_ms, _v(state), None, True))
            continue
        valid = state is None or new in ALLOWED[state]
        out.append(TimelineStep(e.event_id, e.event_type, e.time_ms, _v(state), new.value, valid))
        state = new
    return out


def _target(e: HistoryEntry) -> TaskState | None:
    return target_state(e.event_type, e.data)


def _v(s: TaskState | None) -> str | None:
    return None if s is None else s.value
