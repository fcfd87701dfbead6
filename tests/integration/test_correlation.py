"""Correlation on the real broker and engine: task lifecycle rows, abandonment and its
correction, agent availability, group progress, the CSV export, and a worker restart."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import subprocess
import sys
import time
import urllib.error
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.sdk import make_event
from pipeline.topics import LIFECYCLE
from tests.integration.conftest import ROOT, publish, wait_for

pytestmark = pytest.mark.integration

SEED_CSV_HEADER = ("timestamp,user_id,request,assigned_agent,confidence,other_agents_confidence,"
                   "success,execution_time,error_message").split(",")  # fmt: skip
TRICKY_REQUEST = 'Summarise "X", then Y;\nsecond line, with commas'
EXTRA_ENV = {
    "TASKPULSE_ROLES": "ingest,correlate",
    "TASKPULSE_REORDER_WINDOW_S": "4",
    "TASKPULSE_ABANDON_AFTER_BY_TYPE": '{"flaky": 3}',
    "TASKPULSE_AGENT_OFFLINE_AFTER_S": "4",
}


def script(base: int) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Scripted tasks (events, expected final rows).  Each task starts 1 s after the previous."""
    events: list[dict[str, Any]] = []
    expected: dict[str, dict[str, Any]] = {}

    def task(task_id: str, i: int, task_type: str, steps: list[tuple[int, str, dict[str, Any]]]) -> None:
        t0 = base + i * 1000
        for offset, et, state in steps:
            events.append(make_event(et, task_id, {"task_type": task_type, **state}, timestamp=t0 + offset,
                                     metadata={"correlation_id": f"c-{task_id}"}))  # fmt: skip

    created = {"group": "week-A", "requester_id": "u-1", "requester_type": "human", "request": TRICKY_REQUEST}
    task("t-happy", 0, "research", [
        (0, "task.created", created), (1000, "task.queued", {}),
        (3000, "task.assigned", {"agent_id": "researcher", "confidence": 0.9,
                                 "evaluations": {"researcher": 0.9, "writer": 0.4, "coder": 0.2}}),
        (4000, "task.started", {"agent_id": "researcher"}), (10_000, "task.paused", {}), (15_000, "task.resumed", {}),
        (20_000, "task.progress", {"percentage": 50}), (25_000, "task.progress", {"percentage": 75}),
        (30_000, "task.review", {"reviewer": "reviewer", "passed": True}),
        (32_000, "task.completed", {"success": True}),
    ])  # fmt: skip
    expected["t-happy"] = dict(outcome="success", agent="researcher", confidence=0.9, queue_wait_ms=3000.0,
                               execution_ms=28_000.0, review_ms=2000.0, cycle_ms=32_000.0, paused_ms=5000.0,
                               progress_checkpoints=2, retry_count=0, invalid_transitions=0, error="",
                               other_agents={"writer": 0.4, "coder": 0.2}, events=10, version=1)  # fmt: skip
    task("t-skip", 1, "research", [(0, "task.created", {"group": "week-A"}), (5000, "task.completed", {})])
    expected["t-skip"] = dict(outcome="success", queue_wait_ms=None, execution_ms=None, cycle_ms=5000.0,
                              invalid_transitions=1, invalid_transition_list=["CREATED->COMPLETED"], events=2,
                              version=1)  # fmt: skip
    task("t-retry", 2, "code", [
        (0, "task.created", {"group": "week-A"}), (100, "task.queued", {}),
        (200, "task.assigned", {"agent_id": "coder", "confidence": 0.8}), (300, "task.started", {}),
        (1300, "task.failed", {"error": "rate limited", "will_retry": True, "retry_count": 0}),
        (2300, "task.queued", {}), (2400, "task.assigned", {"agent_id": "tester", "confidence": 0.7}),
        (2500, "task.started", {}),
        (3500, "task.failed", {"error": "OOM", "will_retry": True, "retry_count": 1}),
        (4500, "task.queued", {}), (4600, "task.assigned", {"agent_id": "coder", "confidence": 0.8}),
        (4700, "task.started", {}), (9700, "task.completed", {"success": True}),
    ])  # fmt: skip
    expected["t-retry"] = dict(outcome="success", agent="coder", retry_count=2, error="", queue_wait_ms=200.0,
                               execution_ms=9400.0, cycle_ms=9700.0, invalid_transitions=0, version=1)  # fmt: skip
    task("t-fail", 3, "code", [
        (0, "task.created", {"group": "week-A"}), (100, "task.queued", {}),
        (200, "task.assigned", {"agent_id": "writer", "confidence": 0.5}), (300, "task.started", {}),
        (2300, "task.failed", {"error": "invalid output schema", "will_retry": False}),
    ])  # fmt: skip
    expected["t-fail"] = dict(outcome="failure", agent="writer", error="invalid output schema",
                              execution_ms=2000.0, retry_count=0, version=1)  # fmt: skip
    task("t-cancel", 4, "research", [(0, "task.created", {"group": "week-A"}), (100, "task.queued", {}),
                                     (600, "task.cancelled", {"reason": "user cancelled"})])  # fmt: skip
    expected["t-cancel"] = dict(outcome="cancelled", queue_wait_ms=None, cycle_ms=600.0, version=1)
    task("t-flaky", 5, "flaky", [
        (0, "task.created", {"group": "week-A"}), (100, "task.queued", {}),
        (200, "task.assigned", {"agent_id": "ops", "confidence": 0.6}), (300, "task.started", {}),
        (1300, "task.progress", {"percentage": 10}),
    ])  # fmt: skip
    for n in range(4):  # still open: 2 queued, 2 executing
        steps = [(0, "task.created", {"group": "week-A"}), (500, "task.queued", {})]
        if n >= 2:
            steps += [(800, "task.assigned", {"agent_id": "analyst"}), (1000, "task.started", {})]
        task(f"t-open-{n}", 6 + n, "research", steps)
    # a later event of another task moves stream time well past t-flaky's 3 s timeout
    events.append(make_event("task.created", "t-late", {"task_type": "research"}, timestamp=base + 60_000))
    return events, expected


