"""Restarts onto another log: a fresh embedded broker on the same data directory (what a
second ``taskpulse up`` does) starts every partition at offset 0 again, while ClickHouse
still holds the previous run's write watermarks.  Nothing of the new run may be skipped
as "already written", and nothing of the old run may be counted twice."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.demo import DemoFleet
from pipeline.embedded import EmbeddedBroker, free_port
from pipeline.sdk import TaskpulseProducer
from pipeline.sinks.kafka import ensure_topics
from pipeline.topics import ALL_TOPICS
from tests.integration.conftest import ROOT, Worker, publish, wait_for
from tests.integration.test_pipeline import assert_rollups_match

pytestmark = pytest.mark.integration


def _events(n: int, seed: int) -> list[dict[str, Any]]:
    start = int(time.time() * 1000) - 2 * 3_600_000
    return DemoFleet(seed=seed, tasks_per_s=3.0).take(n, start)


def _count(worker: Worker) -> int:
    return int(worker.scalar("SELECT count() FROM taskpulse.events"))


def test_fresh_broker_on_the_same_data_dir_loses_and_doubles_nothing(make_worker, broker, tmp_path, engine):
    first = _events(3000, seed=41)
    # single-event messages: the first log's offsets run far past the second run's
    publish(broker, first, batch_size=1)
    worker = make_worker(engine=engine).start()
    wait_for(lambda: _count(worker) >= len(first), 120, "the first run written")
    worker.stop()
    broker.stop()

    fresh = EmbeddedBroker(log_path=tmp_path / "tansu-2.log").start()
    try:
        asyncio.run(ensure_topics(fresh.bootstrap, ALL_TOPICS, 4, 3_600_000, 256 * 1024 * 1024))
        second = _events(600, seed=42)
        assert not {e["id"] for e in first} & {e["id"] for e in second}
        publish(fresh, second, batch_size=10)
        again = make_worker(engine=engine, TASKPULSE_KAFKA_URL=fresh.url).start()
        wait_for(lambda: _count(again) >= len(first) + len(second), 90, "the second run's events")
        time.sleep(2)
        assert _count(again) == len(first) + len(second)
        assert again.scalar("SELECT uniqExact(id) FROM taskpulse.events") == len(first) + len(second)
        assert_rollups_match(again, first + second)
        logs = again.sql("SELECT src_topic, uniqExact(src_log) FROM taskpulse.events GROUP BY 1")
        assert logs and all(n == 2 for _, n in logs), f"each raw topic's rows name its two logs: {logs}"
        # a kill and restart on the second log still counts nothing twice (its watermarks apply)
        again.kill()
        again.start()
        publish(fresh, second[:100], batch_size=5)  # re-sent ids: duplicates, not new events
        third = _events(200, seed=43)
        publish(fresh, third, batch_size=1)
        total = len(first) + len(second) + len(third)
        wait_for(lambda: _count(again) >= total, 90, "the third batch")
        time.sleep(2)
        assert _count(again) == total
        assert_rollups_match(again, first + second + third)
    finally:
        fresh.stop()


# --------------------------------------------------------------------------- the CLI


def _up(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``taskpulse up --no-demo`` as a child; returns it and its broker's URL."""
    out = open(log, "ab")  # noqa: SIM115 - closed when the test's tmp dir goes
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "up", "--no-demo", "--duration", "240"],
        env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def url() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"taskpulse up exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        m = re.search(r"broker (kafka://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
        return m.group(1) if m else None

    found: str = wait_for(url, 60, "taskpulse up to print its broker")
    return proc, found


def _stop_up(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a user stops it; the worker and the broker stop with it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _send(url: str, events: list[dict[str, Any]], batch_size: int) -> None:
    async def go() -> None:
        async with TaskpulseProducer(url, batch_size=batch_size) as p:
            await p.send_many(events)

    asyncio.run(go())


def _ids_in(api: Worker, events: list[dict[str, Any]]) -> int:
    ids = "', '".join(e["id"] for e in events)
    return int(api.scalar(f"SELECT uniqExact(id) FROM taskpulse.events WHERE id IN ('{ids}')"))


def test_taskpulse_up_stopped_and_started_again_keeps_every_event(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "TASKPULSE_DATA_DIR": str(tmp_path / "data"),
        "TASKPULSE_API_PORT": str(port),
        "TASKPULSE_LOG_LEVEL": "INFO",
        "TASKPULSE_SESSION_TIMEOUT_S": "6",
    }
    env.pop("TASKPULSE_KAFKA_URL", None)
    env.pop("TASKPULSE_CLICKHOUSE_URL", None)
    api = Worker(env, tmp_path / "unused.log", f"http://127.0.0.1:{port}", [])
    first, second = _events(2000, seed=51), _events(500, seed=52)
    runs = [(first, 1), (second, 20)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n, (events, batch_size) in enumerate(runs):
            proc, url = _up(env, tmp_path / f"up-{n}.log")
            procs.append(proc)
            wait_for(api.status, 90, "the worker of taskpulse up")
            _send(url, events, batch_size)
            wait_for(lambda ev=events: _ids_in(api, ev) == len(ev), 120, f"run {n + 1}'s events in ClickHouse")
            _stop_up(proc)
            assert proc.returncode == 0, (tmp_path / f"up-{n}.log").read_text()[-3000:]
            wait_for(lambda: api.status() is None, 30, "the worker to stop with taskpulse up")
        # both runs, each event once, read with no worker running (the CLI opens chDB itself)
        out = subprocess.run(
            [sys.executable, "-m", "pipeline", "sql",
             "SELECT count() AS n, uniqExact(id) AS ids FROM taskpulse.events "
             "WHERE NOT startsWith(id, 'taskpulse:')", "--format", "json"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == [{"n": len(first) + len(second), "ids": len(first) + len(second)}]
    finally:
        for proc in procs:
            _stop_up(proc)


# --------------------------------------------------------------------------- upgrades

_UPGRADE_CHECK = """
import json, sys
from datetime import UTC, datetime
from pipeline.sinks.clickhouse import ClickHouseStore

store = ClickHouseStore("chdb://" + sys.argv[1], "taskpulse")
for stmt in open(sys.argv[2]).read().split(";\\n"):  # the previous release, before src_log
    body = "\\n".join(line for line in stmt.splitlines() if not line.startswith("--")).strip()
    if body:
        store.command(body)
assert "src_log" not in store.command("SHOW CREATE TABLE taskpulse.events")
t, now = "taskpulse.events.task", datetime.now(UTC).replace(microsecond=0)
cols = ["id", "event_time", "src_topic", "src_partition", "src_offset", "src_index"]
store.insert("events", [["old", now, t, 0, 900, 0]], cols)
store.insert("dlq", [[now, "bad", t, 0, 950, 0]],
             ["received_at", "reason", "src_topic", "src_partition", "src_offset", "src_index"])
store.insert("rollups", [["1m", now.replace(second=0), 1, {f"{t}:0": 900}]],
             ["granularity", "window_start", "count", "src_offsets"])
store.migrate()
store.migrate()  # idempotent
store.insert("events", [["new", now, t, 0, 3, 0, "c/x"]], [*cols, "src_log"])
marks = {k: sorted([list(tp) + [o] for tp, o in v.items()]) for k, v in store.watermarks().items()}
print(json.dumps({"marks": marks, "ids": store.recent_ids(10),
                  "create": store.command("SHOW CREATE TABLE taskpulse.events")}))
"""


def test_an_old_data_dir_is_upgraded_and_its_watermarks_skip_nothing(tmp_path):
    """Tables made before log identities get ``src_log`` (and the new projection) from
    ``migrate``; their rows read as the empty identity, which no current log matches."""
    proc = subprocess.run(
        [sys.executable, "-c", _UPGRADE_CHECK, str(tmp_path / "chdb"),
         str(ROOT / "tests" / "fixtures" / "clickhouse_c91bf09.sql")],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    t = "taskpulse.events.task"
    assert result["marks"] == {
        "events": [[t, 0, "", 900], [t, 0, "c/x", 3]],
        "dlq": [[t, 0, "", 950]],
        "rollups": [[t, 0, "", 900]],
    }
    assert sorted(map(tuple, (i[1] for i in result["ids"]))) == [(t, 0, 3, 0, "c/x"), (t, 0, 900, 0, "")]
    assert "src_log_watermarks" in result["create"] and "PROJECTION src_watermarks" not in result["create"]


# --------------------------------------------------------------------------- correlation state


def _heartbeat(agent: str, ms: int, active: int, n: int) -> dict[str, Any]:
    from datetime import UTC, datetime

    return {
        "id": f"hb-{agent}-{n}", "timestamp": datetime.fromtimestamp(ms / 1000, UTC).isoformat(),
        "event_type": "agent.heartbeat", "entity_type": "agent", "entity_id": agent,
        "current_state": {"active_tasks": active, "cpu_percent": 10.0},
    }  # fmt: skip


def test_agents_go_on_after_a_fresh_broker(make_worker, broker, tmp_path):
    """The correlation role's changelog is gone with the embedded broker: agents continue from
    ``agent_status`` (higher versions, accumulated busy time), and their new status changes
    reach ``events`` instead of being dropped as duplicates of the previous run's ids."""
    agents = [f"agent-r{i}" for i in range(3)]
    base = int(time.time() * 1000) - 120_000
    env = {"TASKPULSE_ROLES": "ingest,correlate", "TASKPULSE_AGENT_OFFLINE_AFTER_S": "3600"}
    # run 1: busy, then online (two changes each: unknown→busy, busy→online)
    publish(broker, [_heartbeat(a, base + k * 10_000, act, k) for a in agents for k, act in enumerate((2, 0))])
    worker = make_worker(**env).start()
    changes = "SELECT count() FROM taskpulse.events WHERE event_type = 'agent.status_changed'"
    wait_for(lambda: worker.scalar(changes) >= 6, 90, "the first run's status changes")
    first = {r[0]: r[1:] for r in worker.sql("SELECT agent, version, status, busy_s FROM taskpulse.agent_status FINAL")}
    assert {a: (s, b) for a, (_, s, b) in first.items()} == {a: ("online", 10.0) for a in agents}
    worker.stop()
    broker.stop()

    fresh = EmbeddedBroker(log_path=tmp_path / "tansu-agents.log").start()
    try:
        asyncio.run(ensure_topics(fresh.bootstrap, ALL_TOPICS, 4, 3_600_000, 256 * 1024 * 1024))
        # run 2: busy again for 20 s, then online (two more changes each)
        publish(fresh, [_heartbeat(a, base + 60_000 + k * 20_000, act, 10 + k) for a in agents
                        for k, act in enumerate((1, 0))])  # fmt: skip
        again = make_worker(TASKPULSE_KAFKA_URL=fresh.url, **env).start()
        wait_for(lambda: again.scalar(changes) >= 12, 90, "the second run's status changes")
        time.sleep(2)
        assert again.scalar(changes) == 12
        query = "SELECT agent, version, status, busy_s FROM taskpulse.agent_status FINAL"
        rows = {r[0]: r[1:] for r in again.sql(query)}
        for a in agents:
            version, status, busy_s = rows[a]
            assert version > first[a][0], f"{a}: version {version} does not supersede {first[a][0]}"
            assert (status, busy_s) == ("online", 30.0), rows[a]  # 10 s in run 1 + 20 s in run 2
    finally:
        fresh.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_taskpulse_up_stopped_by_a_signal_leaves_no_broker_behind(tmp_path, sig):
    """`timeout` or a service manager (SIGTERM) and a closed terminal (SIGHUP) stop the whole
    stack like Ctrl-C: the embedded broker's port is closed afterwards."""
    import socket

    env = {**os.environ, "TASKPULSE_DATA_DIR": str(tmp_path / "data"), "TASKPULSE_API_PORT": str(free_port())}
    env.pop("TASKPULSE_KAFKA_URL", None)
    env.pop("TASKPULSE_CLICKHOUSE_URL", None)
    proc, url = _up(env, tmp_path / "up.log")
    host, port = url.removeprefix("kafka://").rsplit(":", 1)
    proc.send_signal(sig)
    proc.wait(60)

    def broker_gone() -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex((host, int(port))) != 0

    wait_for(broker_gone, 20, f"the embedded broker at {url} to stop")
