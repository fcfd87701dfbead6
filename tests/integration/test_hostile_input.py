"""Hostile input on the real broker and engine (issue 9): each poison lands in the DLQ with
its reason while the valid events around it on the same partition are written and the
worker stays the same process; failures sent in the seeds' shapes (``error_message``, an
error object, no error at all) count as failures in rollups, task_executions and the CSV."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from pipeline.sdk import make_event
from pipeline.topics import RAW_TASK
from tests.integration.conftest import ROOT, publish, publish_raw, wait_for

pytestmark = pytest.mark.integration


def _nest(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"k": value}
    return value


def _poisons(now_ms: int) -> list[tuple[str, bytes, str]]:
    """(name, message bytes, the DLQ reason it must get).  json.dumps: orjson refuses to write
    300 levels and integers beyond 64 bits, which is the point."""
    ts = now_ms - 60_000

    def ev(event_id: str, event_type: str, state: dict[str, Any], **over: Any) -> bytes:
        doc = make_event(event_type, "task-poison", state, timestamp=ts, event_id=event_id)
        doc.update(over)
        return json.dumps(doc).encode()

    return [
        ("deep", ev("poison-deep", "task.progress", {"percentage": 5, "blob": _nest(300)}), "too_deep"),
        ("wide", b"[" + b",".join([b"1"] * 100_000) + b"]", "too_many_elements"),
        ("retry 2**40", ev("poison-retry", "task.failed", {"error": "x", "retry_count": 2**40}), "out_of_range"),
        ("1969", ev("poison-1969", "task.started", {}, timestamp="1969-07-20T20:17:40Z"), "bad_timestamp"),
        ("1900", ev("poison-1900", "task.started", {}, timestamp="1900-01-01T00:00:00Z"), "bad_timestamp"),
        ("5000-char id", ev("i" * 5000, "task.started", {}), "out_of_range"),
        ("2**70", ev("poison-2e70", "agent.heartbeat", {"active_tasks": 2**70}, entity_type="agent"), "out_of_range"),
    ]


def test_poison_among_canaries_on_one_partition(make_worker, broker):
    worker = make_worker().start()
    now = int(time.time() * 1000)

    def canaries(tag: str, n: int) -> list[tuple[str, bytes]]:
        return [(RAW_TASK, orjson.dumps(make_event("task.progress", f"canary-{tag}-{i}", {"percentage": 10},
                                                   timestamp=now - 30_000, event_id=f"canary-{tag}-{i}")))
                for i in range(n)]  # fmt: skip

    poisons = _poisons(now)
    # an event with a 2**70 number in a descriptive field is valid: it must be written too
    big_extra = json.dumps(make_event("task.progress", "canary-big", {"percentage": 1, "note": 2**70},
                                      timestamp=now - 30_000, event_id="canary-big")).encode()  # fmt: skip
    # one partition (publish_raw sends every message with the same key), in this order
    publish_raw(broker, [*canaries("before", 20), *[(RAW_TASK, raw) for _, raw, _ in poisons],
                         (RAW_TASK, big_extra), *canaries("after", 20)])  # fmt: skip

    canary_ids = [f"canary-{t}-{i}" for t in ("before", "after") for i in range(20)] + ["canary-big"]
    ids_sql = "SELECT count() FROM taskpulse.events WHERE id IN (SELECT arrayJoin(" + repr(canary_ids) + "))"
    wait_for(lambda: worker.scalar(ids_sql) == len(canary_ids), 90, "every canary in taskpulse.events")
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.dlq") >= len(poisons), 30, "the poisons in the DLQ")
    time.sleep(1)
    rows = worker.sql("SELECT reason, event_id, detail, src_partition FROM taskpulse.dlq ORDER BY src_offset")
    assert [r[0] for r in rows] == [reason for _, _, reason in poisons], rows
    assert len({r[3] for r in rows}) == 1  # all on one partition
    by_id = {r[1]: r for r in rows}
    assert "TASKPULSE_MAX_DEPTH" in by_id["poison-deep"][2]
    assert "current_state.retry_count" in by_id["poison-retry"][2]
    assert "current_state.active_tasks" in by_id["poison-2e70"][2]
    wide = next(r for r in rows if r[0] == "too_many_elements")
    assert "100000" in wide[2]
    assert worker.scalar("SELECT count() FROM taskpulse.events") == len(canary_ids)
    note = worker.scalar("SELECT JSONExtractFloat(current_state, 'note') FROM taskpulse.events WHERE id = 'canary-big'")
    assert note == float(2**70)
    # the same worker process throughout: never exited, never restarted
    assert worker.proc.poll() is None and worker.starts == 1
    status = worker.status()
    assert sum(status["rejected"].values()) == len(poisons)


def _cli(worker: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=worker.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def _seed_failures(base: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Tasks that fail in the seeds' shapes, and the error text each must end with."""
    events: list[dict[str, Any]] = []

    def task(task_id: str, i: int, steps: list[tuple[str, dict[str, Any]]]) -> None:
        for k, (et, state) in enumerate(steps):
            events.append(make_event(et, task_id, state, timestamp=base + i * 10_000 + k * 1000))

    # seed 001: the task log (user_id, assigned_to, max_confidence, error_message)
    task("t-001", 0, [
        ("task.created", {"user_id": "U789", "request": "Unknown request", "task_type": "chat"}),
        ("task.assigned", {"assigned_to": "Writer", "max_confidence": 30, "evaluations": {"Writer": 30, "Grok": 20}}),
        ("task.started", {}),
        ("task.failed", {"error_message": "No agent confident enough"}),
    ])  # fmt: skip
    # seed 001 again: task_complete with success false and an error_message
    task("t-001b", 1, [("task.started", {"agent": "Builder", "task_type": "chat"}),
                       ("task.completed", {"success": False, "error_message": "build broke"})])  # fmt: skip
    # seed 002: the tracker's TaskRecord (agent, error_message, retry_count, lower-case status)
    task("t-002", 2, [
        ("task.created", {"task_type": "research"}),
        ("task.status_changed", {"status": "in_progress", "agent": "researcher"}),
        ("task.failed", {"error_message": "rate limited by upstream", "retry_count": 2, "agent": "researcher"}),
    ])  # fmt: skip
    # seed 004: droid_id / execution_id / run_id, and an error object
    task("t-004", 3, [
        ("task.started", {"droid_id": "setup-testing", "execution_id": "exec-1-1.1", "run_id": "r-1621",
                          "task_type": "droid"}),
        ("task.failed", {"droid_id": "setup-testing", "execution_id": "exec-1-1.1", "error": {
            "error_type": "TimeoutError", "stack_trace": "Traceback\n  ...\nTimeoutError: 3600s"}}),
    ])  # fmt: skip
    # no error text at all: still a failure
    task("t-none", 4, [("task.started", {"agent_id": "coder", "task_type": "code"}), ("task.failed", {})])
    errors = {"t-001": "No agent confident enough", "t-001b": "build broke", "t-002": "rate limited by upstream",
              "t-004": "TimeoutError: 3600s", "t-none": ""}  # fmt: skip
    return events, errors