def lifecycle_records(bootstrap: str, want: int, timeout: float = 30) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(LIFECYCLE, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None)  # fmt: skip
        await consumer.start()
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    out.extend(orjson.loads(r.value) for r in records)
                if len(out) >= want and not batch:
                    break
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())


def rows(worker: Any, sql: str) -> list[dict[str, Any]]:
    cols_rows = worker.sql(sql)
    names = [c.strip() for c in sql.split("SELECT", 1)[1].split("FROM", 1)[0].split(",")]
    return [dict(zip(names, r, strict=True)) for r in cols_rows]


def _cli(worker: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=worker.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_scripted_tasks_agents_groups_and_csv(make_worker, broker, tmp_path):
    worker = make_worker(**EXTRA_ENV).start()
    base = int(time.time() * 1000) - 600_000
    events, expected = script(base)
    shuffled = events[:]
    random.Random(3).shuffle(shuffled)  # out of order across and within tasks
    happy = [e for e in events if e["entity_id"] == "t-happy"]
    publish(broker, shuffled, batch_size=1)
    publish(broker, happy, batch_size=100)  # every event of t-happy delivered twice

    select = ("SELECT task_id, version, outcome, agent, confidence, other_agents, queue_wait_ms, execution_ms, "
              "review_ms, cycle_ms, paused_ms, progress_checkpoints, retry_count, invalid_transitions, "
              "invalid_transition_list, error, "
              "events, request, requester_id, group_key, correlation_id FROM taskpulse.task_executions FINAL "
              "ORDER BY task_id")  # fmt: skip
    wait_for(lambda: len(worker.sql(select)) >= 6, 90, "six finished tasks")
    got = {r["task_id"]: r for r in rows(worker, select)}
    assert set(got) == {*expected, "t-flaky"}
    assert got["t-flaky"]["outcome"] == "abandoned"
    assert got["t-flaky"]["execution_ms"] == 4000.0  # started → last activity + 3 s timeout
    for task_id, want in expected.items():
        for k, v in want.items():
            assert got[task_id][k] == v, (task_id, k, got[task_id][k], v)
    assert got["t-happy"]["request"] == TRICKY_REQUEST
    assert (got["t-happy"]["group_key"], got["t-happy"]["correlation_id"]) == ("week-A", "c-t-happy")
    assert worker.scalar("SELECT count() FROM taskpulse.events WHERE event_type = 'task.abandoned' "
                         "AND entity_id = 't-flaky'") == 1  # fmt: skip

    # the agent finally reports: the abandoned row is corrected
    publish(broker, [make_event("task.completed", "t-flaky", {"task_type": "flaky", "success": True},
                                timestamp=base + 5000 + 9000)], batch_size=1)  # fmt: skip
    wait_for(lambda: worker.scalar("SELECT outcome FROM taskpulse.task_executions FINAL "
                                   "WHERE task_id = 't-flaky'") == "success", 60, "the corrected row")  # fmt: skip
    fixed = rows(worker, select.replace("ORDER BY", "WHERE task_id = 't-flaky' ORDER BY"))[0]
    assert (fixed["version"], fixed["execution_ms"]) == (2, 8700.0)

    # every finished task published once on the lifecycle topic, plus the one correction
    records = lifecycle_records(broker.bootstrap, want=7)
    assert sorted((r["task_id"], r["version"]) for r in records) == sorted(
        [(t, 1) for t in expected] + [("t-flaky", 1), ("t-flaky", 2)])  # fmt: skip

    # group progress: 10 tasks, 4 completed, 2 failed or cancelled, 2 queued, 2 executing
    group = rows(worker, "SELECT total, pending, in_progress, completed, failed, percentage "
                         "FROM taskpulse.task_groups WHERE group_key = 'week-A'")[0]  # fmt: skip
    assert group == {"total": 10, "pending": 2, "in_progress": 2, "completed": 4, "failed": 2, "percentage": 60.0}
    shown = _cli(worker, "status", "--group", "week-A")
    assert shown.returncode == 0, shown.stderr
    assert "60.0%" in shown.stdout and "(6/10)" in shown.stdout

    # the per-task CSV round-trips through the csv module with the seed's header
    out = tmp_path / "tasks.csv"
    exported = _cli(worker, "export", "csv", "-o", str(out), "--page-rows", "2")
    assert exported.returncode == 0, exported.stderr
    reader = csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline=""))
    assert reader.fieldnames == SEED_CSV_HEADER
    by_request = {r["request"]: r for r in reader}
    assert len(by_request) == 2  # t-happy carries the request text; the others have none
    happy_row = by_request[TRICKY_REQUEST]
    assert happy_row == {
        "timestamp": happy_row["timestamp"], "user_id": "u-1", "request": TRICKY_REQUEST,
        "assigned_agent": "researcher", "confidence": "0.9", "other_agents_confidence": "writer:0.4;coder:0.2",
        "success": "true", "execution_time": "28", "error_message": "",
    }  # fmt: skip
    assert happy_row["timestamp"].endswith("Z")
    all_rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"), newline="")))
    assert len(all_rows) == 6
    assert [(r["success"], r["error_message"]) for r in all_rows if r["assigned_agent"] == "writer"] == [
        ("false", "invalid output schema")]  # fmt: skip
    only_coder = _cli(worker, "export", "csv", "--agent", "coder")
    assert [r["assigned_agent"] for r in csv.DictReader(io.StringIO(only_coder.stdout))] == ["coder"]

    # the daily report up to now counts the same tasks
    report = _cli(worker, "report", "daily", "--end", "now")
    assert report.returncode == 0, report.stderr
    assert "- Tasks finished: 6" in report.stdout
    assert "- Succeeded: 4 (66.7%); failed: 1; abandoned: 0; cancelled: 1" in report.stdout
    assert "| research | 3 |" in report.stdout and "- 1 × invalid output schema" in report.stdout

    # agents: busy on a heartbeat with work, online when idle, offline after 4 s of silence
    now = int(time.time() * 1000)
    publish(broker, [
        make_event("agent.heartbeat", "agent-x", {"active_tasks": 2, "cpu_percent": 40}, timestamp=now),
        make_event("agent.heartbeat", "agent-x", {"active_tasks": 0, "cpu_percent": 5}, timestamp=now + 1000),
    ], batch_size=1)  # fmt: skip
    wait_for(lambda: worker.sql("SELECT status FROM taskpulse.agent_status FINAL WHERE agent = 'agent-x'")
             == [["offline"]], 40, "agent-x offline after silence")  # fmt: skip
    changes_sql = ("SELECT JSONExtractString(current_state, 'status') FROM taskpulse.events "
                   "WHERE event_type = 'agent.status_changed' AND entity_id = 'agent-x' ORDER BY event_time")
    wait_for(lambda: len(worker.sql(changes_sql)) == 3, 30, "the offline change as an event")
    assert [c[0] for c in worker.sql(changes_sql)] == ["busy", "online", "offline"]
    offline_at = worker.scalar("SELECT toUnixTimestamp64Milli(event_time) FROM taskpulse.events WHERE "
                               "event_type = 'agent.status_changed' AND entity_id = 'agent-x' "
                               "AND JSONExtractString(current_state, 'status') = 'offline'")  # fmt: skip
    assert int(offline_at) == now + 1000 + 4000  # last heartbeat + the offline interval
    overview = rows(worker, "SELECT status, utilization FROM taskpulse.agent_overview WHERE agent = 'agent-x'")
    assert overview == [{"status": "offline", "utilization": 0.2}]  # busy 1 s of 5 s online

    # everything read: no lag on the raw topics (ingest) nor on the normalized one (correlation)
    lag = wait_for(lambda: (st := worker.status()) and sum(st["lag"].values()) == 0 and st["lag"], 30, "no lag")
    assert "taskpulse.events.normalized" in lag and "taskpulse.events.task" in lag


