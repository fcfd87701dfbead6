"""Correlation: per-task and per-agent state from normalized events.  Pure: the wall clock
comes in as an argument, and persistence is the caller's (the slots are plain JSON).

* Tasks: each task's distinct events (its history) are kept in event-time order; a task
  that reached a final state is published once its events have had ``reorder_window_s``
  (wall clock) to arrive, and again, with a higher version, if a later event changes it.
  A started task that stays silent for ``abandon_after_s`` of *stream time* is closed as
  ABANDONED (a ``task.abandoned`` event with a deterministic id is emitted).
* Agents: online / busy / offline from heartbeats, self-reports and online/offline events;
  offline after ``agent_offline_after_s`` of stream-time silence; each change is emitted as
  an ``agent.status_changed`` event, so availability can be charted over time.

Stream time is the newest event time seen, advanced by the wall clock while the stream is
quiet: replaying history does not abandon tasks whose next event is simply not read yet.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.lifecycle import ACTIVE, TERMINAL, TaskView, abandon_entry, compact, derive
from pipeline.core.timestamps import TimestampError, ms_to_datetime, to_epoch_ms
from pipeline.events import NormalizedEvent, TaskExecution

Slot = dict[str, Any]


@dataclass(frozen=True)
class CorrelationConfig:
    reorder_window_s: float = 2.0
    abandon_after_s: float = 3600.0
    abandon_after_by_type: dict[str, float] = field(default_factory=dict)
    agent_offline_after_s: float = 90.0
    group_keys: tuple[str, ...] = ("group", "correlation_id")
    #: closed tasks are forgotten this long (wall clock) after their record is published
    keep_closed_s: float = 600.0
    #: abandoned tasks are kept longer: a late completion corrects their record
    keep_abandoned_s: float = 86_400.0

    def abandon_after_ms(self, task_type: str) -> int:
        return int(self.abandon_after_by_type.get(task_type, self.abandon_after_s) * 1000)


@dataclass
class Output:
    """What a batch (or a timer tick) asks the sinks to write."""

    task_rows: dict[str, tuple[TaskView, int]] = field(default_factory=dict)  # id → (view, version)
    executions: list[TaskExecution] = field(default_factory=list)
    agent_rows: dict[str, Slot] = field(default_factory=dict)
    #: events taskpulse emits (task.abandoned, agent.status_changed), as envelope dicts
    emitted: list[dict[str, Any]] = field(default_factory=list)
    #: slots to persist (None: delete) per table
    dirty_tasks: dict[str, Slot | None] = field(default_factory=dict)
    dirty_agents: dict[str, Slot | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.task_rows or self.executions or self.agent_rows or self.emitted or
                    self.dirty_tasks or self.dirty_agents)  # fmt: skip


def _iso(ms: int) -> str:
    return ms_to_datetime(ms).isoformat(timespec="milliseconds")


class Correlator:
    """Task and agent state machines over the normalized stream."""

    def __init__(self, config: CorrelationConfig) -> None:
        self.config = config
        self.tasks: dict[str, Slot] = {}
        self.agents: dict[str, Slot] = {}
        self.max_event_ms: int | None = None
        self.max_event_wall_ms = 0
        self.counters = {"task_events": 0, "agent_events": 0, "records": 0, "corrections": 0,
                         "abandoned": 0, "invalid_transitions": 0}  # fmt: skip
        # Indexes over self.tasks, so that a tick costs what is due, not every task held
        # (not persisted: rebuilt by restore).
        self._due: dict[str, int] = {}  # task → wall ms its reordering window ends
        self._deadlines: list[tuple[int, str]] = []  # heap: (stream ms it is abandoned, task)
        self._closed: deque[tuple[int, str]] = deque()  # (wall ms closed, task), oldest first
        self._closed_abandoned: deque[tuple[int, str]] = deque()
        self._by_agent: dict[str, set[str]] = {}  # agent → its open, started tasks

    # ------------------------------------------------------------------ time
    def stream_ms(self, wall_ms: int) -> int:
        """Newest event time, advanced by the wall clock since it was seen (never ahead of it)."""
        if self.max_event_ms is None:
            return wall_ms
        return min(wall_ms, self.max_event_ms + max(0, wall_ms - self.max_event_wall_ms))

    def _saw(self, t: int, wall_ms: int) -> None:
        if self.max_event_ms is None or t > self.max_event_ms:
            self.max_event_ms = t
            self.max_event_wall_ms = wall_ms

    # ------------------------------------------------------------------ restore
    def restore(self, tasks: dict[str, Slot], agents: dict[str, Slot], wall_ms: int) -> None:
        """Take the persisted slots (after a restart).  Stream time resumes from the newest
        event time they hold, not from the wall clock: the time the worker was down must
        not count as silence of the tasks and agents whose events wait in Kafka."""
        self.tasks.update(tasks)
        self.agents.update(agents)
        times = [s["last"] for s in tasks.values() if s["h"]] + [a["seen"] for a in agents.values()]
        if times:
            self._saw(max(times), wall_ms)
        window_ms = int(self.config.reorder_window_s * 1000)
        for task_id, slot in sorted(tasks.items(), key=lambda kv: kv[1]["closed"] or 0):
            if slot["closed"] is not None:
                self._closed.append((slot["closed"], task_id))
            elif slot["term"] is not None:
                self._due[task_id] = slot["term"] + window_ms
            else:
                self._watch(task_id, slot, derive(task_id, slot["h"]))

    def repair(self, task_id: str, entries: list[list[Any]], version: int, wall_ms: int) -> Output:
        """Merge events read back from the ``events`` table into a task whose persisted state
        is missing or older than what ClickHouse shows (a changelog that lost its tail)."""
        out = Output()
        slot = self.tasks.get(task_id)
        if slot is None:
            slot = self.tasks[task_id] = {"h": [], "v": 0, "rv": 0, "sig": None, "term": None, "ab": 0,
                                          "closed": None, "wall": wall_ms, "last": 0}  # fmt: skip
        known = {e[2] for e in slot["h"]}
        for entry in entries:
            if entry[2] not in known:
                slot["h"].append(entry)
                known.add(entry[2])
                slot["last"] = max(slot["last"], entry[0])
        slot["v"] = max(slot["v"], version)
        slot["wall"] = wall_ms
        self._task_changed(task_id, out)
        return out

    # ------------------------------------------------------------------ events
    def apply(self, events: list[NormalizedEvent], wall_ms: int) -> Output:
        out = Output()
        touched: set[str] = set()
        for ev in events:
            if ev.entity_type.value == "task" and ev.event_type.startswith("task."):
                if self._apply_task(ev, wall_ms):
                    touched.add(ev.entity_id)
            elif ev.entity_type.value == "agent" and ev.event_type != "agent.status_changed":
                self._apply_agent(ev, out)
                self._saw(ev.event_time_ms, wall_ms)
        for task_id in touched:
            self._task_changed(task_id, out)
        self._tick(wall_ms, out)
        return out

    def _apply_task(self, ev: NormalizedEvent, wall_ms: int) -> bool:
        self.counters["task_events"] += 1
        slot = self.tasks.get(ev.entity_id)
        if slot is None:
            slot = self.tasks[ev.entity_id] = {"h": [], "v": 0, "rv": 0, "sig": None, "term": None, "ab": 0,
                                               "closed": None, "wall": wall_ms, "last": ev.event_time_ms}  # fmt: skip
        if any(e[2] == ev.id for e in slot["h"]):
            return False  # the same event again (a replay): nothing changes
        entry = compact(ev.id, ev.event_type, ev.event_time_ms, ev.current_state, ev.metadata,
                        self.config.group_keys)  # fmt: skip
        slot["h"].append(entry)
        slot["wall"] = wall_ms
        slot["last"] = max(slot["last"], ev.event_time_ms)
        self._saw(ev.event_time_ms, wall_ms)
        return True

    def _task_changed(self, task_id: str, out: Output) -> None:
        slot = self.tasks[task_id]
        view = derive(task_id, slot["h"])
        slot["v"] += 1
        if view.finished:
            if slot["term"] is None:
                slot["term"] = slot["wall"]
        else:
            slot["term"] = None
        slot["closed"] = None
        out.task_rows[task_id] = (view, slot["v"])
        out.dirty_tasks[task_id] = slot
        if slot["term"] is not None:
            self._due[task_id] = slot["term"] + int(self.config.reorder_window_s * 1000)
        else:
            self._due.pop(task_id, None)
            self._watch(task_id, slot, view)

    def _watch(self, task_id: str, slot: Slot, view: TaskView) -> None:
        """Put an open, started task on the abandonment heap (stale entries are skipped), and
        index it by its agent, whose heartbeats keep it alive."""
        if slot.get("ag"):
            self._by_agent.get(slot["ag"], set()).discard(task_id)
            slot["ag"] = ""
        if view.state in ACTIVE and view.started_ms is not None:
            slot["tt"] = view.task_type
            deadline = _alive(slot) + self.config.abandon_after_ms(view.task_type)
            heapq.heappush(self._deadlines, (deadline, task_id))
            if view.agent:
                self._by_agent.setdefault(view.agent, set()).add(task_id)
                slot["ag"] = view.agent

    def _agent_alive(self, agent: str, t: int, out: Output) -> None:
        """A heartbeat or self-report of ``agent`` at ``t``: its open tasks are not silent."""
        for task_id in list(self._by_agent.get(agent, ())):
            slot = self.tasks.get(task_id)
            if slot is None or slot["closed"] is not None or slot["term"] is not None:
                self._by_agent[agent].discard(task_id)
                continue
            if t > _alive(slot):
                slot["alive"] = t
                timeout = self.config.abandon_after_ms(slot.get("tt", ""))
                heapq.heappush(self._deadlines, (t + timeout, task_id))
                out.dirty_tasks[task_id] = slot

    # ------------------------------------------------------------------ timers
    def tick(self, wall_ms: int) -> Output:
        """Finalize, abandon, take agents offline, forget old tasks: run on a timer too."""
        out = Output()
        self._tick(wall_ms, out)
        return out

    def _tick(self, wall_ms: int, out: Output) -> None:
        cfg = self.config
        now = self.stream_ms(wall_ms)
        for task_id in [t for t, d in self._due.items() if d <= wall_ms]:
            slot = self.tasks.get(task_id)
            del self._due[task_id]
            if slot is not None and slot["term"] is not None:
                self._finalize(task_id, slot, out, wall_ms)
        while self._deadlines and self._deadlines[0][0] < now:
            deadline, task_id = heapq.heappop(self._deadlines)
            slot = self.tasks.get(task_id)
            if slot is None or slot["closed"] is not None or slot["term"] is not None:
                continue
            view = derive(task_id, slot["h"])
            timeout = cfg.abandon_after_ms(view.task_type)
            if _alive(slot) + timeout != deadline or view.state not in ACTIVE or view.started_ms is None:
                continue  # stale: the task (or its agent) reported after this entry was pushed
            slot["ab"] += 1
            entry = abandon_entry(task_id, deadline, timeout / 1000, slot["ab"])
            slot["h"].append(entry)
            slot["abandoned"] = True
            self.counters["abandoned"] += 1
            out.emitted.append(self._abandoned_event(task_id, entry, view))
            self._task_changed(task_id, out)
            self._finalize(task_id, slot, out, wall_ms)  # nothing to wait for: we closed it
        self._forget(self._closed, cfg.keep_closed_s, wall_ms, out, self._closed_abandoned)
        self._forget(self._closed_abandoned, cfg.keep_abandoned_s, wall_ms, out, None)
        for agent, a in self.agents.items():
            if a["status"] != "offline" and now - a["seen"] > cfg.agent_offline_after_s * 1000:
                at = a["seen"] + int(cfg.agent_offline_after_s * 1000)
                self._set_agent(agent, a, "offline", at, out, reason="no heartbeat")

    def _forget(
        self, queue: deque[tuple[int, str]], keep_s: float, wall_ms: int, out: Output,
        abandoned_to: deque[tuple[int, str]] | None,
    ) -> None:  # fmt: skip
        """Drop tasks closed more than ``keep_s`` ago (abandoned ones move to the longer queue)."""
        while queue and wall_ms - queue[0][0] > keep_s * 1000:
            closed, task_id = queue.popleft()
            slot = self.tasks.get(task_id)
            if slot is None or slot["closed"] != closed:
                continue  # reopened (or closed again later: a newer entry is queued)
            if abandoned_to is not None and slot.get("abandoned"):
                abandoned_to.append((closed, task_id))
                continue
            del self.tasks[task_id]
            out.dirty_tasks[task_id] = None

    def _finalize(self, task_id: str, slot: Slot, out: Output, wall_ms: int) -> None:
        view = derive(task_id, slot["h"])
        slot["closed"] = wall_ms
        slot["term"] = None
        self._due.pop(task_id, None)
        out.dirty_tasks[task_id] = slot
        if not view.finished:
            slot["closed"] = None
            return
        self._closed.append((wall_ms, task_id))
        sig_record = view.record(version=0)
        sig = sig_record.model_dump_json()
        if sig == slot["sig"]:
            return
        slot["sig"] = sig
        slot["rv"] += 1
        if slot["rv"] > 1:
            self.counters["corrections"] += 1
        if view.state is not None and view.state.value != "ABANDONED":
            slot["abandoned"] = False
        self.counters["records"] += 1
        self.counters["invalid_transitions"] += view.invalid_transitions
        out.executions.append(sig_record.model_copy(update={"version": slot["rv"]}))

    def _abandoned_event(self, task_id: str, entry: list[Any], view: TaskView) -> dict[str, Any]:
        state: dict[str, Any] = {"reason": entry[4]["reason"]}
        if view.task_type:
            state["task_type"] = view.task_type
        if view.agent:
            state["agent_id"] = view.agent
        md: dict[str, Any] = {"triggered_by": "system"}
        if view.correlation_id:
            md["correlation_id"] = view.correlation_id
        return {
            "id": entry[2], "timestamp": _iso(entry[0]), "event_type": "task.abandoned",
            "entity_type": "task", "entity_id": task_id,
            "previous_state": {"status": view.state.value if view.state else ""},
            "current_state": state, "metadata": md, "metrics": {},
        }  # fmt: skip

    # ------------------------------------------------------------------ agents
    def _apply_agent(self, ev: NormalizedEvent, out: Output) -> None:
        self.counters["agent_events"] += 1
        agent = ev.entity_id
        t = ev.event_time_ms
        a = self.agents.get(agent)
        if a is None:
            a = self.agents[agent] = {"status": "unknown", "since": t, "seen": t, "online_since": None,
                                      "active": 0, "cpu": None, "mem": None, "busy_ms": 0, "online_ms": 0,
                                      "reported": "", "n": 0, "v": 0}  # fmt: skip
        st = ev.current_state
        et = ev.event_type
        a["seen"] = max(a["seen"], t)
        if et in ("agent.heartbeat", "agent.self_report"):
            self._agent_alive(agent, t, out)
        if et == "agent.heartbeat":
            a["active"] = int(st.get("active_tasks") or 0)
            a["cpu"] = st.get("cpu_percent")
            a["mem"] = st.get("memory_mb")
        elif et == "agent.self_report":
            a["reported"] = str(st.get("status") or "")
        if et == "agent.offline":
            new = "offline"
        else:
            busy = a["active"] > 0 or a["reported"] == "executing"
            new = "busy" if busy else "online"
        if t < a["since"] and new != a["status"]:
            # an old event (out of order): it updates what we know, not the current status
            new = a["status"]
        self._set_agent(agent, a, new, max(t, a["since"]), out, reason=et)
        a["v"] += 1
        out.agent_rows[agent] = a
        out.dirty_agents[agent] = a

    def _set_agent(self, agent: str, a: Slot, new: str, at: int, out: Output, reason: str) -> None:
        old = a["status"]
        if new == old:
            return
        span = max(0, at - a["since"])
        if old in ("online", "busy"):
            a["online_ms"] += span
        if old == "busy":
            a["busy_ms"] += span
        if new in ("online", "busy") and old not in ("online", "busy"):
            a["online_since"] = at
        if new == "offline":
            a["online_since"] = None
        a["status"] = new
        a["since"] = at
        a["n"] += 1
        a["v"] += 1
        out.agent_rows[agent] = a
        out.dirty_agents[agent] = a
        out.emitted.append({
            "id": f"taskpulse:agent:{agent}:{a['n']}", "timestamp": _iso(at),
            "event_type": "agent.status_changed", "entity_type": "agent", "entity_id": agent,
            "previous_state": {"status": old},
            "current_state": {"status": new, "previous": old, "active_tasks": a["active"],
                              "reason": reason, "utilization": agent_utilization(a, at)},
            "metadata": {"triggered_by": "system"}, "metrics": {},
        })  # fmt: skip


def _alive(slot: Slot) -> int:
    """The task's last sign of life: its own newest event, or its agent's newest heartbeat."""
    return max(int(slot["last"]), int(slot.get("alive", 0)))


def agent_utilization(a: Slot, now_ms: int) -> float | None:
    """Busy time / online time, the current interval included."""
    online, busy = float(a["online_ms"]), float(a["busy_ms"])
    span = max(0, now_ms - a["since"])
    if a["status"] in ("online", "busy"):
        online += span
    if a["status"] == "busy":
        busy += span
    return round(busy / online, 4) if online > 0 else None


def deadline_ms(view: TaskView) -> int | None:
    if view.deadline_raw is None:
        return None
    try:
        return to_epoch_ms(view.deadline_raw)
    except (TimestampError, ValueError, TypeError, OverflowError):
        return None


__all__ = ["TERMINAL", "CorrelationConfig", "Correlator", "Output", "agent_utilization", "deadline_ms"]
