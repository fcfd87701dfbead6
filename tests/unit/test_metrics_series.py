"""The metrics role's metrics on an injected registry (client_python style)."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from pipeline.core.normalized import Decoded, decode_normalized
from pipeline.roles.metrics_series import ExporterMetrics
from pipeline.topics import ALERTS, LIFECYCLE, NORMALIZED, ROLLUPS


def ev(i: str, event_type: str, entity: str, state: dict[str, Any] | None = None, t: int = 1000) -> dict[str, Any]:
    return {"id": i, "event_time_ms": t, "timestamp_raw": str(t), "event_type": event_type,
            "entity_type": event_type.split(".")[0], "entity_id": entity, "current_state": state or {}}  # fmt: skip


def msg(events: list[dict[str, Any]]) -> Decoded:
    """A normalized-topic message as the role reads it (through the topic's one decoder)."""
    return decode_normalized(orjson.dumps(events))


def rec(task_id: str, version: int = 1, **kw: Any) -> dict[str, Any]:
    base = {"task_id": task_id, "version": version, "task_type": "code", "agent": "coder", "outcome": "success",
            "success": True, "final_state": "COMPLETED", "finished_ms": 5000, "queue_wait_ms": 500.0,
            "execution_ms": 2000.0, "cycle_ms": 2600.0}  # fmt: skip
    return {**base, **kw}


def make(**kw: int) -> tuple[ExporterMetrics, CollectorRegistry]:
    r = CollectorRegistry()
    return ExporterMetrics(r, **kw), r


def test_events_counted_once_per_id_and_task_states() -> None:
    m, r = make()
    m.normalized(msg([ev("e1", "task.created", "t1"), ev("e2", "task.queued", "t1", t=2000)]), (NORMALIZED, 0, 0), 3.0)
    m.normalized(msg([ev("e1", "task.created", "t1")]), (NORMALIZED, 1, 7), 3.0)  # redelivered elsewhere
    m.normalized(msg([ev("e3", "task.created", "t2")]), (NORMALIZED, 0, 1), 3.0)
    assert r.get_sample_value("taskpulse_events_total", {"entity_type": "task", "event_type": "task.created"}) == 2
    assert r.get_sample_value("taskpulse_metrics_redelivered_events_total") == 1
    assert r.get_sample_value("taskpulse_tasks", {"state": "QUEUED"}) == 1
    assert r.get_sample_value("taskpulse_tasks", {"state": "CREATED"}) == 1
    assert r.get_sample_value("taskpulse_tasks", {"state": "EXECUTING"}) == 0
    assert r.get_sample_value("taskpulse_task_state_transitions_total", {"state": "CREATED"}) == 2
    assert r.get_sample_value("taskpulse_metrics_event_delay_seconds_count") == 2


def test_lifecycle_histograms_outcomes_and_corrections() -> None:
    m, r = make()
    m.lifecycle(rec("t1"), LIFECYCLE)
    m.lifecycle(rec("t1"), LIFECYCLE)  # redelivery
    m.lifecycle(rec("t2", outcome="failure", success=False, final_state="FAILED", retry_count=2), LIFECYCLE)
    m.lifecycle(rec("t3", outcome="abandoned", success=False, final_state="ABANDONED", execution_ms=None), LIFECYCLE)
    m.lifecycle(rec("t3", version=2), LIFECYCLE)  # the abandoned task completed after all
    m.lifecycle({"task_id": "bad"}, LIFECYCLE)
    labels = {"task_type": "code", "agent": "coder"}
    assert r.get_sample_value("taskpulse_tasks_finished_total", {**labels, "outcome": "success"}) == 1
    assert r.get_sample_value("taskpulse_tasks_finished_total", {**labels, "outcome": "failure"}) == 1
    assert r.get_sample_value("taskpulse_tasks_finished_total", {**labels, "outcome": "abandoned"}) == 1
    assert r.get_sample_value("taskpulse_task_record_corrections_total", {"outcome": "success"}) == 1
    assert r.get_sample_value("taskpulse_task_retries_total", {"task_type": "code"}) == 2
    assert r.get_sample_value("taskpulse_task_execution_seconds_count", labels) == 2
    assert r.get_sample_value("taskpulse_task_cycle_seconds_count", labels) == 3
    assert r.get_sample_value("taskpulse_task_queue_wait_seconds_sum", labels) == 1.5
    assert r.get_sample_value("taskpulse_task_execution_seconds_bucket", {**labels, "le": "2.5"}) == 2
    assert r.get_sample_value("taskpulse_metrics_bad_records_total", {"topic": LIFECYCLE}) == 1


def test_label_caps_bound_the_series() -> None:
    m, r = make(max_agents=2, max_task_types=1)
    for i in range(50):
        m.lifecycle(rec(f"t{i}", agent=f"agent-{i}", task_type=f"type-{i}"), LIFECYCLE)
    text = generate_latest(r).decode()
    agents = {ln.split('agent="')[1].split('"')[0] for ln in text.splitlines()
              if ln.startswith("taskpulse_tasks_finished_total{")}  # fmt: skip
    assert agents == {"agent-0", "agent-1", "other"}
    assert r.get_sample_value("taskpulse_tasks_finished_total",
                              {"task_type": "other", "agent": "other", "outcome": "success"}) == 48  # fmt: skip
    assert r.get_sample_value("taskpulse_metrics_label_values", {"label": "agent"}) == 2


def test_agents_by_status_load_and_utilization() -> None:
    m, r = make(max_agents=1)
    m.normalized(
        msg([
            ev("s1", "agent.status_changed", "a1", {"status": "busy", "active_tasks": 2}),
            ev("s2", "agent.status_changed", "a2", {"status": "online"}),
            ev("s3", "agent.status_changed", "a3", {"status": "busy", "active_tasks": 1}),
            ev("h1", "agent.heartbeat", "a1", {"cpu_percent": 150.0, "memory_mb": 10, "active_tasks": 3}),
        ]),
        (NORMALIZED, 0, 0),
        1.0,
    )
    assert r.get_sample_value("taskpulse_agents", {"status": "busy"}) == 2
    assert r.get_sample_value("taskpulse_agents", {"status": "online"}) == 1
    assert r.get_sample_value("taskpulse_agent_status", {"agent": "a1", "status": "busy"}) == 1
    assert r.get_sample_value("taskpulse_agent_status", {"agent": "other", "status": "busy"}) == 1
    assert r.get_sample_value("taskpulse_agent_status", {"agent": "other", "status": "online"}) == 1
    assert r.get_sample_value("taskpulse_agent_active_tasks", {"agent": "a1"}) == 3
    assert r.get_sample_value("taskpulse_agent_utilization_ratio", {"agent": "other"}) == 0.5
    assert r.get_sample_value("taskpulse_agent_cpu_ratio", {"agent": "a1"}) == 1.5
    assert r.get_sample_value("taskpulse_agent_memory_bytes", {"agent": "a1"}) == 10 * 1024 * 1024


def test_rollups_and_alerts() -> None:
    m, r = make()
    part = {"granularity": "1m", "window_start_ms": 0, "dims": ["task", "task.completed", "a", "code", "success"],
            "count": 4, "duration_count": 4, "duration_avg_ms": 250.0}  # fmt: skip
    m.rollups([part, {**part, "granularity": "5m"}, {"bad": 1}], ROLLUPS)
    key = {"entity_type": "task", "event_type": "task.completed"}
    assert r.get_sample_value("taskpulse_event_durations_total", key) == 4
    assert r.get_sample_value("taskpulse_event_duration_seconds_total", key) == 1.0
    assert r.get_sample_value("taskpulse_rollup_partials_total", {"granularity": "5m"}) == 1
    m.alert({"rule": "x", "state": "firing", "severity": "high"}, ALERTS)
    assert r.get_sample_value("taskpulse_alerts_firing", {"severity": "high"}) == 1
    assert r.get_sample_value("taskpulse_alerts_firing", {"severity": "critical"}) == 0
    m.alert({"rule": "x", "state": "resolved", "severity": "high"}, ALERTS)
    assert r.get_sample_value("taskpulse_alerts_firing", {"severity": "high"}) == 0
    assert r.get_sample_value("taskpulse_alert_state_changes_total", {"severity": "high", "state": "resolved"}) == 1


def test_seeded_state_shows_in_the_gauges() -> None:
    m, r = make()
    assert m.seed([("t1", "QUEUED", 10), ("t2", "REVIEWING", 10)], [("a1", "busy", 3, 10, 50.0, 100.0)]) == (2, 1)
    assert r.get_sample_value("taskpulse_tasks", {"state": "QUEUED"}) == 1
    assert r.get_sample_value("taskpulse_agent_active_tasks", {"agent": "a1"}) == 3
    m.forget(lambda entity: entity in ("t1", "a1"))
    assert r.get_sample_value("taskpulse_tasks", {"state": "QUEUED"}) == 0
    assert r.get_sample_value("taskpulse_agents", {"status": "busy"}) == 0
