"""Versioned migrations against the real engine (chDB, one per child process): the previous
release's database (its DDL kept as tests/fixtures/clickhouse_c91bf09.sql) with data in every
table is upgraded by ``migrate``; data, views and watermarks survive; a TTL setting change
reaches the table; a database ahead of the code, or behind it with auto-migration off, stops
the worker with a message that says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.schema import code_version, migration_steps
from tests.integration.conftest import ROOT, Worker, wait_for

pytestmark = pytest.mark.integration

PREVIOUS_RELEASE = ROOT / "tests" / "fixtures" / "clickhouse_c91bf09.sql"

#: Builds the previous release's database and fills every table, then runs the checks given.
_UPGRADE = r'''
import json, sys
from datetime import UTC, datetime, timedelta
from pipeline.core.migrations import Retention
from pipeline.errors import SchemaMismatch
from pipeline.sinks.clickhouse import ClickHouseStore

path, fixture = sys.argv[1], sys.argv[2]
store = ClickHouseStore("chdb://" + path, "taskpulse")
for stmt in open(fixture).read().split(";\n"):
    body = "\n".join(l for l in stmt.splitlines() if not l.startswith("--")).strip()
    if body:
        store.command(body)
out = {"before_tables": sorted(r[0] for r in store.rows(
    "SELECT name FROM system.tables WHERE database = 'taskpulse'"))}
out["status_before"] = store.schema_status()

t, now = "taskpulse.events.task", datetime.now(UTC).replace(microsecond=0)
cols = ["id", "event_time", "event_type", "entity_type", "entity_id", "agent", "task_type", "outcome",
        "duration_ms", "src_topic", "src_partition", "src_offset", "src_index"]
store.insert("events", [["old-1", now, "task.completed", "task", "t1", "a1", "research", "success", 1500.0,
                         t, 0, 900, 0],
                        ["old-2", now, "task.failed", "task", "t2", "a1", "research", "failure", None, t, 0, 901, 0]],
             cols)
store.insert("dlq", [[now, "bad_timestamp", "too far ahead", "old-bad", b'{"id": "old-bad"}', t, 0, 950, 0]],
             ["received_at", "reason", "detail", "event_id", "original", "src_topic", "src_partition",
              "src_offset", "src_index"])
store.insert("rollups", [["1m", now.replace(second=0), "task", "task.completed", "a1", "research", "success",
                          1, 1, 0, 1, 1500.0, 1500.0, 1500.0, {100: 1}, {f"{t}:0": 901}, now]],
             ["granularity", "window_start", "entity_type", "event_type", "agent", "task_type", "outcome",
              "count", "successes", "failures", "duration_count", "duration_sum", "duration_min",
              "duration_max", "duration_sketch", "src_offsets", "updated_at"])
store.insert("tasks", [["t1", 3, "COMPLETED", "research", "g1", "c1", "a1", now - timedelta(minutes=5), now,
                        now, True, now]],
             ["task_id", "version", "state", "task_type", "group_key", "correlation_id", "agent", "created_at",
              "finished_at", "last_event_at", "finished", "updated_at"])
store.insert("task_executions", [["t1", 3, now, "research", "a1", "success", True, 1500.0, 4, now]],
             ["task_id", "version", "finished_at", "task_type", "agent", "outcome", "success", "execution_ms",
              "events", "updated_at"])
store.insert("agent_status", [["a1", 1, "online", now, now, now, now]],
             ["agent", "version", "status", "status_since", "last_seen", "online_since", "updated_at"])
store.insert("alerts", [[now, "high_failure_rate", "fp1", "firing", "fired", "high", 0.5, 0.2, "x"]],
             ["at", "rule", "fingerprint", "state", "change", "severity", "value", "threshold", "summary"])

out["ran"] = store.migrate()
out["status_after"] = store.schema_status()
out["again"] = store.migrate()
q = lambda sql: [list(r) for r in store.rows(sql)]
out["counts"] = {tb: q(f"SELECT count() FROM taskpulse.{tb}")[0][0] for tb in
                 ("events", "dlq", "rollups", "tasks", "task_executions", "agent_status", "alerts")}
out["views"] = {
    "rollup_stats": q("SELECT event_type, count, p50_ms FROM taskpulse.rollup_stats"),
    "agent_overview": q("SELECT agent, status, tasks_completed_today FROM taskpulse.agent_overview"),
    "task_groups": q("SELECT group_key, total, completed FROM taskpulse.task_groups"),
    "task_rollups": q("SELECT granularity, agent, tasks FROM taskpulse.task_rollups ORDER BY granularity"),
}
out["new_columns"] = q("SELECT src_log, original_cut FROM taskpulse.dlq") + q(
    "SELECT abandoned_verdicts, history_dropped FROM taskpulse.task_executions FINAL")
# the watermark logic on the upgraded tables: a new log's rows next to the old ones
store.insert("events", [["new-1", now, t, 0, 3, 0, "c/x"]],
             ["id", "event_time", "src_topic", "src_partition", "src_offset", "src_index", "src_log"])
out["marks"] = {k: sorted([list(tp) + [o] for tp, o in v.items()]) for k, v in store.watermarks().items()}
out["ids"] = store.recent_ids(10)
out["projections"] = q("SELECT table, name FROM system.projections WHERE database = 'taskpulse' ORDER BY table")
# a retention setting change reaches the table
store.retention = Retention(events=14, rollups_1m=3)
out["ttl_ran"] = store.migrate()
out["ttl_status"] = store.schema_status()["ttl"]
out["events_engine"] = q("SELECT engine_full FROM system.tables WHERE database = 'taskpulse' AND name = 'events'")
# a database ahead of the code is refused, by migrate and at worker start
store.insert("schema_migrations", [[99, "from the future", now, "test"]],
             ["version", "name", "applied_at", "applied_by"])
for call in (store.migrate, lambda: store.ensure_schema(True, "test")):
    try:
        call()
        out.setdefault("ahead", []).append("no error")
    except SchemaMismatch as exc:
        out.setdefault("ahead", []).append(str(exc))
print(json.dumps(out, default=str))
'''


def _run(script: str, *args: str, timeout: float = 240) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(_UPGRADE, str(tmp_path_factory.mktemp("upgrade") / "chdb"), str(PREVIOUS_RELEASE))


def test_the_previous_release_is_unversioned_and_every_step_is_pending(upgraded: dict[str, Any]) -> None:
    before = upgraded["status_before"]
    assert "schema_migrations" not in upgraded["before_tables"]
    assert {"events", "rollups", "dlq", "tasks", "task_executions", "agent_status", "alerts"} <= set(
        upgraded["before_tables"]
    )
    assert before["db_version"] == 0 and before["pending"] == list(range(1, code_version() + 1))


def test_migrate_applies_every_step_once_and_records_it(upgraded: dict[str, Any]) -> None:
    after = upgraded["status_after"]
    assert after["db_version"] == code_version() and after["pending"] == [] and after["unknown"] == []
    assert [s["state"] for s in after["steps"]] == ["applied"] * code_version()
    assert [s["name"] for s in after["steps"]] == [s.name for s in migration_steps()]
    # a second run applies no step (only the Null twins are replaced)
    assert all("_probe_" in s for s in upgraded["again"] if not s.startswith(("CREATE DATABASE", "CREATE TABLE IF NOT EXISTS taskpulse.schema_migrations")))  # noqa: E501


def test_data_and_every_view_survive_the_upgrade(upgraded: dict[str, Any]) -> None:
    assert upgraded["counts"] == {
        "events": 2, "dlq": 1, "rollups": 1, "tasks": 1, "task_executions": 1, "agent_status": 1, "alerts": 1,
    }  # fmt: skip
    views = upgraded["views"]
    assert views["rollup_stats"][0][:2] == ["task.completed", 1] and views["rollup_stats"][0][2] > 0
    assert views["agent_overview"] == [["a1", "online", 1]]
    assert views["task_groups"] == [["g1", 1, 1]]
    assert [r[0] for r in views["task_rollups"]] == ["1d", "1h", "1m", "5m"]
    assert {r[2] for r in views["task_rollups"]} == {1}
    # the new columns, with their defaults for the old rows
    assert upgraded["new_columns"] == [["", False], [0, 0]]


def test_watermarks_on_the_upgraded_tables_know_their_log(upgraded: dict[str, Any]) -> None:
    t = "taskpulse.events.task"
    assert upgraded["marks"] == {
        "events": [[t, 0, "", 901], [t, 0, "c/x", 3]],
        "dlq": [[t, 0, "", 950]],
        "rollups": [[t, 0, "", 901]],
    }
    origins = sorted(tuple(i[1]) for i in upgraded["ids"])
    assert origins == [(t, 0, 3, 0, "c/x"), (t, 0, 900, 0, ""), (t, 0, 901, 0, "")]
    projections = {tuple(r) for r in upgraded["projections"]}
    assert {("dlq", "src_log_watermarks"), ("events", "src_log_watermarks")} <= projections
    assert not {p for p in projections if p[1] == "src_watermarks"}, "the old projection is dropped"


def test_a_ttl_setting_change_reaches_the_table(upgraded: dict[str, Any]) -> None:
    modified = [s for s in upgraded["ttl_ran"] if "MODIFY TTL" in s]
    assert modified == [
        "ALTER TABLE taskpulse.events MODIFY TTL toDateTime(event_time) + toIntervalDay(14)",
        "ALTER TABLE taskpulse.rollups MODIFY TTL window_start + toIntervalDay(multiIf(granularity = '1m', 3, "
        "granularity = '5m', 30, granularity = '1h', 90, 730))",
    ]
    assert "TTL toDateTime(event_time) + toIntervalDay(14)" in upgraded["events_engine"][0][0]
    assert {t["table"]: t["state"] for t in upgraded["ttl_status"]} == dict.fromkeys(
        ("events", "rollups", "dlq", "dlq_replays", "tasks", "task_executions", "alerts", "anomaly_evaluations",
             "audit"), "ok"
    )
    assert {t["table"]: t["actual_days"] for t in upgraded["ttl_status"]}["events"] == "14"


def test_a_database_ahead_of_the_code_is_refused(upgraded: dict[str, Any]) -> None:
    assert len(upgraded["ahead"]) == 2
    for message in upgraded["ahead"]:
        assert f"schema version 99, ahead of this taskpulse (it knows versions up to {code_version()}" in message


# --------------------------------------------------------------------------- the worker at start

_PREPARE = r'''
import sys
from datetime import UTC, datetime
from pipeline.sinks.clickhouse import ClickHouseStore

store = ClickHouseStore("chdb://" + sys.argv[1], "taskpulse")
if sys.argv[2] == "ahead":
    store.migrate()
    store.insert("schema_migrations", [[99, "from the future", datetime.now(UTC), "test"]],
                 ["version", "name", "applied_at", "applied_by"])
else:  # the previous release's tables, unversioned
    for stmt in open(sys.argv[3]).read().split(";\n"):
        body = "\n".join(l for l in stmt.splitlines() if not l.startswith("--")).strip()
        if body:
            store.command(body)
print("{}")
'''


@pytest.mark.parametrize(
    ("state", "env", "expected"),
    [
        ("ahead", {}, "is at schema version 99, ahead of this taskpulse"),
        ("behind", {"TASKPULSE_AUTO_MIGRATE": "false"}, "pending steps 1 (ingest tables"),
    ],
)
def test_the_worker_refuses_a_database_it_does_not_match(
    make_worker: Any, tmp_path: Path, state: str, env: dict[str, str], expected: str
) -> None:
    _run(_PREPARE, str(tmp_path / "data" / "clickhouse"), state, str(PREVIOUS_RELEASE))
    w: Worker = make_worker(**env)
    log = open(w.log_path, "ab")  # noqa: SIM115
    w.proc = subprocess.Popen(w.argv, env=w.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    code = wait_for(lambda: w.proc.poll() is not None if w.proc else True, 90, "the worker to refuse")
    assert code and w.proc is not None and w.proc.returncode == 2, w.log()
    assert expected in " ".join(w.log().split()), w.log()


def test_the_worker_migrates_a_database_behind_it(make_worker: Any, tmp_path: Path) -> None:
    _run(_PREPARE, str(tmp_path / "data" / "clickhouse"), "behind", str(PREVIOUS_RELEASE))
    w: Worker = make_worker().start()
    rows = w.sql("SELECT max(version), count() FROM taskpulse.schema_migrations FINAL")
    assert rows == [[code_version(), code_version()]]
