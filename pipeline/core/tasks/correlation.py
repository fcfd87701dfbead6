"""Correlation: per-task and per-agent state from normalized events.  Pure: the wall clock
comes in as an argument, and persistence is the caller's (``TaskSlot`` / ``AgentSlot``,
``to_json`` / ``from_json``: ``pipeline.core.tasks.state``).

* Tasks: each task's distinct events (its history) are kept in event-time order; a task
  that reached a final state is published once its events have had ``reorder_window_s``
  (wall clock) to arrive, and again, with a higher version, if a later event changes it.
* Abandonment is a *verdict*, not an event of the task: a started task that stays silent
  for ``abandon_after_s`` of *stream time* is judged ABANDONED at its deadline (a
  ``task.abandoned`` event with a deterministic id is emitted).  Any later-arriving event
  of the task overrules it: a completion or failure (whatever its time) is the task's
  outcome; progress or a pause the verdict did not know reopens the task, which is watched
  again (and judged again, at its new deadline, if that has passed too).  The record keeps
  ``abandoned_verdicts``.  A ``task.abandoned`` a producer sends is an ordinary event.
* Agents: online / busy / offline from heartbeats, self-reports and online/offline events;
  offline after ``agent_offline_after_s`` of stream-time silence; each change is emitted as
  an ``agent.status_changed`` event, so availability can be charted over time.
* Bounds: a history cap per task; open tasks silent for ``task_expire_after_s`` and agents
  silent for ``agent_forget_after_s`` are forgotten; beyond ``memory_budget_bytes``
  (estimated) the least recently changed tasks and agents are dropped.  All counted.

Stream time is the newest event time seen, advanced by the wall clock while the stream is
quiet: replaying history does not abandon tasks whose next event is simply not read yet.
Every timer (reordering window, abandonment, offline, expiry) is a heap or an ordered
queue, so a tick costs what is due, not what is held.
"""

from __future__ import annotations

import heapq
import operator
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.cost import PriceTable
from pipeline.core.tasks.lifecycle import (
    ABANDONED_ID_PREFIX,
    ACTIVE,
    TERMINAL,
    HistoryEntry,
    TaskView,
    abandon_reason,
    abandoned_event_id,
    compact,
    derive,
    sort_key,
    verdict_number,
)
from pipeline.core.tasks.state import AgentSlot, TaskSlot
from pipeline.core.timestamps import TimestampError, ms_to_datetime, to_epoch_ms
from pipeline.events import NormalizedEvent, TaskExecution

#: estimated bytes of a task slot without its history, of one history entry, of an agent slot
#: (conservative against ``bench/run.py --only correlation-memory``: about 2.7 KB traced, 2.9 KB RSS
#: per open task of 4 events)
TASK_BYTES = 1000
ENTRY_BYTES = 600
AGENT_BYTES = 1100
#: histories up to this length are checked for duplicates by a scan; longer ones get an id set
_SCAN_MAX = 16
_event_id = operator.itemgetter(2)  # of a HistoryEntry


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
    #: open tasks with no event for this long (stream time) are forgotten
    task_expire_after_s: float = 7 * 86_400.0
    #: agents with no event for this long (stream time) are forgotten
    agent_forget_after_s: float = 7 * 86_400.0
    #: events kept per task (the oldest progress events go first)
    max_history: int = 500
    #: estimated bytes of task and agent state; beyond it the least recently changed go first
    memory_budget_bytes: int = 1 << 30
    #: turns the tokens events report into cost (``TASKPULSE_PRICES``)
    prices: PriceTable | None = None

    def abandon_after_ms(self, task_type: str) -> int:
        return int(self.abandon_after_by_type.get(task_type, self.abandon_after_s) * 1000)


@dataclass
class Output:
    """What a batch (or a timer tick) asks the sinks to write."""

    task_rows: dict[str, tuple[TaskView, int]] = field(default_factory=dict)  # id → (view, version)
    executions: list[TaskExecution] = field(default_factory=list)
    agent_rows: dict[str, AgentSlot] = field(default_factory=dict)
    #: events taskpulse emits (task.abandoned, agent.status_changed), as envelope dicts
    emitted: list[dict[str, Any]] = field(default_factory=list)
    #: slots to persist (None: delete) per table
    dirty_tasks: dict[str, TaskSlot | None] = field(default_factory=dict)
    dirty_agents: dict[str, AgentSlot | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.task_rows or self.executions or self.agent_rows or self.emitted or
                    self.dirty_tasks or self.dirty_agents)  # fmt: skip


