"""``taskpulse doctor`` against the real parts: a healthy embedded stack passes (exit 0); a
consumer lag over the limit, a schema behind the code and a stopped broker are each named
(exit 1), with a fix."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.core.schema import code_version
from tests.integration.conftest import ROOT, Worker, publish, wait_for

pytestmark = pytest.mark.integration


def _events(n: int, tag: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    return [
        {"id": f"{tag}-{i}-{uuid.uuid4().hex[:6]}", "timestamp": now, "event_type": "task.created",
         "entity_type": "task", "entity_id": f"t-{tag}-{i}", "current_state": {}}
        for i in range(n)
    ]  # fmt: skip


def _doctor(w: Worker, **env: str) -> tuple[int, dict[str, dict[str, str]]]:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "doctor", "--format", "json"],
        env={**w.env, "TASKPULSE_DOCTOR_MIN_FREE_DISK_MB": "1", **env},
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return proc.returncode, {f["check"]: f for f in json.loads(proc.stdout)}


def _problems(findings: dict[str, dict[str, str]]) -> set[str]:
    return {name for name, f in findings.items() if f["level"] == "fail"}


def test_doctor_passes_a_healthy_stack_and_names_each_problem(make_worker: Any, broker: Any) -> None:
    w: Worker = make_worker().start()
    publish(broker, _events(20, "ok"), batch_size=5)
    wait_for(lambda: w.scalar("SELECT count() FROM taskpulse.events") == 20, 60, "the events")

    def healthy() -> bool:
        code, found = _doctor(w)
        return code == 0 and not _problems(found)

    wait_for(healthy, 60, "a clean bill of health (the commits catch up)", interval=1)
    code, found = _doctor(w)
    assert code == 0, found
    assert {"broker", "topics", "lag: ingest", "clickhouse", "schema", "retention", "disk", "alert rules",
            "alertmanager", "webhook", "clock: ClickHouse", "clock: events"} <= set(found)  # fmt: skip
    assert "through the worker" in found["clickhouse"]["detail"]
    assert found["schema"]["detail"].startswith(f"version {code_version()}")

    # lag: no worker reads while events arrive
    w.stop()
    publish(broker, _events(40, "lag"), batch_size=1)
    code, found = _doctor(w, TASKPULSE_DOCTOR_MAX_LAG="10")
    assert code == 1 and _problems(found) == {"lag: ingest"}, found["lag: ingest"]
    assert "40 messages behind" in found["lag: ingest"]["detail"] and found["lag: ingest"]["fix"]
    assert "directly" in found["clickhouse"]["detail"]

    # a schema behind the code (a step not applied) and a TTL that differs from the settings
    stale = (
        "import sys\nfrom pipeline.sinks.clickhouse import ClickHouseStore\n"
        "s = ClickHouseStore('chdb://' + sys.argv[1], 'taskpulse')\n"
        f"s.command('ALTER TABLE taskpulse.schema_migrations DELETE WHERE version = {code_version()} "
        "SETTINGS mutations_sync = 2')\n"
    )
    subprocess.run([sys.executable, "-c", stale, w.env["TASKPULSE_DATA_DIR"] + "/clickhouse"], cwd=ROOT,
                   check=True, timeout=120, capture_output=True)  # fmt: skip
    code, found = _doctor(w, TASKPULSE_TTL_EVENTS_DAYS="14")
    assert code == 1 and {"schema", "retention"} <= _problems(found), found
    assert f"pending {code_version()} (" in found["schema"]["detail"]
    assert "taskpulse migrate" in found["schema"]["fix"]
    assert "events: table 30 d, settings 14 d" in found["retention"]["detail"]

    # a stopped broker
    broker.stop()
    code, found = _doctor(w)
    assert code == 1 and "broker" in _problems(found), found
    assert "cannot reach Kafka" in found["broker"]["detail"] and found["broker"]["fix"]
