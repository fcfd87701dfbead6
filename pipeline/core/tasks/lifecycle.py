"""The task state machine and the durations derived from a task's events.  Pure.

A task's state is its *history*: the distinct events seen for it (by id), kept in event-time
order.  Everything else (current state, timestamps, durations, invalid transitions) is
derived by replaying that history, so events that arrive out of order across partitions
and producers are put in their place, and a replayed or duplicate event changes nothing.

Seed 003's machine::

    CREATED → QUEUED → ASSIGNED → EXECUTING → REVIEWING → COMPLETED
                          ↓           ↓           ↓
                       FAILED      PAUSED      REJECTED
                          ↓           ↓           ↓
                        RETRY      RESUMED    REASSIGNED

A transition the machine does not allow is applied anyway (emitters are sloppy), counted
and flagged (``invalid_transitions``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pipeline.core.cost import PriceTable, Usage, task_cost, usage_of
from pipeline.core.task_states import TERMINAL, target_state
from pipeline.events import TaskExecution, TaskState, error_text

S = TaskState
#: open states in which silence means the task may have been abandoned
ACTIVE = frozenset({S.ASSIGNED, S.EXECUTING, S.REVIEWING, S.REJECTED, S.RETRY})

ALLOWED: dict[TaskState, frozenset[TaskState]] = {
    S.CREATED: frozenset({S.QUEUED, S.ASSIGNED, S.CANCELLED, S.FAILED}),
    S.QUEUED: frozenset({S.ASSIGNED, S.CANCELLED, S.FAILED}),
    S.ASSIGNED: frozenset({S.ASSIGNED, S.QUEUED, S.EXECUTING, S.FAILED, S.CANCELLED}),
    S.EXECUTING: frozenset(
        # REJECTED directly: a review event that failed the work (review start not reported)
        {S.EXECUTING, S.REVIEWING, S.REJECTED, S.COMPLETED, S.FAILED, S.RETRY, S.PAUSED, S.CANCELLED,
         S.ABANDONED}
    ),
    S.PAUSED: frozenset({S.EXECUTING, S.CANCELLED, S.FAILED, S.ABANDONED}),
    S.REVIEWING: frozenset({S.REVIEWING, S.COMPLETED, S.REJECTED, S.FAILED, S.CANCELLED}),
    S.REJECTED: frozenset({S.ASSIGNED, S.QUEUED, S.EXECUTING, S.FAILED, S.CANCELLED}),
    S.FAILED: frozenset({S.RETRY}),
    S.RETRY: frozenset({S.QUEUED, S.ASSIGNED, S.EXECUTING, S.FAILED, S.CANCELLED}),
    # a task closed as abandoned that reports again is corrected, not an error
    S.ABANDONED: frozenset({S.EXECUTING, S.REVIEWING, S.COMPLETED, S.FAILED, S.RETRY, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
}

#: tie-break for events with the same timestamp: the lifecycle's natural order
_RANK = {
    "task.created": 0, "task.queued": 1, "task.assigned": 2, "task.started": 3, "task.resumed": 4,
    "task.progress": 5, "task.status_changed": 6, "task.paused": 7, "task.review": 8,
    "task.failed": 9, "task.completed": 10, "task.cancelled": 11, "task.abandoned": 12,
}  # fmt: skip

#: current_state fields worth keeping per event type (everything else is not needed here)
_KEEP = {
    "task.created": ("request", "requester_id", "requester_type", "priority", "deadline"),
    "task.assigned": ("confidence", "evaluations"),
    "task.progress": ("percentage", "step"),
    "task.status_changed": ("status",),
    "task.review": ("passed",),
    "task.completed": ("success", "error"),
    "task.failed": ("error", "retry_count", "will_retry"),
}


class HistoryEntry(NamedTuple):
    """The part of a task event the lifecycle needs (persisted as ``[time_ms, rank, id, type, data]``)."""

    time_ms: int
    #: tie-break for events with the same time: the lifecycle's natural order
    rank: int
    event_id: str
    event_type: str
    #: the event's fields the lifecycle reads (``_KEEP``), task type, agent, correlation id, group
    data: dict[str, Any]

    @classmethod
    def from_json(cls, doc: list[Any] | tuple[Any, ...]) -> HistoryEntry:
        """An entry from its persisted form (a JSON array)."""
        time_ms, rank, event_id, event_type, data = doc
        return cls(int(time_ms), int(rank), str(event_id), str(event_type), dict(data))

    def to_json(self) -> list[Any]:
        return [self.time_ms, self.rank, self.event_id, self.event_type, self.data]


def compact(
    event_id: str,
    event_type: str,
    time_ms: int,
    state: dict[str, Any],
    metadata: dict[str, Any],
    group_keys: tuple[str, ...] = ("group", "correlation_id"),
    metrics: dict[str, Any] | None = None,
) -> HistoryEntry:
    """The part of a task event the lifecycle needs (``usage``: the cost or tokens its
    ``metrics`` report, ``pipeline.core.cost``)."""
    get = state.get
    keep = _KEEP.get(event_type)
    data: dict[str, Any] = {k: state[k] for k in keep if get(k) is not None} if keep else {}
    if metrics:
        usage = usage_of(metrics)
        if usage:
            data["usage"] = usage
    if v := get("task_type"):
        data["task_type"] = str(v)
    if v := get("agent_id"):
        data["agent_id"] = str(v)
    if v := metadata.get("correlation_id"):
        data["correlation_id"] = str(v)
    for k in group_keys:
        if v := get(k) or metadata.get(k):
            data["group"] = str(v)
            break
    return HistoryEntry(time_ms, _RANK.get(event_type, 6), event_id, event_type, data)


@dataclass
class TaskView:
    """What a task's history says about it."""

    task_id: str
    state: TaskState | None = None
    task_type: str = ""
    group: str = ""
    correlation_id: str = ""
    requester_id: str = ""
    requester_type: str = ""
    request: str = ""
    priority: str = ""
    deadline_raw: Any = None
    agent: str = ""
    confidence: float | None = None
    evaluations: dict[str, float] = field(default_factory=dict)
    error: str = ""
    retry_count: int = 0
    created_ms: int | None = None
    queued_ms: int | None = None
    assigned_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    first_ms: int | None = None
    last_ms: int | None = None
    review_ms: float | None = None
    paused_ms: float = 0.0
    progress: float = 0.0
    progress_checkpoints: int = 0
    invalid_transitions: int = 0
    invalid: list[str] = field(default_factory=list)
    events: int = 0
    #: times taskpulse judged the task abandoned (kept when a real outcome overrules it)
    abandoned_verdicts: int = 0
    #: events dropped from the history by its length cap (counted in ``events``)
    history_dropped: int = 0
    #: the usage (cost, tokens) each of the task's events reported
    usages: list[Usage] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def record(self, version: int, prices: PriceTable | None = None) -> TaskExecution:
        """The lifecycle record of a finished task; ``prices`` turn reported tokens into cost."""
        spent = task_cost(self.usages, prices)
        assert self.state in TERMINAL and self.finished_ms is not None
        outcome = {
            S.COMPLETED: "success", S.FAILED: "failure", S.CANCELLED: "cancelled", S.ABANDONED: "abandoned",
        }[self.state]  # fmt: skip
        fin = self.finished_ms
        wait_from = self.queued_ms if self.queued_ms is not None else self.created_ms
        return TaskExecution(
            task_id=self.task_id,
            version=version,
            task_type=self.task_type,
            group=self.group,
            correlation_id=self.correlation_id,
            requester_id=self.requester_id,
            requester_type=self.requester_type,
            request=self.request,
            priority=self.priority,
            agent=self.agent,
            confidence=self.confidence,
            other_agents={a: c for a, c in self.evaluations.items() if a != self.agent},
            outcome=outcome,  # type: ignore[arg-type]
            success=self.state == S.COMPLETED,
            final_state=self.state,
            error="" if self.state == S.COMPLETED else self.error,  # a retried success has no error
            retry_count=self.retry_count,
            created_ms=self.created_ms,
            queued_ms=self.queued_ms,
            assigned_ms=self.assigned_ms,
            started_ms=self.started_ms,
            finished_ms=fin,
            queue_wait_ms=_span(wait_from, self.started_ms),
            execution_ms=_span(self.started_ms, fin),
            review_ms=self.review_ms,
            cycle_ms=_span(self.created_ms if self.created_ms is not None else self.first_ms, fin),
            paused_ms=self.paused_ms,
            progress_checkpoints=self.progress_checkpoints,
            invalid_transitions=self.invalid_transitions,
            invalid_transition_list=list(self.invalid),
            events=self.events,
            abandoned_verdicts=self.abandoned_verdicts,
            history_dropped=self.history_dropped,
            cost=spent.cost,
            currency=spent.currency,
            tokens=spent.tokens,
            unpriced_tokens=spent.unpriced_tokens,
        )


