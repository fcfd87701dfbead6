"""The commands a user types: emit, ingest (NDJSON), sql through the running worker."""

from __future__ import annotations

import json
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
    ingested = _cli(worker, "ingest", str(ndjson))
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