def test_seed_shaped_failures_count_everywhere(make_worker, broker, tmp_path):
    worker = make_worker(TASKPULSE_ROLES="ingest,correlate", TASKPULSE_REORDER_WINDOW_S="1").start()
    events, errors = _seed_failures(int(time.time() * 1000) - 600_000)
    publish(broker, events, batch_size=1)

    select = ("SELECT task_id, outcome, success, error, agent, retry_count, group_key FROM taskpulse.task_executions "
              "FINAL ORDER BY task_id")  # fmt: skip
    got = wait_for(lambda: (r := worker.sql(select)) and len(r) >= len(errors) and r, 90, "five finished tasks")
    assert {r[0]: (r[1], r[2], r[3]) for r in got} == {t: ("failure", False, e) for t, e in errors.items()}
    by_id = {r[0]: r for r in got}
    assert by_id["t-001"][4] == "Writer" and by_id["t-004"][4] == "setup-testing" and by_id["t-002"][4] == "researcher"
    assert by_id["t-002"][5] == 2 and by_id["t-004"][6] == "r-1621"
    assert worker.scalar("SELECT count() FROM taskpulse.dlq") == 0

    # rollups: every failure is counted (1d tier: one window holds them all)
    failures = worker.scalar("SELECT sum(failures) FROM taskpulse.rollups WHERE granularity = '1d'")
    assert failures == len(errors)
    per_agent = dict(worker.sql("SELECT agent, sum(failures) FROM taskpulse.rollups WHERE granularity = '1d' "
                                "AND failures > 0 GROUP BY agent"))  # fmt: skip
    # the failure events' own agent (droid_id, agent) is the rollup dimension
    assert per_agent == {"": 3, "setup-testing": 1, "researcher": 1}

    # the CSV export: success false and the error text, for each of them
    out = tmp_path / "tasks.csv"
    exported = _cli(worker, "export", "csv", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert sorted((r["success"], r["error_message"]) for r in rows) == sorted(("false", e) for e in errors.values())
    assert worker.proc.poll() is None and worker.starts == 1