def _iso(ms: int) -> str:
    return ms_to_datetime(ms).isoformat(timespec="milliseconds")


def upgrade_task_slot(task_id: str, doc: dict[str, Any]) -> TaskSlot:
    """A persisted task slot (any version's form) as this version's ``TaskSlot``."""
    return TaskSlot.from_json(task_id, doc)


class Correlator:
    """Task and agent state machines over the normalized stream."""

    def __init__(self, config: CorrelationConfig) -> None:
        self.config = config
        self.tasks: dict[str, TaskSlot] = {}
        self.agents: dict[str, AgentSlot] = {}
        self.max_event_ms: int | None = None
        self.max_event_wall_ms = 0
        self.counters = {"task_events": 0, "agent_events": 0, "records": 0, "corrections": 0,
                         "abandoned": 0, "verdicts_overruled": 0, "invalid_transitions": 0,
                         "history_dropped": 0, "expired_tasks": 0, "forgotten_agents": 0,
                         "evicted_tasks": 0, "evicted_agents": 0}  # fmt: skip
        #: estimated bytes held (see TASK_BYTES): what the memory budget is checked against
        self.state_bytes = 0
        # Indexes over self.tasks / self.agents, so that a tick costs what is due, not every
        # task or agent held (not persisted: rebuilt by restore).  Heap entries are checked
        # when popped (lazy deletion): a task that changed since was pushed again.
        self._due: list[tuple[int, str]] = []  # heap: (wall ms its reordering window ends, task)
        self._deadlines: list[tuple[int, str]] = []  # heap: (stream ms it is abandoned, task)
        self._closed: deque[tuple[int, str]] = deque()  # (wall ms closed, task), oldest first
        self._closed_abandoned: deque[tuple[int, str]] = deque()
        self._by_agent: dict[str, set[str]] = {}  # agent → its open, started tasks
        self._offline: list[tuple[int, str]] = []  # heap: (stream ms it goes offline, agent)
        self._offline_queued: set[str] = set()  # agents with an entry in _offline
        # least recently changed first: (stream-time) touch, for expiry and the budget
        self._task_lru: OrderedDict[str, int] = OrderedDict()
        self._agent_lru: OrderedDict[str, int] = OrderedDict()
        self._clock = 0  # monotonic stream time of the last touch
        self._ids: dict[str, set[str]] = {}  # event ids of tasks with long histories

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

    def _now(self, wall_ms: int) -> int:
        """Stream time for the staleness order (never going back)."""
        self._clock = max(self._clock, self.stream_ms(wall_ms))
        return self._clock

    def _touch_task(self, task_id: str, now: int) -> None:
        self._task_lru[task_id] = now
        self._task_lru.move_to_end(task_id)

    def _touch_agent(self, agent: str, now: int) -> None:
        self._agent_lru[agent] = now
        self._agent_lru.move_to_end(agent)

    # ------------------------------------------------------------------ restore
    def restore(self, task_docs: dict[str, dict[str, Any]], agent_docs: dict[str, dict[str, Any]], wall_ms: int) -> None:  # noqa: E501
        """Take the persisted slots (their JSON form, after a restart).  Stream time resumes
        from the newest event time they hold, not from the wall clock: the time the worker was
        down must not count as silence of the tasks and agents whose events wait in Kafka."""
        tasks = {task_id: TaskSlot.from_json(task_id, doc) for task_id, doc in task_docs.items()}
        agents = {agent: AgentSlot.from_json(doc) for agent, doc in agent_docs.items()}
        self.tasks.update(tasks)
        self.agents.update(agents)
        times = [s.last_event_ms for s in tasks.values() if s.history] + [a.seen_ms for a in agents.values()]
        if times:
            self._saw(max(times), wall_ms)
        window_ms = int(self.config.reorder_window_s * 1000)
        for task_id, slot in sorted(tasks.items(), key=lambda kv: kv[1].closed_wall_ms or 0):
            if slot.closed_wall_ms is not None:
                self._closed.append((slot.closed_wall_ms, task_id))
            elif slot.final_since_wall_ms is not None:
                heapq.heappush(self._due, (slot.final_since_wall_ms + window_ms, task_id))
            else:
                self._watch(task_id, slot, self._view(task_id, slot))
            self.state_bytes += TASK_BYTES + ENTRY_BYTES * len(slot.history)
            if len(slot.history) > _SCAN_MAX:
                self._ids[task_id] = {e.event_id for e in slot.history}
        for task_id, slot in sorted(tasks.items(), key=lambda kv: kv[1].last_event_ms):
            self._task_lru[task_id] = slot.last_event_ms
        for agent, a in sorted(agents.items(), key=lambda kv: kv[1].seen_ms):
            self._agent_lru[agent] = a.seen_ms
            self.state_bytes += AGENT_BYTES
            self._queue_offline(agent, a)
        self._clock = max([self._clock, *self._task_lru.values(), *self._agent_lru.values()])

    def repair_agent(self, agent: str, row: AgentSlot) -> None:
        """Take an agent's last ``agent_status`` row when the persisted state lacks it or is
        older (a changelog lost with a fresh embedded broker, or its tail not recovered), so
        its next row gets a higher version and its time accounting goes on.  ``row`` is the
        row as a slot (its ``version`` the row's); the self-reported status and the change
        count, which the row does not hold, are kept."""
        a = self.agents.get(agent)
        if a is not None and a.version >= row.version:
            return
        if a is None:
            self.state_bytes += AGENT_BYTES
        else:
            row.reported_status, row.changes = a.reported_status, a.changes
        self.agents[agent] = row
        self._agent_lru[agent] = row.seen_ms
        self._queue_offline(agent, row)

    def repair(self, task_id: str, entries: list[HistoryEntry], version: int, wall_ms: int) -> Output:
        """Merge events read back from the ``events`` table into a task whose persisted state
        is missing or older than what ClickHouse shows (a changelog that lost its tail)."""
        out = Output()
        slot = self.tasks.get(task_id)
        if slot is None:
            slot = self.tasks[task_id] = TaskSlot(changed_wall_ms=wall_ms, last_event_ms=0)
            self.state_bytes += TASK_BYTES
        known = {e.event_id for e in slot.history}
        for entry in entries:
            n = verdict_number(task_id, entry.event_id)
            if n is not None:  # a verdict of ours: it stands if nothing of the task's overrules it
                if n > slot.verdicts:
                    slot.verdicts, slot.verdict_deadline_ms = n, entry.time_ms
            elif entry.event_id not in known:
                slot.history.append(entry)
                known.add(entry.event_id)
                slot.last_event_ms = max(slot.last_event_ms, entry.time_ms)
                self.state_bytes += ENTRY_BYTES
        slot.view_cache = None
        if len(slot.history) > _SCAN_MAX:
            self._ids[task_id] = {e.event_id for e in slot.history}
        while len(slot.history) > self.config.max_history:
            self._drop_entry(task_id, slot)
        slot.version = max(slot.version, version)
        slot.changed_wall_ms = wall_ms
        self._task_changed(task_id, out)
        self._touch_task(task_id, self._now(wall_ms))
        return out

    # ------------------------------------------------------------------ events
    def apply(self, events: list[NormalizedEvent], wall_ms: int) -> Output:
        out = Output()
        touched: set[str] = set()
        for ev in events:
            kind = ev.entity_type.value
            if kind == "task" and ev.event_type.startswith("task."):
                if self._apply_task(ev, wall_ms):
                    touched.add(ev.entity_id)
            elif kind == "agent" and ev.event_type != "agent.status_changed":
                self._saw(ev.event_time_ms, wall_ms)
                self._apply_agent(ev, out, wall_ms)
        now = self._now(wall_ms)
        for task_id in touched:
            self._task_changed(task_id, out)
            self._touch_task(task_id, now)
        self._tick(wall_ms, out)
        return out

    def _apply_task(self, ev: NormalizedEvent, wall_ms: int) -> bool:
        self.counters["task_events"] += 1
        task_id = ev.entity_id
        slot = self.tasks.get(task_id)
        n = verdict_number(task_id, ev.id) if ev.id.startswith(ABANDONED_ID_PREFIX) else None
        if n is not None:
            # our own verdict, back through the pipeline: it is in the slot already (or the
            # slot is gone, and a verdict alone does not make a task)
            if slot is not None and n > slot.verdicts:
                slot.verdicts = n
            return False
        if slot is None:
            slot = self.tasks[task_id] = TaskSlot(changed_wall_ms=wall_ms, last_event_ms=ev.event_time_ms)
            self.state_bytes += TASK_BYTES
        h = slot.history
        ids = self._ids.get(task_id)
        if ev.id in (ids if ids is not None else map(_event_id, h)):
            return False  # the same event again (a replay): nothing changes
        h.append(compact(ev.id, ev.event_type, ev.event_time_ms, ev.current_state, ev.metadata,
                         self.config.group_keys, ev.metrics))  # fmt: skip
        slot.view_cache = None
        self.state_bytes += ENTRY_BYTES
        if ids is not None:
            ids.add(ev.id)
        elif len(h) > _SCAN_MAX:
            self._ids[task_id] = {e.event_id for e in h}
        if len(h) > self.config.max_history:
            self._drop_entry(task_id, slot)
        slot.changed_wall_ms = wall_ms
        slot.last_event_ms = max(slot.last_event_ms, ev.event_time_ms)
        self._saw(ev.event_time_ms, wall_ms)
        return True

    def _drop_entry(self, task_id: str, slot: TaskSlot) -> None:
        """The history is over its cap: drop its oldest progress event but the newest (they
        only count), else its oldest event but the first; both are counted on the record."""
        h = slot.history
        progress = sorted((i for i, e in enumerate(h) if e.event_type == "task.progress"), key=lambda i: sort_key(h[i]))
        if len(progress) > 1:
            i = progress[0]
            slot.dropped_progress += 1
        else:
            i = sorted(range(len(h)), key=lambda j: sort_key(h[j]))[1]
        entry = h.pop(i)
        slot.view_cache = None
        slot.dropped_events += 1
        self.counters["history_dropped"] += 1
        self.state_bytes -= ENTRY_BYTES
        ids = self._ids.get(task_id)
        if ids is not None:
            ids.discard(entry.event_id)

    def _view(self, task_id: str, slot: TaskSlot, verdict: bool = True) -> TaskView:
        """The task as its history (and the standing verdict, unless ``verdict`` is off) says.
        A final view is kept on the slot until the task is finalized (``_finalize`` reads it
        again after the reordering window), unless the history changes first (which clears
        it): one replay per change of the task, not two.  Views are never modified."""
        abandoned_at = slot.verdict_deadline_ms if verdict else None
        key = (abandoned_at, slot.verdicts, slot.dropped_events, slot.dropped_progress, len(slot.history))
        cached = slot.view_cache
        if cached is not None and cached[0] == key:
            view: TaskView = cached[1]
            return view
        view = derive(task_id, slot.history, abandoned_at, slot.verdicts, slot.dropped_events, slot.dropped_progress)
        slot.view_cache = (key, view) if view.finished else None
        return view

    def _review_verdict(self, task_id: str, slot: TaskSlot) -> None:
        """A standing verdict stays only while the task's own events still leave it open,
        started and silent until the same deadline; otherwise it is overruled."""
        if slot.verdict_deadline_ms is None:
            return
        real = self._view(task_id, slot, verdict=False)
        deadline = _alive(slot) + self.config.abandon_after_ms(real.task_type)
        if real.state in ACTIVE and real.started_ms is not None and deadline == slot.verdict_deadline_ms:
            return
        slot.verdict_deadline_ms = None
        self.counters["verdicts_overruled"] += 1

    def _task_changed(self, task_id: str, out: Output) -> None:
        slot = self.tasks[task_id]
        self._review_verdict(task_id, slot)
        view = self._view(task_id, slot)
        slot.version += 1
        if view.finished:
            if slot.final_since_wall_ms is None:
                slot.final_since_wall_ms = slot.changed_wall_ms
                heapq.heappush(self._due, (slot.changed_wall_ms + int(self.config.reorder_window_s * 1000), task_id))
        else:
            slot.final_since_wall_ms = None
        slot.closed_wall_ms = None
        out.task_rows[task_id] = (view, slot.version)
        out.dirty_tasks[task_id] = slot
        if slot.final_since_wall_ms is None:
            self._watch(task_id, slot, view)

    def _watch(self, task_id: str, slot: TaskSlot, view: TaskView) -> None:
        """Put an open, started task on the abandonment heap (stale entries are skipped), and
        index it by its agent, whose heartbeats keep it alive."""
        if slot.indexed_agent:
            self._unindex_agent(task_id, slot)
        if view.state in ACTIVE and view.started_ms is not None:
            slot.watched_task_type = view.task_type
            deadline = _alive(slot) + self.config.abandon_after_ms(view.task_type)
            heapq.heappush(self._deadlines, (deadline, task_id))
            if view.agent:
                self._by_agent.setdefault(view.agent, set()).add(task_id)
                slot.indexed_agent = view.agent

    def _unindex_agent(self, task_id: str, slot: TaskSlot) -> None:
        tasks = self._by_agent.get(slot.indexed_agent)
        if tasks is not None:
            tasks.discard(task_id)
            if not tasks:
                del self._by_agent[slot.indexed_agent]
        slot.indexed_agent = ""

    def _agent_alive(self, agent: str, t: int, out: Output) -> None:
        """A heartbeat or self-report of ``agent`` at ``t``: its open tasks are not silent."""
        for task_id in list(self._by_agent.get(agent, ())):
            slot = self.tasks.get(task_id)
            if slot is None or slot.closed_wall_ms is not None or slot.final_since_wall_ms is not None:
                self._by_agent[agent].discard(task_id)
                continue
            if t > _alive(slot):
                slot.agent_alive_ms = t
                timeout = self.config.abandon_after_ms(slot.watched_task_type)
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
        window_ms = int(cfg.reorder_window_s * 1000)
        while self._due and self._due[0][0] <= wall_ms:
            due, task_id = heapq.heappop(self._due)
            slot = self.tasks.get(task_id)
            final_since = None if slot is None else slot.final_since_wall_ms
            if slot is not None and final_since is not None and final_since + window_ms == due:
                self._finalize(task_id, slot, out, wall_ms)
        while self._deadlines and self._deadlines[0][0] < now:
            deadline, task_id = heapq.heappop(self._deadlines)
            slot = self.tasks.get(task_id)
            if slot is not None and slot.closed_wall_ms is None and slot.final_since_wall_ms is None \
                    and slot.verdict_deadline_ms is None:
                self._judge(task_id, slot, deadline, out, wall_ms)
        self._forget(self._closed, cfg.keep_closed_s, wall_ms, out, self._closed_abandoned)
        self._forget(self._closed_abandoned, cfg.keep_abandoned_s, wall_ms, out, None)
        while self._offline and self._offline[0][0] < now:
            _, agent = heapq.heappop(self._offline)
            self._offline_queued.discard(agent)
            a = self.agents.get(agent)
            if a is None or a.status == "offline":
                continue
            if now - a.seen_ms > cfg.agent_offline_after_s * 1000:
                at = a.seen_ms + int(cfg.agent_offline_after_s * 1000)
                self._set_agent(agent, a, "offline", at, out, reason="no heartbeat")
            else:
                self._queue_offline(agent, a)  # seen since this entry was pushed
        self._bound(self._now(wall_ms), out)

    def _judge(self, task_id: str, slot: TaskSlot, deadline: int, out: Output, wall_ms: int) -> None:
        """The abandonment verdict on a task whose deadline passed in stream time."""
        view = self._view(task_id, slot)
        timeout = self.config.abandon_after_ms(view.task_type)
        if _alive(slot) + timeout != deadline or view.state not in ACTIVE or view.started_ms is None:
            return  # stale: the task (or its agent) reported after this entry was pushed
        slot.verdicts += 1
        slot.verdict_deadline_ms = deadline
        self.counters["abandoned"] += 1
        out.emitted.append(self._abandoned_event(task_id, slot.verdicts, deadline, timeout / 1000, view))
        self._task_changed(task_id, out)
        self._finalize(task_id, slot, out, wall_ms)  # nothing to wait for: we closed it

    def _forget(
        self, queue: deque[tuple[int, str]], keep_s: float, wall_ms: int, out: Output,
        abandoned_to: deque[tuple[int, str]] | None,
    ) -> None:  # fmt: skip
        """Drop tasks closed more than ``keep_s`` ago (abandoned ones move to the longer queue)."""
        while queue and wall_ms - queue[0][0] > keep_s * 1000:
            closed, task_id = queue.popleft()
            slot = self.tasks.get(task_id)
            if slot is None or slot.closed_wall_ms != closed:
                continue  # reopened (or closed again later: a newer entry is queued)
            if abandoned_to is not None and slot.closed_abandoned:
                abandoned_to.append((closed, task_id))
                continue
            self._drop_task(task_id, out)

    def _bound(self, now: int, out: Output) -> None:
        """Expiry of silent open tasks and agents, then the memory budget (stalest first)."""
        cfg = self.config
        horizon = now - int(cfg.task_expire_after_s * 1000)
        while self._task_lru:
            task_id, touched = next(iter(self._task_lru.items()))
            if touched > horizon:
                break
            if self.tasks[task_id].closed_wall_ms is None:
                self.counters["expired_tasks"] += 1
            self._drop_task(task_id, out)
        horizon = now - int(cfg.agent_forget_after_s * 1000)
        while self._agent_lru:
            agent, touched = next(iter(self._agent_lru.items()))
            if touched > horizon:
                break
            self.counters["forgotten_agents"] += 1
            self._drop_agent(agent, out)
        while self.state_bytes > cfg.memory_budget_bytes and (self._task_lru or self._agent_lru):
            stalest_task = next(iter(self._task_lru.items()), None)
            stalest_agent = next(iter(self._agent_lru.items()), None)
            if stalest_task is not None and (stalest_agent is None or stalest_task[1] <= stalest_agent[1]):
                self.counters["evicted_tasks"] += 1
                self._drop_task(stalest_task[0], out)
            elif stalest_agent is not None:
                self.counters["evicted_agents"] += 1
                self._drop_agent(stalest_agent[0], out)

    def _drop_task(self, task_id: str, out: Output) -> None:
        slot = self.tasks.pop(task_id)
        self._task_lru.pop(task_id, None)
        self._ids.pop(task_id, None)
        if slot.indexed_agent:
            self._unindex_agent(task_id, slot)
        self.state_bytes -= TASK_BYTES + ENTRY_BYTES * len(slot.history)
        out.dirty_tasks[task_id] = None

    def _drop_agent(self, agent: str, out: Output) -> None:
        del self.agents[agent]
        self._agent_lru.pop(agent, None)
        self._by_agent.pop(agent, None)
        self.state_bytes -= AGENT_BYTES
        out.dirty_agents[agent] = None

    def _finalize(self, task_id: str, slot: TaskSlot, out: Output, wall_ms: int) -> None:
        view = self._view(task_id, slot)
        slot.view_cache = None  # closed: a new event reopens it (and changes its history)
        slot.closed_wall_ms = wall_ms
        slot.final_since_wall_ms = None
        out.dirty_tasks[task_id] = slot
        if not view.finished:
            slot.closed_wall_ms = None
            return
        self._closed.append((wall_ms, task_id))
        slot.closed_abandoned = slot.verdict_deadline_ms is not None
        sig_record = view.record(0, self.config.prices)
        sig = sig_record.model_dump_json()
        if sig == slot.record_signature:
            return
        slot.record_signature = sig
        slot.record_version += 1
        if slot.record_version > 1:
            self.counters["corrections"] += 1
        self.counters["records"] += 1
        self.counters["invalid_transitions"] += view.invalid_transitions
        out.executions.append(sig_record.model_copy(update={"version": slot.record_version}))

    def _abandoned_event(self, task_id: str, n: int, at: int, timeout_s: float, view: TaskView) -> dict[str, Any]:
        state: dict[str, Any] = {"reason": abandon_reason(timeout_s)}
        if view.task_type:
            state["task_type"] = view.task_type
        if view.agent:
            state["agent_id"] = view.agent
        md: dict[str, Any] = {"triggered_by": "system"}
        if view.correlation_id:
            md["correlation_id"] = view.correlation_id
        return {
            "id": abandoned_event_id(task_id, n), "timestamp": _iso(at), "event_type": "task.abandoned",
            "entity_type": "task", "entity_id": task_id,
            "previous_state": {"status": view.state.value if view.state else ""},
            "current_state": state, "metadata": md, "metrics": {},
        }  # fmt: skip

    # ------------------------------------------------------------------ agents
    def _queue_offline(self, agent: str, a: AgentSlot) -> None:
        """One entry per agent on the offline heap; a popped entry that is early is pushed again."""
        if agent not in self._offline_queued and a.status != "offline":
            self._offline_queued.add(agent)
            heapq.heappush(self._offline, (a.seen_ms + int(self.config.agent_offline_after_s * 1000), agent))

    def _apply_agent(self, ev: NormalizedEvent, out: Output, wall_ms: int) -> None:
        self.counters["agent_events"] += 1
        agent = ev.entity_id
        t = ev.event_time_ms
        a = self.agents.get(agent)
        if a is None:
            a = self.agents[agent] = AgentSlot(status="unknown", since_ms=t, seen_ms=t)
            self.state_bytes += AGENT_BYTES
        self._touch_agent(agent, self._now(wall_ms))
        st = ev.current_state
        et = ev.event_type
        a.seen_ms = max(a.seen_ms, t)
        if et in ("agent.heartbeat", "agent.self_report"):
            self._agent_alive(agent, t, out)
        if et == "agent.heartbeat":
            a.active_tasks = int(st.get("active_tasks") or 0)
            a.cpu_percent = st.get("cpu_percent")
            a.memory_mb = st.get("memory_mb")
        elif et == "agent.self_report":
            a.reported_status = str(st.get("status") or "")
        if et == "agent.offline":
            new = "offline"
        else:
            busy = a.active_tasks > 0 or a.reported_status == "executing"
            new = "busy" if busy else "online"
        if t < a.since_ms and new != a.status:
            # an old event (out of order): it updates what we know, not the current status
            new = a.status
        self._set_agent(agent, a, new, max(t, a.since_ms), out, reason=et)
        self._queue_offline(agent, a)
        a.version += 1
        out.agent_rows[agent] = a
        out.dirty_agents[agent] = a

    def _set_agent(self, agent: str, a: AgentSlot, new: str, at: int, out: Output, reason: str) -> None:
        old = a.status
        if new == old:
            return
        span = max(0, at - a.since_ms)
        if old in ("online", "busy"):
            a.online_ms += span
        if old == "busy":
            a.busy_ms += span
        if new in ("online", "busy") and old not in ("online", "busy"):
            a.online_since_ms = at
        if new == "offline":
            a.online_since_ms = None
        a.status = new
        a.since_ms = at
        a.changes += 1
        a.version += 1
        out.agent_rows[agent] = a
        out.dirty_agents[agent] = a
        out.emitted.append({
            "id": agent_change_id(agent, a.changes, at), "timestamp": _iso(at),
            "event_type": "agent.status_changed", "entity_type": "agent", "entity_id": agent,
            "previous_state": {"status": old},
            "current_state": {"status": new, "previous": old, "active_tasks": a.active_tasks,
                              "reason": reason, "utilization": agent_utilization(a, at)},
            "metadata": {"triggered_by": "system"}, "metrics": {},
        })  # fmt: skip


def agent_change_id(agent: str, n: int, at_ms: int) -> str:
    """The id of the n-th ``agent.status_changed`` of ``agent``, at ``at_ms``: the same on a
    replay (so ingest drops the re-emission), new when a restarted counter meets a later
    time (a state lost with its changelog must not turn real changes into duplicates)."""
    return f"taskpulse:agent:{agent}:{n}:{at_ms}"


def _alive(slot: TaskSlot) -> int:
    """The task's last sign of life: its own newest event, or its agent's newest heartbeat."""
    return slot.alive_ms


def agent_utilization(a: AgentSlot, now_ms: int) -> float | None:
    """Busy time / online time, the current interval included."""
    online, busy = float(a.online_ms), float(a.busy_ms)
    span = max(0, now_ms - a.since_ms)
    if a.status in ("online", "busy"):
        online += span
    if a.status == "busy":
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
