"""DLQ replay against the real broker and engine: events rejected for a reason a config
change then allows (``TASKPULSE_MAX_FUTURE_SKEW_S`` raised, worker restarted) are replayed
to their source topic and counted once, even when the replay runs twice; input that is still
bad is reported as rejected again; the listing works through the worker and without one."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.topics import RAW_TASK
from tests.integration.conftest import ROOT, Worker, publish, publish_raw, wait_for

pytestmark = pytest.mark.integration


def _event(i: int, ahead_s: float, tag: str) -> dict[str, Any]:
    return {
        "id": f"{tag}-{i}-{uuid.uuid4().hex[:8]}",
        "timestamp": (datetime.now(UTC) + timedelta(seconds=ahead_s)).isoformat(),
        "event_type": "task.created",
        "entity_type": "task",
        "entity_id": f"task-{tag}-{i}",
        "current_state": {"task_type": "research"},
    }


def _cli(w: Worker, *args: str) -> dict[str, Any] | list[Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *args, "--format", "json"],
        env=w.env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_replay_after_a_config_fix_counts_each_event_once(make_worker: Any, broker: Any) -> None:
    w: Worker = make_worker(TASKPULSE_MAX_FUTURE_SKEW_S="300").start()
    future = [_event(i, 3600, "future") for i in range(5)]
    canaries = [_event(i, 0, "canary") for i in range(3)]
    publish(broker, future[:3], batch_size=3)  # one array message: three elements rejected
    publish(broker, future[3:], batch_size=1)
    publish_raw(broker, [(RAW_TASK, b'{"id": "broken", "timestamp": ')])
    publish(broker, canaries, batch_size=1)
    wait_for(lambda: w.scalar("SELECT count() FROM taskpulse.events WHERE id LIKE 'canary-%'") == 3, 60, "canaries")
    wait_for(lambda: w.scalar("SELECT count() FROM taskpulse.dlq") == 6, 60, "six DLQ entries")

    listed = _cli(w, "dlq", "list", "--reason", "bad_timestamp")
    assert len(listed) == 5 and {e["replay"] for e in listed} == {"replayable"}

    # the emitters' clocks were right after all: allow an hour and a half of skew
    w.stop()
    w.env["TASKPULSE_MAX_FUTURE_SKEW_S"] = "5400"
    w.start()

    dry = _cli(w, "dlq", "replay", "--reason", "bad_timestamp", "--dry-run")
    assert isinstance(dry, dict) and len(dry["replayed"]) == 5 and dry["outcome"] == {}
    assert w.scalar("SELECT count() FROM taskpulse.dlq_replays") == 0, "a dry run publishes nothing"

    first = _cli(w, "dlq", "replay", "--reason", "bad_timestamp", "--wait", "60")
    assert isinstance(first, dict)
    assert len(first["replayed"]) == 5 and first["already_replayed"] == [] and first["refused"] == []
    assert first["outcome"]["accepted"] == 5 and first["outcome"]["events"] == 5, first["outcome"]
    assert first["outcome"]["rejected_again"] == {}

    second = _cli(w, "dlq", "replay", "--reason", "bad_timestamp", "--wait", "5")
    assert isinstance(second, dict)
    assert second["replayed"] == [] and len(second["already_replayed"]) == 5

    ids = ", ".join(f"'{e['id']}'" for e in future)
    assert w.sql(f"SELECT count(), uniqExact(id) FROM taskpulse.events WHERE id IN ({ids})") == [[5, 5]]
    assert w.sql("SELECT sum(count) FROM taskpulse.rollups WHERE granularity = '1m' AND event_type = "
                 "'task.created' AND window_start > now() + INTERVAL 30 MINUTE") == [[5]]  # fmt: skip

    # still broken input: replayed once, rejected again, reported so
    again = _cli(w, "dlq", "replay", "--reason", "invalid_json", "--wait", "60")
    assert isinstance(again, dict) and len(again["replayed"]) == 1
    assert again["outcome"]["rejected_again"] == {"invalid_json": 1}, again["outcome"]

    # without a worker the CLI reads the database itself
    w.stop()
    direct = _cli(w, "dlq", "list", "--reason", "bad_timestamp")
    assert len(direct) == 5 and all(e["replay"].startswith("replayed ") for e in direct)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "dlq", "show", direct[0]["id"]],
        env=w.env, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    shown = json.loads(proc.stdout)
    assert shown["id"] == direct[0]["id"] and shown["reason"] == "bad_timestamp"
    assert json.loads(shown["original"])["id"] in {e["id"] for e in future}