def _span(a: int | None, b: int | None) -> float | None:
    if a is None or b is None:
        return None
    return float(max(0, b - a))


def sort_key(entry: HistoryEntry) -> tuple[int, int, str]:
    return (entry.time_ms, entry.rank, entry.event_id)


def derive(
    task_id: str,
    history: list[HistoryEntry],
    abandoned_at: int | None = None,
    verdicts: int = 0,
    dropped: int = 0,
    dropped_progress: int = 0,
) -> TaskView:
    """Replay a task's history (any order; it is sorted here) through the state machine.

    ``abandoned_at`` is taskpulse's abandonment verdict (the deadline, event time): it is
    not an event of the task and never outranks one.  It closes the task as ABANDONED only
    when the task's own events leave it open; any terminal event of the task wins.
    ``dropped`` / ``dropped_progress``: events the history cap removed (still counted)."""
    v = TaskView(task_id=task_id, abandoned_verdicts=verdicts, history_dropped=dropped)
    v.events = dropped
    v.progress_checkpoints = dropped_progress
    in_state_since: int | None = None
    review_total = 0.0
    reviewed = False
    first_queued: int | None = None
    for t, _rank, _eid, et, data in sorted(history, key=sort_key):
        v.events += 1
        if v.first_ms is None:
            v.first_ms = t
        v.last_ms = t
        if "usage" in data:
            v.usages.append(data["usage"])
        if data.get("task_type") and not v.task_type:
            v.task_type = data["task_type"]
        if data.get("correlation_id") and not v.correlation_id:
            v.correlation_id = data["correlation_id"]
        if data.get("group") and not v.group:
            v.group = data["group"]
        if et == "task.created":
            if v.created_ms is None:
                v.created_ms = t
            v.request = str(data.get("request") or v.request)
            v.requester_id = str(data.get("requester_id") or v.requester_id)
            v.requester_type = str(data.get("requester_type") or v.requester_type)
            v.priority = str(data.get("priority") or v.priority)
            if data.get("deadline") is not None:
                v.deadline_raw = data["deadline"]
        elif et == "task.queued" and first_queued is None:
            first_queued = t
        elif et == "task.assigned":
            v.assigned_ms = v.assigned_ms if v.assigned_ms is not None else t
            v.agent = str(data.get("agent_id") or v.agent)
            v.confidence = data.get("confidence")
            evals = data.get("evaluations") or {}
            v.evaluations = {str(a): float(c) for a, c in evals.items()}
            if v.agent and v.confidence is None and v.agent in v.evaluations:
                v.confidence = v.evaluations[v.agent]
        elif et == "task.started" and v.started_ms is None:
            v.started_ms = t
        elif et == "task.progress":
            v.progress_checkpoints += 1
            v.progress = float(data.get("percentage", v.progress))
        elif et == "task.failed" or (et == "task.completed" and data.get("success") is False):
            # the decoder gives the error as text (from error_message or an error object too)
            v.error = str(error_text(data.get("error")) or v.error)
            if data.get("will_retry"):
                v.retry_count = max(v.retry_count + 1, int(data.get("retry_count", 0)) + 1)
            else:
                v.retry_count = max(v.retry_count, int(data.get("retry_count", 0)))
        if data.get("agent_id") and not v.agent:
            v.agent = data["agent_id"]

        new = target_state(et, data)
        if new is None:
            continue
        old = v.state
        if old is not None and new not in ALLOWED[old]:
            v.invalid_transitions += 1
            v.invalid.append(f"{old.value}->{new.value}")
        elif old is None and new not in (S.CREATED, S.QUEUED):
            # the task's first events were never seen: not an error of the task's
            pass
        # time spent in the state we leave
        if old is not None and in_state_since is not None:
            if old == S.PAUSED:
                v.paused_ms += t - in_state_since
            elif old == S.REVIEWING:
                review_total += t - in_state_since
        if new == S.REVIEWING:
            reviewed = True
        if new == S.EXECUTING and v.started_ms is None:
            v.started_ms = t
        if new in TERMINAL:
            v.finished_ms = t
            if new == S.COMPLETED:
                v.progress = 100.0
        elif old in TERMINAL:
            v.finished_ms = None  # reopened (a retry after a final failure, a late report)
        if old != new or in_state_since is None:
            in_state_since = t
        v.state = new
    if abandoned_at is not None and v.state not in TERMINAL:
        # the verdict: closed at the deadline (not a transition of the task's own)
        if v.state == S.REVIEWING and in_state_since is not None:
            review_total += max(0, abandoned_at - in_state_since)
        elif v.state == S.PAUSED and in_state_since is not None:
            v.paused_ms += max(0, abandoned_at - in_state_since)
        v.state = S.ABANDONED
        v.finished_ms = abandoned_at
    v.queued_ms = first_queued
    v.review_ms = review_total if reviewed else None
    return v


ABANDONED_ID_PREFIX = "taskpulse:abandoned:"


def abandoned_event_id(task_id: str, n: int) -> str:
    """The id of the ``task.abandoned`` event taskpulse emits for its ``n``-th verdict on a
    task; deterministic, so a replay after a crash produces the same id."""
    return f"{ABANDONED_ID_PREFIX}{task_id}:{n}"


def verdict_number(task_id: str, event_id: str) -> int | None:
    """``n`` when ``event_id`` is taskpulse's own ``n``-th abandonment verdict on the task."""
    prefix = f"{ABANDONED_ID_PREFIX}{task_id}:"
    if not event_id.startswith(prefix):
        return None
    tail = event_id[len(prefix) :]
    return int(tail) if tail.isdigit() else None


def abandon_reason(timeout_s: float) -> str:
    return f"no progress, heartbeat or completion for {timeout_s:g}s"