def _delete_changelogs(bootstrap: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    async def go() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.endswith("-changelog")]
            await admin.delete_topics(names)
            return names
        finally:
            await admin.close()

    return asyncio.run(go())


@pytest.mark.parametrize("loss", ["kill", "kill-and-lose-changelog"])
def test_a_worker_restart_in_the_middle_loses_no_task_state(make_worker, broker, loss):
    env = {**EXTRA_ENV, "TASKPULSE_REORDER_WINDOW_S": "1"}
    worker = make_worker(**env).start()
    base = int(time.time() * 1000) - 300_000
    ids = [f"r-{n}" for n in range(20)]
    first, second = [], []
    for n, task_id in enumerate(ids):
        t0 = base + n * 100
        st = {"task_type": "research", "group": "restart"}
        first += [
            make_event("task.created", task_id, {**st, "request": f"job {n}", "requester_id": "u-9"}, timestamp=t0),
            make_event("task.queued", task_id, st, timestamp=t0 + 1000),
            make_event("task.assigned", task_id, {**st, "agent_id": "a1", "confidence": 0.75,
                                                  "evaluations": {"a1": 0.75, "a2": 0.5}}, timestamp=t0 + 2000),
            make_event("task.started", task_id, st, timestamp=t0 + 3000),
            make_event("task.progress", task_id, {**st, "percentage": 50}, timestamp=t0 + 5000),
        ]  # fmt: skip
        second.append(make_event("task.completed", task_id, st, timestamp=t0 + 10_000))
    publish(broker, first, batch_size=10)
    wait_for(lambda: worker.scalar("SELECT countIf(state = 'EXECUTING') FROM taskpulse.tasks FINAL") == 20,
             60, "20 executing tasks")  # fmt: skip
    time.sleep(2)  # past a commit interval: the restart resumes after these events
    worker.kill()
    if loss == "kill-and-lose-changelog":
        # the tables' changelog is gone: state comes back from ClickHouse (tasks + events)
        assert sorted(_delete_changelogs(broker.bootstrap)) == ["taskpulse-agents-changelog",
                                                                "taskpulse-tasks-changelog"]  # fmt: skip
    worker.start()
    publish(broker, second, batch_size=10)
    select = ("SELECT task_id, request, requester_id, agent, confidence, queue_wait_ms, execution_ms, cycle_ms, "
              "progress_checkpoints, events FROM taskpulse.task_executions FINAL ORDER BY task_id")  # fmt: skip
    wait_for(lambda: len(worker.sql(select)) == 20, 90, "20 finished tasks after the restart")
    for r in rows(worker, select):
        n = int(r["task_id"].split("-")[1])
        assert r == {"task_id": f"r-{n}", "request": f"job {n}", "requester_id": "u-9", "agent": "a1",
                     "confidence": 0.75, "queue_wait_ms": 2000.0, "execution_ms": 7000.0, "cycle_ms": 10_000.0,
                     "progress_checkpoints": 1, "events": 6}  # fmt: skip


