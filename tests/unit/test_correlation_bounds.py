"""The correlator's abandonment verdicts and its bounds (pure, injected clock): a late event
overrules a verdict, shuffled delivery ends where in-order delivery ends, and state stays
bounded (history cap, expiry, forgotten agents, memory budget) with everything dropped counted."""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.tasks.correlation import ENTRY_BYTES, TASK_BYTES, CorrelationConfig, Correlator
from pipeline.core.tasks.lifecycle import compact
from pipeline.events import NormalizedEvent, TaskExecution
from tests.unit.test_lifecycle import T0, correlator, ev

IGNORED = {"version", "abandoned_verdicts"}


def final_records(c: Correlator, wall_ms: int) -> dict[str, TaskExecution]:
    """Run the timers far ahead, then the latest record of every task held."""
    c.tick(wall_ms)
    c.tick(wall_ms + 10_000)
    return {tid: TaskExecution.model_validate_json(s.record_signature).model_copy(update={"version": s.record_version})
            for tid, s in c.tasks.items() if s.record_signature}  # fmt: skip


def comparable(r: TaskExecution) -> dict[str, Any]:
    return r.model_dump(exclude=IGNORED)


def silent_started(task_id: str, t0: int = T0) -> list[NormalizedEvent]:
    return [ev("task.created", task_id, t0, task_type="code"), ev("task.assigned", task_id, t0 + 100, agent_id="a"),
            ev("task.started", task_id, t0 + 200)]  # fmt: skip


def advance(c: Correlator, stream_ms: int) -> list[TaskExecution]:
    """Another task's event moves stream time to ``stream_ms``: the verdicts due are given."""
    return c.apply([ev("task.created", f"clock-{stream_ms}", stream_ms)], stream_ms).executions


# --------------------------------------------------------------------------- verdicts


def test_a_completion_timed_before_the_deadline_wins_over_the_verdict() -> None:
    c = correlator()  # abandoned after 60 s of silence
    c.apply(silent_started("t"), T0 + 300)
    [verdict] = advance(c, T0 + 61_000)
    assert (verdict.outcome, verdict.finished_ms, verdict.abandoned_verdicts) == ("abandoned", T0 + 60_200, 1)
    assert verdict.events == 3  # the verdict is not an event of the task
    late = ev("task.completed", "t", T0 + 50_000, success=True)  # done at 50 s, read after the verdict
    c.apply([late], T0 + 62_000)
    fixed = final_records(c, T0 + 70_000)["t"]
    assert (fixed.outcome, fixed.final_state, fixed.version, fixed.abandoned_verdicts) == (
        "success", "COMPLETED", 2, 1)  # fmt: skip
    reference = correlator()
    reference.apply([*silent_started("t"), late], T0 + 300)
    assert comparable(fixed) == comparable(final_records(reference, T0 + 70_000)["t"])
    assert c.counters["verdicts_overruled"] == 1


def test_a_late_failure_wins_over_the_verdict() -> None:
    c = correlator()
    c.apply(silent_started("t"), T0 + 300)
    advance(c, T0 + 61_000)
    c.apply([ev("task.failed", "t", T0 + 40_000, error="OOM", will_retry=False)], T0 + 62_000)
    r = final_records(c, T0 + 70_000)["t"]
    assert (r.outcome, r.error, r.execution_ms, r.abandoned_verdicts) == ("failure", "OOM", 39_800.0, 1)


def test_a_completion_after_the_deadline_still_corrects_the_row() -> None:
    c = correlator()
    c.apply(silent_started("t"), T0 + 300)
    advance(c, T0 + 61_000)
    c.apply([ev("task.completed", "t", T0 + 90_000)], T0 + 91_000)
    r = final_records(c, T0 + 100_000)["t"]
    assert (r.outcome, r.finished_ms, r.version) == ("success", T0 + 90_000, 2)


