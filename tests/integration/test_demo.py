"""Demo traffic is safe beside anything: two `taskpulse demo` runs at once (same seed, their
own run ids) beside `taskpulse up` and its own demo leave every task's task_executions row
consistent — no merged tasks, no event dropped as a duplicate — checked against an
independent count of what each run put on the broker, and nothing is stamped in the future."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.embedded import free_port
from pipeline.settings import kafka_bootstrap
from pipeline.topics import RAW_TOPICS
from tests.integration.conftest import ROOT, Worker, wait_for

pytestmark = pytest.mark.integration
RUNS = ("runa", "runb")


def _read_raw(url: str, timeout_s: float = 20.0) -> list[tuple[int, dict[str, Any]]]:
    """(publish time ms, event) of every event on the raw topics, read with a plain consumer."""

    async def go() -> list[tuple[int, dict[str, Any]]]:
        consumer = AIOKafkaConsumer(*RAW_TOPICS.values(), bootstrap_servers=kafka_bootstrap(url),
                                    auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)  # fmt: skip
        await consumer.start()
        out: list[tuple[int, dict[str, Any]]] = []
        try:
            quiet_since = time.monotonic()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and time.monotonic() - quiet_since < 3:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    quiet_since = time.monotonic()
                    for rec in records:
                        doc = orjson.loads(rec.value)
                        out.extend((rec.timestamp, e) for e in (doc if isinstance(doc, list) else [doc]))
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())


def _ms(ts: str) -> int:
    from pipeline.core.timestamps import to_epoch_ms

    return to_epoch_ms(ts)


def test_two_demo_runs_beside_up_leave_every_task_consistent(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKPULSE_")},
        "PYTHONPATH": str(ROOT),
        "TASKPULSE_DATA_DIR": str(tmp_path / "data"),
        "TASKPULSE_API_PORT": str(port),
        "TASKPULSE_SESSION_TIMEOUT_S": "6",
        "TASKPULSE_REORDER_WINDOW_S": "0.5",
    }
    out = open(tmp_path / "up.out", "wb")  # noqa: SIM115 - the child's
    up = subprocess.Popen([sys.executable, "-m", "pipeline", "up", "--rate", "5"], env=env, cwd=ROOT,
                          stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    worker = Worker(env, tmp_path / "data" / "worker.log", f"http://127.0.0.1:{port}", [])
    try:
        url = wait_for(lambda: re.search(r"broker (kafka://\S+)", (tmp_path / "up.out").read_text()), 60,
                       "up's broker URL").group(1)  # fmt: skip
        wait_for(lambda: worker.status() or up.poll() is not None, 120, "up's worker")
        assert up.poll() is None, (tmp_path / "up.out").read_text()
        demo_env = {**env, "TASKPULSE_KAFKA_URL": url}
        demos = [
            subprocess.Popen([sys.executable, "-m", "pipeline", "demo", "--events", "2500", "--run-id", run,
                              "--seed", "7"], env=demo_env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
            for run in RUNS
        ]
        for d in demos:
            stdout, stderr = d.communicate(timeout=180)
            assert d.returncode == 0, stderr
            assert "published" in stdout and "tasks" in stdout, stdout
        finished = int(time.time() * 1000)

        # independent count: what each run put on the broker
        raw = _read_raw(url)
        per_task: dict[str, Counter[str]] = defaultdict(Counter)
        types: dict[str, set[str]] = defaultdict(set)
        ids: Counter[str] = Counter()
        for published_ms, ev in raw:
            assert _ms(ev["timestamp"]) <= published_ms + 1000, f"stamped in the future: {ev}"
            ids[ev["id"]] += 1
            run = ev["entity_id"].split("-")[1] if ev["entity_id"].startswith("task-") else ""
            if run in RUNS:
                per_task[ev["entity_id"]][ev["event_type"]] += 1
                types[ev["entity_id"]].add(ev["current_state"].get("task_type", ""))
        assert max(ids.values()) == 1, f"event ids reused: {[i for i, n in ids.items() if n > 1][:5]}"
        for run in RUNS:
            assert sum(1 for t in per_task if t.startswith(f"task-{run}-")) > 50, run
        assert all(len(ts) == 1 for ts in types.values())
        late = [e for _, e in raw if e["entity_id"] in per_task and _ms(e["timestamp"]) > finished]
        assert not late, f"stamped after the runs ended: {late[:2]}"

        # every task of both runs is one finished row that holds all of its events
        task_ids = sorted(per_task)
        wait_for(
            lambda: worker.scalar(
                "SELECT count() FROM taskpulse.task_executions FINAL WHERE task_id LIKE 'task-run_-%'"
            ) >= len(task_ids),
            120, "every demo task in task_executions",
        )  # fmt: skip
        rows = worker.sql(
            "SELECT task_id, events, task_type, invalid_transitions, outcome, agent, history_dropped "
            "FROM taskpulse.task_executions FINAL WHERE task_id LIKE 'task-run_-%' ORDER BY task_id"
        )
        assert [r[0] for r in rows] == task_ids
        for task_id, events, task_type, invalid, outcome, agent, dropped in rows:
            sent = per_task[task_id]
            assert events == sum(sent.values()), (task_id, events, dict(sent))
            assert invalid == 0 and dropped == 0, (task_id, invalid, dropped)
            assert {task_type} == types[task_id], (task_id, task_type, types[task_id])
            assert agent, task_id
            terminal = {"task.completed": "success", "task.cancelled": "cancelled", "task.failed": "failure"}
            assert outcome in {terminal[t] for t in sent if t in terminal}, (task_id, outcome, dict(sent))
        # and no event of the runs was dropped as a duplicate of the other's
        counted = dict(worker.sql(
            "SELECT splitByChar('-', entity_id)[2] AS run, count() FROM taskpulse.events "
            "WHERE entity_id LIKE 'task-run_-%' GROUP BY run"
        ))  # fmt: skip
        for run in RUNS:
            assert counted[run] == sum(sum(c.values()) for t, c in per_task.items() if t.startswith(f"task-{run}-"))
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(10)
        out.close()