@pytest.mark.parametrize("behind", ["quiet stream", "canaries"])
def test_an_unexpected_error_in_a_send_loses_no_finished_task(make_worker, broker, tmp_path, behind):
    """A send that raises what no sink retry handles (here aiokafka's full-buffer timeout, a
    client in a broken state): what it carried (rows, lifecycle records, state) and every batch
    after it must still be written, by this process or after it exits (a supervisor restarts
    it and it replays from the last commit); never left unwritten while the role reads on, nor
    held unseen in a task nobody awaits on a quiet stream."""
    flag = tmp_path / "publish-fault"
    env = {**EXTRA_ENV, "TASKPULSE_REORDER_WINDOW_S": "1", "TASKPULSE_TEST_CORRELATE_PUBLISH": str(flag)}
    worker = make_worker(fault_file=tmp_path / "no-ch-fault", **env).start()
    base = int(time.time() * 1000) - 300_000
    st = {"task_type": "research"}
    started = [make_event(et, f"f-{n}", st, timestamp=base + n * 100 + i * 1000)
               for n in range(20) for i, et in enumerate(("task.created", "task.queued", "task.started"))]  # fmt: skip
    publish(broker, started, batch_size=10)
    wait_for(lambda: worker.scalar("SELECT countIf(state = 'EXECUTING') FROM taskpulse.tasks FINAL") == 20,
             60, "20 executing tasks")  # fmt: skip
    flag.touch()
    publish(broker, [make_event("task.completed", f"f-{n}", st, timestamp=base + n * 100 + 9000) for n in range(20)],
            batch_size=10)  # fmt: skip
    wait_for(lambda: not flag.exists(), 30, "the injected error")
    canaries = 5 if behind == "canaries" else 0  # new tasks, each a tasks row written by the agent's batches
    publish(broker, [make_event("task.created", f"c-{n}", st, timestamp=base + 20_000 + n) for n in range(canaries)],
            batch_size=1)  # fmt: skip
    executions = "SELECT task_id, outcome, cycle_ms FROM taskpulse.task_executions FINAL ORDER BY task_id"
    canary_rows = "SELECT task_id FROM taskpulse.tasks FINAL WHERE task_id LIKE 'c-%' ORDER BY task_id"

    def written() -> bool:
        assert worker.proc is not None
        if worker.proc.poll() is not None:  # exited so that the batch is replayed: restarted
            worker.start()
        try:
            if len(worker.sql(executions)) < 20 or len(worker.sql(canary_rows)) < canaries:
                return False
        except (urllib.error.URLError, ConnectionError):  # exiting now: restarted next time
            return False
        return len({r["task_id"] for r in lifecycle_records(broker.bootstrap, want=20, timeout=5)}) >= 20

    wait_for(written, 120, f"20 finished tasks (rows, lifecycle records) and {canaries} canaries after the failure")
    assert sorted(worker.sql(executions)) == sorted([f"f-{n}", "success", 9000.0] for n in range(20))
    assert len(worker.sql(canary_rows)) == canaries
    records = lifecycle_records(broker.bootstrap, want=20)
    assert sorted((r["task_id"], r["version"]) for r in records) == sorted((f"f-{n}", 1) for n in range(20))