def test_late_progress_before_the_deadline_moves_the_verdict_to_the_true_deadline() -> None:
    c = correlator()
    c.apply(silent_started("t"), T0 + 300)
    advance(c, T0 + 61_000)
    # progress at 30 s arrives after the verdict, once stream time is past 30 + 60 s too
    out = c.apply([ev("task.progress", "t", T0 + 30_000, percentage=40)], T0 + 100_000)
    [again] = [e for e in out.emitted if e["event_type"] == "task.abandoned"]
    assert again["id"] == "taskpulse:abandoned:t:2" and again["timestamp"].startswith("2025-11-03T10:01:30")
    r = final_records(c, T0 + 110_000)["t"]
    assert (r.outcome, r.finished_ms, r.abandoned_verdicts, r.progress_checkpoints) == (
        "abandoned", T0 + 90_000, 2, 1)  # fmt: skip


def test_progress_after_the_deadline_reopens_the_task() -> None:
    c = correlator()
    c.apply(silent_started("t"), T0 + 300)
    advance(c, T0 + 61_000)
    out = c.apply([ev("task.progress", "t", T0 + 70_000, percentage=40)], T0 + 70_000)
    view, _ = out.task_rows["t"]
    assert (view.state.value if view.state else None, view.finished) == ("EXECUTING", False)
    assert not out.emitted  # watched again: its new deadline is 130 s
    assert c.tasks["t"].closed_wall_ms is None and c.tasks["t"].verdict_deadline_ms is None


def test_the_emitted_event_coming_back_is_not_an_event_of_the_task() -> None:
    c = correlator()
    c.apply(silent_started("t"), T0 + 300)
    c.apply([ev("task.created", "x", T0 + 61_000)], T0 + 61_000)
    out = c.tick(T0 + 61_000)
    assert not out.emitted  # already judged in the apply above
    echo = ev("task.abandoned", "t", T0 + 60_200, eid="taskpulse:abandoned:t:1", reason="…")
    assert not c.apply([echo], T0 + 61_100).task_rows
    assert all(
        not e.event_id.startswith("taskpulse:") for e in c.tasks["t"].history)  # fmt: skip
    assert c.tasks["t"].verdicts == 1 and len(c.tasks["t"].history) == 3


def test_a_producer_sent_abandoned_is_an_ordinary_terminal_event() -> None:
    c = correlator()
    c.apply([*silent_started("t"), ev("task.abandoned", "t", T0 + 5000, reason="user walked away")], T0 + 5000)
    [r] = c.tick(T0 + 8000).executions
    assert (r.outcome, r.finished_ms, r.abandoned_verdicts) == ("abandoned", T0 + 5000, 0)
    assert not advance(c, T0 + 200_000)  # closed by the producer: no verdict of ours
    c.apply([ev("task.completed", "t", T0 + 9000)], T0 + 200_000)  # its own later completion wins
    assert final_records(c, T0 + 210_000)["t"].outcome == "success"


def test_an_old_slot_with_the_verdict_in_its_history_loads_as_a_verdict() -> None:
    """A slot persisted by the previous version: its task.abandoned entry becomes the verdict."""
    events = silent_started("t")
    old = {"h": [compact(e.id, e.event_type, e.event_time_ms, e.current_state, e.metadata).to_json() for e in events]
           + [[T0 + 60_200, 12, "taskpulse:abandoned:t:1", "task.abandoned", {"reason": "x"}]],
           "v": 2, "rv": 1, "sig": "old", "term": None, "ab": 1, "closed": T0 + 61_000, "wall": T0 + 61_000,
           "last": T0 + 200, "abandoned": True}  # fmt: skip
    c = correlator()
    c.restore({"t": orjson.loads(orjson.dumps(old))}, {}, T0 + 62_000)
    assert c.tasks["t"].verdict_deadline_ms == T0 + 60_200 and len(c.tasks["t"].history) == 3
    c.apply([ev("task.completed", "t", T0 + 50_000)], T0 + 63_000)
    r = final_records(c, T0 + 70_000)["t"]
    assert (r.outcome, r.version, r.abandoned_verdicts, r.events) == ("success", 2, 1, 4)


