"""The task state machine, derived durations and the correlator (pure, injected clock)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.tasks.correlation import CorrelationConfig, Correlator
from pipeline.core.tasks.lifecycle import compact, derive
from pipeline.events import EntityType, NormalizedEvent, TaskState

T0 = 1_762_164_000_000  # 2025-11-03T10:00:00Z
_ids = itertools.count()


def ev(event_type: str, entity_id: str, t: int, eid: str | None = None, **state: Any) -> NormalizedEvent:
    md = {"correlation_id": state.pop("_corr")} if "_corr" in state else {}
    return NormalizedEvent(
        id=eid or f"e{next(_ids)}", event_time_ms=t, timestamp_raw=str(t), event_type=event_type,
        entity_type=EntityType(event_type.split(".")[0]), entity_id=entity_id, current_state=state, metadata=md,
    )  # fmt: skip


def history(events: list[NormalizedEvent]) -> list[list[Any]]:
    return [compact(e.id, e.event_type, e.event_time_ms, e.current_state, e.metadata) for e in events]


def happy_task(task_id: str = "t1", t0: int = T0) -> list[NormalizedEvent]:
    """created 0s, queued 1s, assigned 3s, started 4s, paused 10–15s, progress 20s,
    review 30s, completed 32s."""
    return [
        ev("task.created", task_id, t0, task_type="research", request="Summarise X", requester_id="u1",
           requester_type="human", priority="high", group="week-A", _corr="c-1"),
        ev("task.queued", task_id, t0 + 1000),
        ev("task.assigned", task_id, t0 + 3000, agent_id="researcher", confidence=0.9,
           evaluations={"researcher": 0.9, "writer": 0.4, "coder": 0.2}),
        ev("task.started", task_id, t0 + 4000, agent_id="researcher"),
        ev("task.paused", task_id, t0 + 10_000),
        ev("task.resumed", task_id, t0 + 15_000),
        ev("task.progress", task_id, t0 + 20_000, percentage=50, step="draft"),
        ev("task.review", task_id, t0 + 30_000, reviewer="reviewer", passed=True),
        ev("task.completed", task_id, t0 + 32_000, success=True),
    ]  # fmt: skip


def test_a_whole_lifecycle_gives_every_duration() -> None:
    v = derive("t1", history(happy_task()))
    assert v.state == TaskState.COMPLETED and v.finished
    r = v.record(version=1)
    assert (r.queue_wait_ms, r.execution_ms, r.cycle_ms) == (3000.0, 28000.0, 32000.0)
    assert (r.paused_ms, r.review_ms) == (5000.0, 2000.0)
    assert (r.agent, r.confidence, r.other_agents) == ("researcher", 0.9, {"writer": 0.4, "coder": 0.2})
    assert (r.request, r.requester_id, r.priority, r.group, r.correlation_id) == (
        "Summarise X", "u1", "high", "week-A", "c-1")  # fmt: skip
    assert (r.outcome, r.success, r.invalid_transitions, r.progress_checkpoints, r.events) == (
        "success", True, 0, 1, 9)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False))
def test_arrival_order_does_not_change_the_result(rnd: random.Random) -> None:
    events = happy_task()
    shuffled = events[:]
    rnd.shuffle(shuffled)
    assert derive("t1", history(shuffled)).record(1) == derive("t1", history(events)).record(1)


@pytest.mark.parametrize(
    ("steps", "state", "invalid"),
    [
        ([("task.created", {}), ("task.queued", {}), ("task.cancelled", {})], "CANCELLED", 0),
        ([("task.created", {}), ("task.started", {})], "EXECUTING", 1),  # skipped QUEUED/ASSIGNED
        ([("task.created", {}), ("task.completed", {})], "COMPLETED", 1),
        ([("task.queued", {}), ("task.assigned", {"agent_id": "a"}), ("task.started", {}),
          ("task.failed", {"error": "x", "will_retry": False})], "FAILED", 0),
        ([("task.assigned", {"agent_id": "a"}), ("task.started", {}), ("task.review", {"passed": False}),
          ("task.assigned", {"agent_id": "b"}), ("task.started", {}), ("task.completed", {})], "COMPLETED", 0),
        ([("task.started", {}), ("task.completed", {"success": False})], "FAILED", 0),
        ([("task.started", {}), ("task.status_changed", {"status": "reviewing"}), ("task.completed", {})],
         "COMPLETED", 0),
        ([("task.completed", {}), ("task.progress", {"percentage": 10})], "EXECUTING", 1),  # reopened
        ([("task.started", {}), ("task.abandoned", {}), ("task.completed", {})], "COMPLETED", 0),
    ],
)
def test_state_machine_applies_and_flags_transitions(
    steps: list[tuple[str, dict[str, Any]]], state: str, invalid: int
) -> None:
    events = [ev(et, "t", T0 + i * 1000, **data) for i, (et, data) in enumerate(steps)]
    v = derive("t", history(events))
    assert v.state == TaskState(state)
    assert v.invalid_transitions == invalid


def test_retries_are_counted_and_a_final_success_carries_no_error() -> None:
    steps = [("task.created", {}), ("task.queued", {}), ("task.assigned", {"agent_id": "a"}), ("task.started", {}),
             ("task.failed", {"error": "rate limited", "will_retry": True, "retry_count": 0}),
             ("task.queued", {}), ("task.assigned", {"agent_id": "b"}), ("task.started", {}),
             ("task.failed", {"error": "OOM", "will_retry": True, "retry_count": 1}),
             ("task.queued", {}), ("task.assigned", {"agent_id": "b"}), ("task.started", {}),
             ("task.completed", {})]  # fmt: skip
    events = [ev(et, "t", T0 + i * 1000, **data) for i, (et, data) in enumerate(steps)]
    r = derive("t", history(events)).record(1)
    assert (r.outcome, r.retry_count, r.error, r.agent, r.invalid_transitions) == ("success", 2, "", "b", 0)
    # queue wait: first queued → first started; execution: first started → finished
    assert (r.queue_wait_ms, r.execution_ms) == (2000.0, 9000.0)


# --------------------------------------------------------------------------- the correlator


def correlator(**kw: Any) -> Correlator:
    return Correlator(CorrelationConfig(**{"reorder_window_s": 2.0, "abandon_after_s": 60.0,
                                           "agent_offline_after_s": 30.0, **kw}))  # fmt: skip


def test_a_finished_task_waits_out_the_reordering_window_then_is_published_once() -> None:
    c = correlator()
    wall = T0 + 40_000
    events = happy_task()
    out = c.apply(events[:-1], wall)
    assert not out.executions and "t1" in out.task_rows
    out = c.apply([events[-1]], wall + 100)
    assert not out.executions  # inside the window: a straggler may still arrive
    straggler = ev("task.progress", "t1", T0 + 25_000, percentage=80)
    out = c.apply([straggler], wall + 1500)
    assert not out.executions
    out = c.tick(wall + 1500 + 2000)
    assert [r.progress_checkpoints for r in out.executions] == [2]
    assert out.executions[0].version == 1
    assert not c.tick(wall + 10_000).executions  # published once


def test_the_same_event_twice_changes_nothing() -> None:
    c = correlator()
    events = happy_task()
    c.apply(events, T0 + 40_000)
    again = c.apply(events, T0 + 40_500)
    assert not again.task_rows
    assert [r.events for r in c.tick(T0 + 50_000).executions] == [9]


def test_a_silent_started_task_is_abandoned_by_stream_time_and_corrected_by_a_late_completion() -> None:
    c = correlator(abandon_after_by_type={"code": 5.0})
    started = [ev("task.created", "t2", T0, task_type="code"), ev("task.queued", "t2", T0 + 100),
               ev("task.assigned", "t2", T0 + 200, agent_id="coder", confidence=0.7),
               ev("task.started", "t2", T0 + 300)]  # fmt: skip
    c.apply(started, wall_ms=T0 + 400)
    assert not c.tick(T0 + 5000).executions  # 4.6 s of silence < 5 s
    out = c.tick(T0 + 6000)
    [rec] = out.executions
    assert (rec.outcome, rec.final_state, rec.finished_ms, rec.version) == ("abandoned", "ABANDONED", T0 + 5300, 1)
    [abandoned] = out.emitted
    assert abandoned["event_type"] == "task.abandoned" and abandoned["id"] == "taskpulse:abandoned:t2:1"
    # the emitted event comes back through the pipeline: it is already in the history
    c.apply([ev("task.abandoned", "t2", T0 + 5300, eid=abandoned["id"])], T0 + 6100)
    assert not c.tick(T0 + 9000).executions
    # the agent finally reports: the row is corrected (a higher version wins in ClickHouse)
    c.apply([ev("task.completed", "t2", T0 + 20_000, success=True)], T0 + 20_100)
    [fixed] = c.tick(T0 + 23_000).executions
    assert (fixed.outcome, fixed.version, fixed.execution_ms) == ("success", 2, 19_700.0)


def test_heartbeats_of_the_assigned_agent_keep_a_quiet_task_alive() -> None:
    c = correlator(abandon_after_by_type={"long": 10.0})
    c.apply([ev("task.assigned", "t5", T0, agent_id="a7", task_type="long"), ev("task.started", "t5", T0 + 100)],
            T0 + 100)  # fmt: skip
    for k in range(1, 4):  # the agent keeps reporting while it works, every 8 s
        assert not c.apply([ev("agent.heartbeat", "a7", T0 + k * 8000, active_tasks=1)], T0 + k * 8000).executions
    assert not c.tick(T0 + 24_000 + 9000).executions
    # the agent goes silent (crashed): 10 s after its last heartbeat the task is abandoned
    [rec] = c.tick(T0 + 24_000 + 10_001).executions
    assert (rec.outcome, rec.finished_ms) == ("abandoned", T0 + 34_000)


def test_replaying_history_does_not_abandon_tasks_whose_events_are_not_read_yet() -> None:
    c = correlator()
    old = T0 - 86_400_000  # a day-old backlog, read now
    c.apply([ev("task.started", "t3", old)], wall_ms=T0)
    assert not c.tick(T0 + 1000).executions  # stream time is a day behind the wall clock
    c.apply([ev("task.progress", "t3", old + 50_000, percentage=10)], wall_ms=T0 + 2000)
    assert not c.tick(T0 + 3000).executions
    assert [r.outcome for r in c.tick(T0 + 2000 + 61_000).executions] == ["abandoned"]  # real silence


def test_closed_tasks_are_forgotten_after_a_while_and_abandoned_ones_kept_longer() -> None:
    c = correlator(keep_closed_s=100.0, keep_abandoned_s=1000.0, abandon_after_by_type={"x": 5.0})
    c.apply(happy_task("done"), T0 + 40_000)
    c.apply([ev("task.started", "silent", T0 + 40_000, task_type="x")], T0 + 40_000)
    out = c.apply([ev("task.created", "late", T0 + 50_000)], T0 + 50_000)  # stream time passes 45 s
    assert sorted((r.task_id, r.outcome) for r in out.executions) == [("done", "success"), ("silent", "abandoned")]
    assert not c.tick(T0 + 50_000 + 100_000).dirty_tasks
    out = c.tick(T0 + 50_000 + 100_001)
    assert out.dirty_tasks == {"done": None} and set(c.tasks) == {"silent", "late"}
    assert c.tick(T0 + 50_000 + 1_000_001).dirty_tasks == {"silent": None}
    assert set(c.tasks) == {"late"}


def test_agents_go_busy_online_and_offline_on_silence() -> None:
    c = correlator()
    out = c.apply([ev("agent.heartbeat", "a1", T0, active_tasks=2, cpu_percent=50)], T0)
    assert [e["current_state"]["status"] for e in out.emitted] == ["busy"]
    out = c.apply([ev("agent.heartbeat", "a1", T0 + 10_000, active_tasks=0)], T0 + 10_000)
    assert [e["current_state"]["status"] for e in out.emitted] == ["online"]
    assert c.agents["a1"].busy_ms == 10_000
    assert not c.tick(T0 + 39_000).emitted
    out = c.tick(T0 + 41_000)
    [change] = out.emitted
    assert change["current_state"]["status"] == "offline" and change["id"] == f"taskpulse:agent:a1:3:{T0 + 40_000}"
    assert change["timestamp"].startswith("2025-11-03T10:00:40")
    assert out.agent_rows["a1"].status == "offline"
    out = c.apply([ev("agent.online", "a1", T0 + 50_000)], T0 + 50_000)
    assert [e["current_state"]["status"] for e in out.emitted] == ["online"]


def test_agent_events_move_stream_time_too() -> None:
    c = correlator()
    c.apply([ev("task.started", "t9", T0 - 3_600_000)], T0)  # an old task event
    c.apply([ev("agent.heartbeat", "a2", T0, active_tasks=0)], T0)
    assert not c.tick(T0 + 29_000).emitted
    assert [e["current_state"]["status"] for e in c.tick(T0 + 31_000).emitted] == ["offline"]


def test_state_survives_a_json_round_trip_like_the_faust_table() -> None:
    c = correlator()
    events = happy_task()
    c.apply(events[:5], T0 + 40_000)
    c.apply([ev("agent.heartbeat", "a1", T0, active_tasks=1)], T0 + 40_000)
    restored = correlator()
    tasks = {k: orjson.loads(orjson.dumps(s.to_json())) for k, s in c.tasks.items()}
    agents = {k: orjson.loads(orjson.dumps(s.to_json())) for k, s in c.agents.items()}
    restored.restore(tasks, agents, T0 + 40_000)
    for x in (c, restored):
        x.apply(events[5:], T0 + 41_000)
    a, b = c.tick(T0 + 50_000).executions, restored.tick(T0 + 50_000).executions
    assert a == b and len(a) == 1
