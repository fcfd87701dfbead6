"""The metrics role's pure state: label caps, open-task states, agents, alerts, record versions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.core.metrics.state import (
    OTHER,
    TASK_STATES,
    UNKNOWN,
    AgentStates,
    AlertStates,
    LabelCap,
    RecordVersions,
    TaskStates,
    alert_fields,
    task_state_of,
)


@pytest.mark.parametrize(
    ("event_type", "state", "expected"),
    [
        ("task.created", {}, "CREATED"),
        ("task.queued", {}, "QUEUED"),
        ("task.assigned", {"agent_id": "a"}, "ASSIGNED"),
        ("task.started", {}, "EXECUTING"),
        ("task.resumed", {}, "EXECUTING"),
        ("task.progress", {"percentage": 10}, None),
        ("task.review", {"passed": True}, "REVIEWING"),
        ("task.completed", {}, "COMPLETED"),
        ("task.completed", {"success": False}, "FAILED"),
        ("task.failed", {"error": "x"}, "FAILED"),
        ("task.failed", {"error": "x", "will_retry": True}, "RETRY"),
        ("task.paused", {}, "PAUSED"),
        ("task.cancelled", {}, "CANCELLED"),
        ("task.abandoned", {}, "ABANDONED"),
        ("task.status_changed", {"status": "REVIEWING"}, "REVIEWING"),
        ("task.status_changed", {"status": "bogus"}, None),
        ("agent.heartbeat", {}, None),
    ],
)
def test_task_state_of(event_type: str, state: dict[str, object], expected: str | None) -> None:
    assert task_state_of(event_type, state) == expected


def test_label_cap_admits_first_values_then_other() -> None:
    cap = LabelCap(2)
    assert [cap(v) for v in ["a", "b", "c", "a", "", "d", "b"]] == ["a", "b", OTHER, "a", UNKNOWN, OTHER, "b"]
    assert len(cap) == 2


def test_task_states_count_open_tasks_and_forget_finished() -> None:
    ts = TaskStates(capacity=100)
    assert ts.apply("t1", "CREATED", 1)
    assert ts.apply("t1", "QUEUED", 2)
    assert ts.apply("t2", "EXECUTING", 2)
    assert not ts.apply("t1", "QUEUED", 3)  # no change
    assert not ts.apply("t1", "CREATED", 1)  # older than the last change: ignored
    assert ts.counts["QUEUED"] == 1 and ts.counts["CREATED"] == 0 and ts.counts["EXECUTING"] == 1
    assert ts.apply("t1", "COMPLETED", 5)
    assert ts.state("t1") is None and len(ts) == 1 and ts.counts["QUEUED"] == 0
    assert not ts.apply("t1", "EXECUTING", 6)  # a late event of a finished task stays out


def test_task_states_are_bounded() -> None:
    ts = TaskStates(capacity=100)
    for i in range(250):
        ts.apply(f"t{i}", "EXECUTING", i)
    assert len(ts) == 100 and ts.counts["EXECUTING"] == 100 and ts.evicted == 150
    assert ts.state("t249") == "EXECUTING" and ts.state("t0") is None


@hsettings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 9), st.sampled_from(TASK_STATES), st.integers(0, 50)), max_size=80))
def test_task_state_counts_match_the_open_tasks(ops: list[tuple[int, str, int]]) -> None:
    ts = TaskStates(capacity=5)
    for task, state, t in ops:
        ts.apply(f"t{task}", state, t)
    open_states = [ts.state(f"t{i}") for i in range(10)]
    expected: dict[str, int] = {}
    for s in open_states:
        if s is not None:
            expected[s] = expected.get(s, 0) + 1
    assert {k: v for k, v in ts.counts.items() if v} == expected
    assert len(ts) <= 5


def test_agent_states() -> None:
    ag = AgentStates(capacity=2)
    ag.status_changed("a1", "busy", 3, 10)
    ag.status_changed("a1", "online", 0, 5)  # older: ignored
    ag.heartbeat("a1", {"cpu_percent": 50.0, "memory_mb": 100, "active_tasks": 2})
    ag.status_changed("a2", "offline", 4, 10)
    assert ag.agents["a1"].status == "busy" and ag.agents["a1"].active_tasks == 2
    assert ag.agents["a1"].cpu_percent == 50.0 and ag.agents["a2"].active_tasks == 0
    ag.heartbeat("a3", {})
    assert list(ag.agents) == ["a2", "a3"] or list(ag.agents) == ["a1", "a3"]
    assert len(ag.agents) == 2


def test_alert_states_and_fields() -> None:
    al = AlertStates()
    al.apply(*alert_fields({"rule": "high_failure_rate", "group": {"agent": "a"}, "state": "pending",
                            "severity": "high"}))  # type: ignore[misc]  # fmt: skip
    assert al.counts("pending") == {"high": 1} and al.counts("firing") == {}
    al.apply(*alert_fields({"rule": "high_failure_rate", "group": {"agent": "a"}, "state": "firing",
                            "severity": "high"}))  # type: ignore[misc]  # fmt: skip
    al.apply(*alert_fields({"fingerprint": "x", "status": "FIRING", "labels": {"severity": "critical"}}))  # type: ignore[misc]
    assert al.counts("firing") == {"high": 1, "critical": 1}
    al.apply(*alert_fields({"rule": "high_failure_rate", "group": {"agent": "a"}, "state": "resolved",
                            "severity": "high"}))  # type: ignore[misc]  # fmt: skip
    assert al.counts("firing") == {"critical": 1}
    assert alert_fields({"rule": "r"}) is None


def test_record_versions() -> None:
    rv = RecordVersions(capacity=2)
    assert rv.classify("t1", 1) == "new"
    assert rv.classify("t1", 1) == "replay"
    assert rv.classify("t1", 2) == "corrected"
    assert rv.classify("t1", 1) == "replay"
    rv.classify("t2", 1)
    rv.classify("t3", 1)
    assert rv.classify("t1", 2) == "new"  # forgotten beyond capacity


def test_seed_and_forget() -> None:
    ts = TaskStates(capacity=10)
    ts.seed("t1", "QUEUED", 100)
    ts.seed("t2", "EXECUTING", 100)
    ts.seed("t3", "NOT_A_STATE", 100)
    assert not ts.apply("t1", "CREATED", 50)  # older than what the table knew
    assert ts.apply("t1", "ASSIGNED", 150)
    assert ts.forget(lambda t: t == "t2") == 1
    assert {k: v for k, v in ts.counts.items() if v} == {"ASSIGNED": 1} and len(ts) == 1
    ag = AgentStates(capacity=10)
    ag.seed("a1", "busy", 2, 100, 12.5, None)
    ag.status_changed("a1", "online", 0, 50)  # older: ignored
    assert ag.agents["a1"].status == "busy" and ag.agents["a1"].cpu_percent == 12.5
    assert ag.forget(lambda a: a == "a1") == 1 and not ag.agents
    al = AlertStates()
    al.apply("f1", "firing", "high")
    al.apply("f2", "pending", "low")
    assert al.forget(lambda k: k == "f1") == 1 and al.counts("firing") == {} and al.counts("pending") == {"low": 1}