def _fleet(rnd: random.Random, n: int) -> list[NormalizedEvent]:
    """Tasks over hours: some complete, some fail, some fall silent (abandoned in any order)."""
    out: list[NormalizedEvent] = []
    for k in range(n):
        t0 = T0 + rnd.randrange(0, 3 * 3_600_000)
        tid = f"f{k}"
        steps = [("task.created", 0, {}), ("task.queued", 1000, {}), ("task.assigned", 2000, {"agent_id": "a"}),
                 ("task.started", 3000, {})]  # fmt: skip
        t = 3000
        for _ in range(rnd.randrange(0, 4)):
            t += rnd.randrange(1000, 3_000_000)  # gaps up to 50 min: below the 1 h timeout
            steps.append(("task.progress", t, {"percentage": 10}))
        end = rnd.random()
        t += rnd.randrange(1000, 3_000_000)
        if end < 0.5:
            steps.append(("task.completed", t, {"success": True}))
        elif end < 0.7:
            steps.append(("task.failed", t, {"error": "boom"}))
        out += [ev(et, tid, t0 + dt, task_type="code", **data) for et, dt, data in steps]
    return out


class Written:
    """The latest record of every task, as the sinks would keep it (highest version wins)."""

    def __init__(self, c: Correlator) -> None:
        self.c = c
        self.rows: dict[str, TaskExecution] = {}

    def take(self, out: Any) -> None:
        for r in out.executions:
            if r.task_id not in self.rows or r.version > self.rows[r.task_id].version:
                self.rows[r.task_id] = r

    def apply(self, batch: list[NormalizedEvent], wall_ms: int) -> None:
        self.take(self.c.apply(batch, wall_ms))

    def final(self, wall_ms: int) -> dict[str, dict[str, Any]]:
        self.take(self.c.tick(wall_ms))
        self.take(self.c.tick(wall_ms + 10_000))
        return {k: comparable(r) for k, r in self.rows.items()}


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_shuffled_delivery_over_hours_ends_like_in_order_delivery(rnd: random.Random) -> None:
    events = _fleet(rnd, 30)
    cfg = CorrelationConfig(reorder_window_s=0.0, abandon_after_s=3600.0)
    # Read as a backlog (wall clock well past the events): stream time is the newest event time
    # seen, so a task's silence is judged on event time, as in a live stream hours behind.
    wall = T0 + 30 * 3_600_000
    in_order = Written(Correlator(cfg))
    ordered = sorted(events, key=lambda e: e.event_time_ms)
    for i in range(0, len(ordered), 5):
        in_order.apply(ordered[i : i + 5], wall + i)
    shuffled = events[:]
    rnd.shuffle(shuffled)
    late = Written(Correlator(cfg))
    for i in range(0, len(shuffled), 5):
        late.apply(shuffled[i : i + 5], wall + i)
    end = wall + 40 * 3_600_000
    want = in_order.final(end)
    assert len(want) == 30
    assert late.final(end) == want
    assert late.c.counters["verdicts_overruled"] >= in_order.c.counters["verdicts_overruled"]


# --------------------------------------------------------------------------- bounds


def test_the_history_is_capped_and_what_was_dropped_is_counted() -> None:
    c = correlator(max_history=20)
    events = [ev("task.created", "t", T0), ev("task.started", "t", T0 + 1)]
    events += [ev("task.progress", "t", T0 + 10 + k, percentage=k) for k in range(100)]
    events.append(ev("task.completed", "t", T0 + 500))
    for e in events:
        c.apply([e], T0 + 1000)
    assert len(c.tasks["t"].history) == 20
    [r] = c.tick(T0 + 5000).executions
    assert (r.events, r.history_dropped, r.progress_checkpoints, r.outcome) == (103, 83, 100, "success")
    assert (r.started_ms, r.created_ms, r.execution_ms) == (T0 + 1, T0, 499.0)
    assert c.counters["history_dropped"] == 83


