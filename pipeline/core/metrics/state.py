"""What the metrics role remembers between messages, as pure data structures: capped label
values (an ``other`` bucket beyond the cap), the current state of each open task, each
agent's availability and load, and each alert's state.  No clock reads, no I/O: the
caller passes event times in and reads counts out.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.core.task_states import TERMINAL, target_state
from pipeline.events import TaskState

OTHER = "other"
UNKNOWN = "unknown"

#: states after which a task is no longer tracked (the lifecycle's final states)
FINAL_STATES = frozenset(s.value for s in TERMINAL)
TASK_STATES = tuple(s.value for s in TaskState)
#: open states (what the task board shows)
OPEN_STATES = tuple(s for s in TASK_STATES if s not in FINAL_STATES)
AGENT_STATUSES = ("online", "busy", "offline")


def task_state_of(event_type: str, current_state: dict[str, Any]) -> str | None:
    """The task state an event moves its task to (the lifecycle's own mapping), or None for
    events that do not move it.  ``task.progress`` does not count here: it may arrive
    before ``started``, and the gauge should not show a task executing before it is."""
    if event_type == "task.progress":
        return None
    state = target_state(event_type, current_state)
    return None if state is None else state.value


class LabelCap:
    """Admits the first ``limit`` distinct values of a label; later ones become ``other``.

    Empty values become ``unknown`` (not counted against the cap).  Admitted values are
    kept for the life of the process, so a series never changes bucket.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._admitted: set[str] = set()
        self.overflowed = 0

    def __call__(self, value: str) -> str:
        if not value:
            return UNKNOWN
        if value in self._admitted:
            return value
        if len(self._admitted) < self.limit:
            self._admitted.add(value)
            return value
        self.overflowed += 1
        return OTHER

    def __len__(self) -> int:
        return len(self._admitted)


class TaskStates:
    """task id → (state, event time of the last state change) for open tasks, bounded.

    Finished tasks are dropped (and remembered in a bounded set so that a late event of a
    finished task does not bring it back); beyond ``capacity`` open tasks the least
    recently updated is forgotten.  Events older than the task's last change are ignored
    (out-of-order delivery cannot move a task backwards).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._open: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._finished: OrderedDict[str, None] = OrderedDict()
        self.counts: Counter[str] = Counter()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._open)

    def state(self, task_id: str) -> str | None:
        entry = self._open.get(task_id)
        return entry[0] if entry else None

    def apply(self, task_id: str, state: str, event_time_ms: int) -> bool:
        """Move ``task_id`` to ``state`` (as of ``event_time_ms``); True when it changed."""
        if task_id in self._finished:
            return False
        entry = self._open.get(task_id)
        if entry is not None:
            old, at = entry
            if event_time_ms < at or old == state:
                return False
            self.counts[old] -= 1
            del self._open[task_id]
        if state in FINAL_STATES:
            self._finished[task_id] = None
            if len(self._finished) > self.capacity:
                self._finished.popitem(last=False)
            return True
        self._open[task_id] = (state, event_time_ms)
        self.counts[state] += 1
        if len(self._open) > self.capacity:
            _, (gone, _) = self._open.popitem(last=False)
            self.counts[gone] -= 1
            self.evicted += 1
        return True

    def seed(self, task_id: str, state: str, event_time_ms: int) -> None:
        """Load a known open task (e.g. from the ``tasks`` table at start)."""
        if task_id not in self._open and state in TASK_STATES:
            self.apply(task_id, state, event_time_ms)

    def forget(self, drop: Callable[[str], bool]) -> int:
        """Forget the open tasks whose id ``drop`` selects (partitions now read elsewhere)."""
        gone = [t for t in self._open if drop(t)]
        for task_id in gone:
            state, _ = self._open.pop(task_id)
            self.counts[state] -= 1
        return len(gone)


@dataclass(slots=True)
class AgentInfo:
    status: str = UNKNOWN
    status_at_ms: int = 0
    active_tasks: int = 0
    cpu_percent: float | None = None
    memory_mb: float | None = None


class AgentStates:
    """agent id → availability and load, bounded to ``capacity`` agents (oldest dropped)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.agents: OrderedDict[str, AgentInfo] = OrderedDict()

    def _get(self, agent: str) -> AgentInfo:
        info = self.agents.get(agent)
        if info is None:
            info = self.agents[agent] = AgentInfo()
            if len(self.agents) > self.capacity:
                self.agents.popitem(last=False)
        else:
            self.agents.move_to_end(agent)
        return info

    def status_changed(self, agent: str, status: str, active_tasks: int, event_time_ms: int) -> None:
        info = self._get(agent)
        if event_time_ms < info.status_at_ms:
            return
        info.status = status if status in AGENT_STATUSES else UNKNOWN
        info.status_at_ms = event_time_ms
        info.active_tasks = max(0, active_tasks)
        if status == "offline":
            info.active_tasks = 0

    def heartbeat(self, agent: str, state: dict[str, Any]) -> None:
        info = self._get(agent)
        active = state.get("active_tasks")
        if isinstance(active, int) and active >= 0 and info.status != "offline":
            info.active_tasks = active
        cpu, mem = state.get("cpu_percent"), state.get("memory_mb")
        if isinstance(cpu, int | float):
            info.cpu_percent = float(cpu)
        if isinstance(mem, int | float):
            info.memory_mb = float(mem)

    def seed(self, agent: str, status: str, active_tasks: int, status_ms: int,
             cpu_percent: float | None, memory_mb: float | None) -> None:  # fmt: skip
        """Load an agent's last known state (e.g. from the ``agent_status`` table at start)."""
        if agent in self.agents:
            return
        self.status_changed(agent, status, active_tasks, status_ms)
        info = self.agents[agent]
        info.cpu_percent, info.memory_mb = cpu_percent, memory_mb

    def forget(self, drop: Callable[[str], bool]) -> int:
        gone = [a for a in self.agents if drop(a)]
        for agent in gone:
            del self.agents[agent]
        return len(gone)

    def by_status(self) -> Counter[str]:
        return Counter(info.status for info in list(self.agents.values()))


class AlertStates:
    """alert key → (state, severity): how many alerts fire per severity right now."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._alerts: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def apply(self, key: str, state: str, severity: str) -> None:
        if state in ("resolved", "inactive"):
            self._alerts.pop(key, None)
            return
        self._alerts[key] = (state, severity)
        self._alerts.move_to_end(key)
        if len(self._alerts) > self.capacity:
            self._alerts.popitem(last=False)

    def forget(self, drop: Callable[[str], bool]) -> int:
        gone = [k for k in self._alerts if drop(k)]
        for key in gone:
            del self._alerts[key]
        return len(gone)

    def counts(self, state: str) -> Counter[str]:
        return Counter(sev for st, sev in list(self._alerts.values()) if st == state)


def alert_fields(record: dict[str, Any]) -> tuple[str, str, str] | None:
    """(key, state, severity) of one ``taskpulse.alerts`` record, or None when it has none.

    Tolerant of the record's exact shape: the key is ``fingerprint`` or ``key`` or ``id``
    (else rule name plus group), the state is ``state`` or ``status``.
    """
    state = record.get("state") or record.get("status")
    if not isinstance(state, str):
        return None
    labels = record.get("labels") if isinstance(record.get("labels"), dict) else {}
    severity = record.get("severity") or labels.get("severity") or UNKNOWN  # type: ignore[union-attr]
    key = record.get("fingerprint") or record.get("key") or record.get("alert_id")
    if not key:
        rule = record.get("rule") or record.get("name") or record.get("alertname") or ""
        group = record.get("group") or record.get("group_key") or labels
        key = f"{rule}|{group}"
    return str(key), state.lower(), str(severity)


class RecordVersions:
    """task id → highest lifecycle record version seen, bounded (oldest forgotten).

    ``classify`` tells a task's first record (``new``) from a correction (a higher
    version: ``corrected``) and from a redelivery of what was already seen (``replay``).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._versions: OrderedDict[str, int] = OrderedDict()

    def classify(self, task_id: str, version: int) -> str:
        seen = self._versions.get(task_id)
        if seen is not None and version <= seen:
            return "replay"
        self._versions[task_id] = version
        self._versions.move_to_end(task_id)
        if len(self._versions) > self.capacity:
            self._versions.popitem(last=False)
        return "new" if seen is None else "corrected"
