"""The agent-side SDK on the real broker and engine: tracked tasks end as the right
``task_executions`` rows, the sync tracker from many threads, and a broker frozen mid-stream
with the agent process killed and restarted in between: every event exactly once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from taskpulse import AsyncTracker, Tracker
from taskpulse.transport import HttpTransport, KafkaTransport
from tests.integration.conftest import ROOT, wait_for

pytestmark = pytest.mark.integration
CORRELATE = {"TASKPULSE_ROLES": "ingest,correlate", "TASKPULSE_REORDER_WINDOW_S": "1"}


def rows(worker: Any, sql: str, names: list[str]) -> dict[str, dict[str, Any]]:
    return {r[0]: dict(zip(names, r, strict=True)) for r in worker.sql(sql)}


class Research(Exception):
    pass


def test_tracked_tasks_with_progress_assignment_and_an_exception(make_worker, broker, tmp_path):
    worker = make_worker(**CORRELATE).start()
    tp = Tracker(KafkaTransport(broker.url), spool_dir=tmp_path / "spool", agent="researcher", run_id="week-12")
    with tp.task("research", "t-ok", request="Summarise X", requester="U1",
                 evaluations={"researcher": 92, "writer": 30, "builder": 15}) as t:  # fmt: skip
        t.progress(50, "reading sources")
        t.progress(90, "writing")
        t.result = {"files_created": ["notes.md"]}

    @tp.track("code", agent="coder")
    def flaky() -> None:
        raise Research("the sources disagree")

    with pytest.raises(Research):
        flaky()
    tp.agent("researcher").heartbeat(cpu_percent=40, memory_mb=512)
    tp.agent("researcher").report_status("ready")
    assert tp.flush(60)
    tp.close()

    async def async_agent() -> None:
        async with AsyncTracker(KafkaTransport(broker.url), spool_dir=tmp_path / "aspool", agent="async-agent") as a:
            async with a.task("async", "a-1") as t:
                t.progress(10)
            with contextlib.suppress(KeyError):
                async with a.task("async", "a-2"):
                    raise KeyError("missing")

    asyncio.run(async_agent())
    # seed 004's functions in a script that never closes its tracker: delivered at exit
    script = ("from taskpulse import report_task_completion, report_task_progress, report_task_start\n"
              "report_task_start('1.1', 'Implement user authentication')\n"
              "report_task_progress('1.1', 0.5, 'Setting up database models')\n"
              "report_task_completion('1.1', {'files_created': ['auth.py']}, success=True)\n")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TASKPULSE_KAFKA_URL": broker.url, "DROID_ID": "droid-1",
           "TASKPULSE_RUN_ID": "r-7", "TASKPULSE_SPOOL_DIR": str(tmp_path / "sspool")}  # fmt: skip
    subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, check=True, timeout=60)

    names = ["task_id", "outcome", "agent", "confidence", "other_agents", "progress_checkpoints", "error",
             "request", "requester_id", "group_key", "task_type", "execution_ms", "started_ms", "finished_ms"]
    sql = ("SELECT task_id, outcome, agent, confidence, other_agents, progress_checkpoints, error, request, "
           "requester_id, group_key, task_type, execution_ms, toUnixTimestamp64Milli(started_at), "
           "toUnixTimestamp64Milli(finished_at) FROM taskpulse.task_executions FINAL")  # fmt: skip
    wait_for(lambda: len(worker.sql(sql)) >= 5, 90, "five task rows")
    got = rows(worker, sql, names)
    assert (got["a-1"]["outcome"], got["a-1"]["agent"], got["a-1"]["progress_checkpoints"]) == (
        "success", "async-agent", 1)
    assert (got["a-2"]["outcome"], got["a-2"]["error"]) == ("failure", "KeyError: 'missing'")
    seed = got.pop("r-7/1.1")
    assert (seed["outcome"], seed["agent"], seed["request"], seed["group_key"], seed["progress_checkpoints"]) == (
        "success", "droid-1", "Implement user authentication", "r-7", 1)
    del got["a-1"], got["a-2"]
    ok = got["week-12/t-ok"]
    assert (ok["outcome"], ok["agent"], ok["confidence"], ok["other_agents"]) == (
        "success", "researcher", 92.0, {"writer": 30.0, "builder": 15.0})
    assert (ok["progress_checkpoints"], ok["request"], ok["requester_id"], ok["group_key"], ok["task_type"]) == (
        2, "Summarise X", "U1", "week-12", "research")
    # execution time: the started and completed events' own times (independently from the events table)
    times = dict(worker.sql("SELECT event_type, toUnixTimestamp64Milli(event_time) FROM taskpulse.events "
                            "WHERE entity_id = 'week-12/t-ok'"))  # fmt: skip
    assert ok["execution_ms"] == times["task.completed"] - times["task.started"]
    failed = [r for k, r in got.items() if k != "week-12/t-ok"][0]
    assert (failed["outcome"], failed["agent"], failed["task_type"]) == ("failure", "coder", "code")
    assert failed["error"] == "Research: the sources disagree"
    trace = worker.scalar("SELECT JSONExtractRaw(current_state, 'error_raw') FROM taskpulse.events "
                          f"WHERE event_type = 'task.failed' AND entity_id = '{failed['task_id']}'")  # fmt: skip
    assert "in flaky" in json.loads(trace)["stack_trace"]
    assert worker.scalar("SELECT count() FROM taskpulse.events WHERE entity_id = 'researcher' "
                         "AND event_type IN ('agent.heartbeat', 'agent.self_report')") == 2
    assert worker.scalar("SELECT count() FROM taskpulse.dlq") == 0


def test_the_sync_tracker_from_many_threads(make_worker, broker, tmp_path):
    worker = make_worker(**CORRELATE).start()
    tp = Tracker(KafkaTransport(broker.url), spool_dir=tmp_path / "spool")
    threads, per_thread = 8, 60
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(per_thread):
                with contextlib.suppress(ValueError), tp.task("batch", f"th{n}-{i}", agent=f"agent-{n}") as t:
                    t.progress(50)
                    if i % 10 == 9:
                        raise ValueError(f"task {i} of thread {n}")  # task.failed, re-raised
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(120)
    assert not errors
    assert tp.flush(120)
    stats = tp.stats()
    tp.close()
    total_tasks = threads * per_thread
    assert stats.emitted == stats.sent == total_tasks * 5 and stats.pending == 0
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.task_executions FINAL") >= total_tasks, 120,
             "every task row")  # fmt: skip
    assert worker.scalar("SELECT count(), uniqExact(id) FROM taskpulse.events") == total_tasks * 5
    by_outcome = dict(worker.sql("SELECT outcome, count() FROM taskpulse.task_executions FINAL GROUP BY outcome"))
    assert by_outcome == {"success": total_tasks * 9 // 10, "failure": total_tasks // 10}
    per_agent = dict(worker.sql("SELECT agent, count() FROM taskpulse.task_executions FINAL GROUP BY agent"))
    assert per_agent == {f"agent-{n}": per_thread for n in range(threads)}
    assert worker.scalar("SELECT sum(invalid_transitions) FROM taskpulse.task_executions FINAL") == 0


class Agent:
    """The SDK agent process (tests/integration/sdk_agent.py)."""

    def __init__(self, url: str, spool: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.sdk_agent", url, spool], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip

    def ask(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, f"the agent exited ({self.proc.poll()}) on {line!r}"
        return json.loads(answer)  # type: ignore[no-any-return]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def test_broker_frozen_mid_stream_and_agent_restarted_every_event_once_in_order(make_worker, broker, tmp_path,
                                                                                engine):  # fmt: skip
    worker = make_worker(engine=engine).start()
    spool = str(tmp_path / "spool")
    assert broker.proc is not None
    agents: list[Agent] = []
    frozen = False
    try:
        first = Agent(broker.url, spool)
        agents.append(first)
        ids = first.ask("emit 300 0")["ids"]
        assert first.ask("flush 60")["flushed"]  # delivered while the broker answers

        os.kill(broker.proc.pid, signal.SIGSTOP)  # the broker stops answering mid-stream
        frozen = True
        ids += first.ask("emit 300 300")["ids"]  # spooled: sending them times out
        assert not first.ask("flush 4")["flushed"]
        first.kill()  # SIGKILL: no close(), no flush

        second = Agent(broker.url, spool)  # a new process on the same spool, broker still frozen
        agents.append(second)
        ids += second.ask("emit 300 600")["ids"]
        assert not second.ask("flush 2")["flushed"]

        os.kill(broker.proc.pid, signal.SIGCONT)
        frozen = False
        done = second.ask("flush 120")
        assert done["flushed"], done
        closed = second.ask("close")
        assert closed["stats"]["pending"] == 0 and closed["stats"]["dropped"] == 0
    finally:
        if frozen:
            os.kill(broker.proc.pid, signal.SIGCONT)
        for a in agents:
            if a.proc.poll() is None:
                a.kill()

    assert len(ids) == len(set(ids)) == 900
    wait_for(lambda: worker.scalar("SELECT uniqExact(id) FROM taskpulse.events") >= 900, 120, "900 events")
    got = worker.sql("SELECT id, JSONExtractFloat(current_state, 'value'), src_partition, src_offset, src_index "
                     "FROM taskpulse.events ORDER BY src_partition, src_offset, src_index")  # fmt: skip
    assert sorted(r[0] for r in got) == sorted(ids)  # every event exactly once, nothing else
    assert {r[2] for r in got} == {got[0][2]}  # one entity: one partition
    values = [r[1] for r in got]
    assert values == sorted(values) == [float(v) for v in range(900)]  # re-sent in emit order


def test_http_transport_to_the_ingest_endpoint_and_a_wrong_token_keeps_events_spooled(make_worker, tmp_path):
    worker = make_worker(TASKPULSE_API_TOKEN="s3cret-token", **CORRELATE)
    worker.token = "s3cret-token"
    worker.start()
    spool = tmp_path / "spool"
    wrong = Tracker(HttpTransport(worker.api, "not-the-token"), spool_dir=spool, agent="writer", retry_max_s=0.5)
    with wrong.task("draft", "h-1", request="Write a poem"):
        pass
    assert not wrong.flush(3)  # 401: nothing delivered, nothing dropped
    assert "TASKPULSE_API_TOKEN" in wrong.stats().last_error
    wrong.close(timeout_s=1)
    assert "s3cret-token" not in (worker.log() + wrong.stats().last_error)

    tp = Tracker(HttpTransport(worker.api, "s3cret-token"), spool_dir=spool, agent="writer")
    assert tp.stats().pending == 4  # the first tracker's events, from its spool
    with pytest.raises(ZeroDivisionError), tp.task("draft", "h-2", request="Divide"):
        _ = 1 / 0
    assert tp.flush(60)
    stats = tp.stats()
    tp.close()
    assert stats.sent == 8 and stats.rejected == {} and stats.pending == 0
    sql = "SELECT task_id, outcome, error, request FROM taskpulse.task_executions FINAL ORDER BY task_id"
    wait_for(lambda: len(worker.sql(sql)) >= 2, 90, "two task rows")
    assert worker.sql(sql) == [["h-1", "success", "", "Write a poem"],
                               ["h-2", "failure", "ZeroDivisionError: division by zero", "Divide"]]  # fmt: skip
    assert worker.sql("SELECT count(), uniqExact(id) FROM taskpulse.events WHERE entity_type = 'task'") == [[8, 8]]