def test_the_duplicate_check_on_a_long_history_gives_the_same_result() -> None:
    c, plain = correlator(), correlator()
    events = [ev("task.created", "t", T0), ev("task.started", "t", T0 + 1)]
    events += [ev("task.progress", "t", T0 + 10 + k, percentage=k) for k in range(200)]
    events.append(ev("task.completed", "t", T0 + 500))
    plain.apply(events, T0 + 1000)
    c.apply(events, T0 + 1000)
    again = events[:]
    random.Random(1).shuffle(again)
    for k in range(0, len(again), 7):
        assert not c.apply(again[k : k + 7], T0 + 1100).task_rows  # every one a duplicate
    assert "t" in c._ids  # the long history is checked through its id set
    assert c.tick(T0 + 5000).executions == plain.tick(T0 + 5000).executions


def test_open_tasks_that_never_start_expire() -> None:
    c = correlator(task_expire_after_s=3600.0)
    c.apply([ev("task.created", "q", T0), ev("task.queued", "q", T0 + 10)], T0 + 10)
    c.apply([ev("task.created", "p", T0 + 600_000), ev("task.started", "p", T0 + 600_100),
             ev("task.paused", "p", T0 + 600_200)], T0 + 600_200)  # fmt: skip
    out = c.apply([ev("task.created", "later", T0 + 3_601_000)], T0 + 3_601_000)
    assert out.dirty_tasks["q"] is None and "q" not in c.tasks and "p" in c.tasks
    out = c.apply([ev("task.created", "later2", T0 + 4_201_000)], T0 + 4_201_000)
    assert out.dirty_tasks["p"] is None and not out.executions  # forgotten, not judged
    assert c.counters["expired_tasks"] == 2
    assert set(c.tasks) == {"later", "later2"}
    assert c.state_bytes == 2 * (TASK_BYTES + ENTRY_BYTES)


def test_silent_agents_are_forgotten_and_the_tick_does_not_scan_them() -> None:
    c = correlator(agent_forget_after_s=600.0)
    for k in range(50):
        c.apply([ev("agent.heartbeat", f"a{a}", T0 + k * 1000, active_tasks=0) for a in range(20)], T0 + k * 1000)
    assert len(c._offline) <= 20  # one entry per agent, however many heartbeats
    out = c.tick(T0 + 49_000 + 31_000)
    assert sorted(e["entity_id"] for e in out.emitted) == sorted(f"a{a}" for a in range(20))  # all offline
    assert not c._offline
    out = c.apply([ev("agent.heartbeat", "fresh", T0 + 700_000)], T0 + 700_000)
    assert set(c.agents) == {"fresh"} and c.counters["forgotten_agents"] == 20
    assert {a for a, s in out.dirty_agents.items() if s is None} == {f"a{a}" for a in range(20)}


def test_over_the_memory_budget_the_stalest_go_first() -> None:
    unit = TASK_BYTES + 2 * ENTRY_BYTES
    c = correlator(memory_budget_bytes=10 * unit)

    def add(k: int) -> None:
        c.apply([ev("task.created", f"t{k}", T0 + k * 1000), ev("task.queued", f"t{k}", T0 + k * 1000 + 1)],
                T0 + k * 1000)  # fmt: skip

    for k in range(8):
        add(k)
    c.apply([ev("task.cancelled", "t0", T0 + 8500)], T0 + 8500)  # t0 changed after t1…t7
    for k in range(8, 15):
        add(k)
    assert c.state_bytes <= 10 * unit
    assert c.counters["evicted_tasks"] == 6
    assert set(c.tasks) == {"t0", *(f"t{k}" for k in range(7, 15))}
    assert list(c._task_lru)[:2] == ["t7", "t0"]
