"""The commands a user types: emit, ingest (NDJSON), sql through the running worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import orjson
import pytest

from pipeline.demo import DemoFleet
from tests.integration.conftest import ROOT, wait_for

pytestmark = pytest.mark.integration


def _cli(worker, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=worker.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_emit_ingest_and_sql_from_the_command_line(make_worker, tmp_path):
    worker = make_worker().start()

    emitted = _cli(
        worker, "emit", "task.completed", "task-cli-1",
        "-s", '{"task_type": "research", "agent_id": "writer", "success": true}',
        "--metrics", '{"duration_ms": 1234}',
    )  # fmt: skip
    assert emitted.returncode == 0, emitted.stderr
    assert "published task.completed task-cli-1" in emitted.stdout

    events = DemoFleet(seed=12).take(50, int(time.time() * 1000) - 600_000)
    ndjson = tmp_path / "events.ndjson"
    lines = [orjson.dumps(e) for e in events[:25]] + [b"{broken json", b""] + [orjson.dumps(e) for e in events[25:]]
    ndjson.write_bytes(b"\n".join(lines) + b"\n")
    ingested = _cli(worker, "ingest", "--no-validate", str(ndjson))  # as sent: the DLQ gets the broken line
    assert ingested.returncode == 0, ingested.stderr
    assert "published 51 lines" in ingested.stdout

    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.events") >= 51, 60, "51 events")
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.dlq") >= 1, 30, "the broken line in the DLQ")
    assert worker.scalar("SELECT reason FROM taskpulse.dlq") == "invalid_json"

    # `taskpulse sql` answers through the running worker (which holds the chDB engine).
    out = _cli(
        worker, "sql", "--format", "json",
        "SELECT agent, outcome, duration_ms FROM taskpulse.events WHERE entity_id = 'task-cli-1'",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"agent": "writer", "outcome": "success", "duration_ms": 1234.0}]

    bad = _cli(worker, "sql", "SELECT no_such_column FROM taskpulse.events")
    assert bad.returncode == 2
    assert "no_such_column" in bad.stderr


def test_emit_without_a_broker_url_says_how_to_fix_it(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "TASKPULSE_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "emit", "task.created", "t1"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "TASKPULSE_KAFKA_URL" in proc.stderr


# --------------------------------------------------------------------------- bad input, said at once


def _run(env: dict[str, str], *args: str, cwd=ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["task.craeted", "t1"], "unknown_event_type: event_type 'task.craeted'"),
        (["task.created", "t1", "--timestamp", "yesterday"], "bad_timestamp: timestamp: 'yesterday'"),
        (["task.created", "t1", "--timestamp", "2030-01-01T00:00:00Z"], "TASKPULSE_MAX_FUTURE_SKEW_S"),
        (["task.progress", "t1", "-s", '{"percentage": 150}'], "schema_violation: current_state.percentage"),
    ],
)
def test_emit_refuses_what_the_pipeline_would_reject(broker, tmp_path, args, reason):
    env = {**os.environ, "TASKPULSE_KAFKA_URL": broker.url, "TASKPULSE_DATA_DIR": str(tmp_path)}
    proc = _run(env, "emit", *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "rejected, not published" in proc.stderr and reason in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    # --no-validate sends it as it is: the pipeline dead-letters it
    sent = _run(env, "emit", *args, "--no-validate")
    assert sent.returncode == 0 and "published" in sent.stdout, sent.stderr


def test_emit_usage_and_connection_errors_are_one_line(tmp_path):
    env = {**os.environ, "TASKPULSE_KAFKA_URL": "kafka://127.0.0.1:1", "TASKPULSE_DATA_DIR": str(tmp_path)}
    for args, expected in [
        (["-s", "[1,2]"], "--state must be a JSON object"),
        (["-s", "{nope"], "--state is not valid JSON"),
        ([], "cannot reach the Kafka broker at kafka://127.0.0.1:1"),
    ]:
        proc = _run(env, "emit", "task.created", "t1", *args)
        assert proc.returncode == 2, proc.stderr
        assert expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    bad = {**env, "TASKPULSE_PARTITIONS": "many"}
    proc = _run(bad, "emit", "task.created", "t1")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "TASKPULSE_PARTITIONS='many'" in proc.stderr


def test_ingest_sends_the_valid_lines_and_names_each_rejected_one(make_worker, tmp_path):
    worker = make_worker().start()
    good = DemoFleet(seed=21, run_id="ingest").take(20, int(time.time() * 1000) - 600_000)
    task = next(e for e in good if e["entity_type"] == "task")
    bad = [
        b"{broken json",
        orjson.dumps({**good[0], "id": "bad-type", "event_type": "task.craeted"}),
        orjson.dumps({**good[0], "id": "bad-ts", "timestamp": "yesterday"}),
        orjson.dumps({**task, "id": "bad-pct", "event_type": "task.progress", "current_state": {"percentage": 150}}),
        orjson.dumps([good[0], {**good[0], "id": "bad-future", "timestamp": "2030-01-01T00:00:00Z"}]),
    ]
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"\n".join([orjson.dumps(e) for e in good[1:]] + bad) + b"\n")
    proc = _cli(worker, "ingest", str(path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    err = proc.stderr
    for lineno, reason in [(20, "invalid_json"), (21, "unknown_event_type"), (22, "bad_timestamp"),
                           (23, "schema_violation: current_state.percentage"), (24, "bad_timestamp")]:  # fmt: skip
        assert f"mixed.ndjson:{lineno}: rejected: {reason}" in err, err
    assert "published 19 lines" in err and "5 rejected lines not sent" in err, err
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.events") >= 19, 60, "the valid lines")
    time.sleep(2)
    assert worker.scalar("SELECT count() FROM taskpulse.events") == 19
    assert worker.scalar("SELECT count() FROM taskpulse.dlq") == 0

    again = _cli(worker, "ingest", "--no-validate", str(path))
    assert again.returncode == 0, again.stderr
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.dlq") >= 5, 60, "the rejects in the DLQ")


def test_readers_never_create_a_data_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKPULSE_")}
    env["TASKPULSE_API_PORT"] = "1"  # no worker there
    for args in (["sql", "SELECT 1"], ["report", "daily"], ["export", "csv"], ["alerts", "list"]):
        proc = _run(env, *args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert f"no database at {tmp_path}/.taskpulse/clickhouse" in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []
    status = _run(env, "status", cwd=tmp_path)
    assert status.returncode == 2 and "no worker answers at http://127.0.0.1:1" in status.stderr
