"""A refused write never blocks a partition: poison that today's decoder accepts but a sink
refuses (orjson's 254-level limit, a pre-1970 rollup window, an integer beyond UInt32) is
published on one partition among canary events; the poison lands in the DLQ as
``unwritable``, the canaries before and after it reach ClickHouse with exact totals, and
the worker is the process it was.  A structural error is retried, never dead-lettered."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.topics import RAW_TASK
from tests.integration.conftest import publish_raw, wait_for

pytestmark = pytest.mark.integration


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _event(eid: str, event_type: str, ms: int, entity: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": eid, "timestamp": _iso(ms), "event_type": event_type, "entity_type": "task",
        "entity_id": entity, "current_state": state or {}, "metadata": {"triggered_by": "system"},
        "metrics": {"duration_ms": 10},
    }  # fmt: skip


def _canaries(prefix: str, n: int, base_ms: int) -> list[dict[str, Any]]:
    return [
        _event(f"{prefix}-{i}", "task.completed", base_ms + i, f"{prefix}-task-{i}", {"agent_id": f"agent-{i % 3}"})
        for i in range(n)
    ]


def _nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        doc = {"n": doc}
    return doc


def _raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()  # stdlib: orjson cannot write the 300-deep one either


# --------------------------------------------------------------------------- the real engine, in process


def test_store_finds_refused_rows_and_names_columns_on_the_real_engine(tmp_path: Path) -> None:
    from pipeline.sinks.clickhouse import ClickHouseStore

    store = ClickHouseStore(f"chdb://{tmp_path / 'ch'}", "taskpulse")
    store.migrate()
    now = datetime.now(UTC)
    from pipeline.core.ingest.rows import ROLLUP_COLUMNS

    def row(gran: str, start: datetime, count: int) -> tuple[Any, ...]:
        return (gran, start, "task", "task.completed", "a", "t", "success", count, count, 0, 0, 0.0, None, None,
                {}, {}, now)  # fmt: skip

    rows = [row("1m", now, i + 1) for i in range(40)]
    rows[7] = row("1m", datetime(1969, 7, 20, tzinfo=UTC), 1)  # DateTime cannot hold it
    rows[31] = row("1m", now, 2**64)  # UInt64 overflow
    refused = store.refused_rows("rollups", rows, ROLLUP_COLUMNS)
    assert [i for i, _ in refused] == [7, 31]
    assert [e.column for _, e in refused] == ["window_start", "count"]
    assert all("_probe_" not in str(e) and "rollups" in str(e) for _, e in refused)
    assert store.rows("SELECT count() FROM taskpulse.rollups") == [(0,)]  # probing wrote nothing
    store.close()


# --------------------------------------------------------------------------- ingest


def test_poison_on_one_partition_is_dead_lettered_and_canaries_arrive(make_worker, broker, engine):
    # The decoder's time floor stops a 1969 event in production; it is lowered here so that
    # the event reaches the sinks, whose safety net is what this test is about.  The deep
    # event is stopped by the decoder (too_deep: its bound cannot be lifted past what orjson
    # can write); the serializer's own net behind it is a unit test (test_unwritable.py).
    worker = make_worker(engine=engine, TASKPULSE_MIN_EVENT_TIME="1900-01-01T00:00:00Z").start()
    pid = worker.proc.pid
    base = int(time.time() * 1000) - 600_000
    before, after = _canaries("before", 60, base), _canaries("after", 60, base + 1000)
    deep = _event("poison-deep", "task.completed", base + 500, "poison-1", {"deep": _nested(300)})
    old = _event("poison-1969", "task.completed", 0, "poison-2")
    old["timestamp"] = "1969-07-20T20:17:00Z"
    # key b"k" for every message: one partition, canaries on both sides of the poison
    items = [(RAW_TASK, _raw(e)) for e in before] + [(RAW_TASK, _raw(deep)), (RAW_TASK, _raw(old))]
    items += [(RAW_TASK, _raw(e)) for e in after]
    publish_raw(broker, items)

    ids = [e["id"] for e in before + after]
    wait_for(lambda: worker.scalar(f"SELECT count() FROM taskpulse.events WHERE id IN {tuple(ids)!r}") == 120,
             90, "every canary")  # fmt: skip
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.dlq") >= 5, 30, "DLQ")
    time.sleep(1.5)
    dlq = worker.sql(
        "SELECT event_id, detail, src_topic FROM taskpulse.dlq WHERE reason = 'unwritable' ORDER BY detail"
    )
    by_id: dict[str, list[str]] = {}
    for event_id, detail, topic in dlq:
        by_id.setdefault(event_id, []).append(detail)
        assert topic == RAW_TASK
    assert sorted(by_id) == ["poison-1969"]
    assert worker.sql("SELECT event_id, reason FROM taskpulse.dlq WHERE reason != 'unwritable'") == [
        ["poison-deep", "too_deep"]
    ]
    assert len(by_id["poison-1969"]) == 4  # its 1m / 5m / 1h / 1d rollup rows
    assert all(d.startswith("rollups.window_start") for d in by_id["poison-1969"])
    assert worker.scalar("SELECT count() FROM taskpulse.dlq") == 5
    # the 1969 event's raw row fits DateTime64; only its rollups were refused
    assert worker.scalar("SELECT count() FROM taskpulse.events") == 121
    assert worker.scalar("SELECT count() FROM taskpulse.events WHERE id = 'poison-deep'") == 0
    for gran in ("1m", "5m", "1h", "1d"):
        assert worker.scalar(f"SELECT sum(count) FROM taskpulse.rollups WHERE granularity = '{gran}'") == 120
    agents = worker.sql("SELECT agent, sum(count) FROM taskpulse.rollups WHERE granularity = '1d' GROUP BY agent ORDER BY agent")  # noqa: E501
    assert agents == [["agent-0", 40], ["agent-1", 40], ["agent-2", 40]]
    status = worker.status()
    assert status["rejected"].get("unwritable") == 4 and status["rejected"].get("too_deep") == 1
    assert worker.proc.poll() is None and worker.proc.pid == pid and worker.starts == 1


def test_dimension_cap_folds_a_flood_of_agents_and_keeps_totals(make_worker, broker):
    worker = make_worker(TASKPULSE_ROLLUP_MAX_DIMENSION_VALUES="5").start()
    base = int(time.time() * 1000) - 600_000
    base -= base % 3_600_000  # one hour window holds them all
    flood = [
        _event(f"f-{i}", "task.completed", base + i, f"t-{i}", {"agent_id": f"agent-{i:03d}"}) for i in range(200)
    ]
    publish_raw(broker, [(RAW_TASK, _raw(e)) for e in flood])
    hourly = "SELECT sum(count) FROM taskpulse.rollups WHERE granularity = '1h'"
    wait_for(lambda: worker.scalar(hourly) == 200, 90, "all")
    assert worker.scalar("SELECT uniqExact(agent) FROM taskpulse.rollups WHERE granularity = '1h'") == 6  # 5 + other
    assert worker.scalar("SELECT sum(count) FROM taskpulse.rollups WHERE granularity = '1h' AND agent = 'other'") == 195
    assert worker.scalar("SELECT count() FROM taskpulse.events") == 200  # raw rows keep the real names
    name = 'taskpulse_rollup_dimension_folded_total{dimension="agent"}'
    metrics = wait_for(lambda: _metric(worker, name), 10, "metric")
    assert metrics >= 195


def _metric(worker: Any, name: str) -> float | None:
    import urllib.request

    with urllib.request.urlopen(f"{worker.api}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return None


def test_structural_error_is_retried_not_dead_lettered(make_worker, broker, tmp_path):
    flag = tmp_path / "structural"
    worker = make_worker(fault_file=tmp_path / "no-outage", TASKPULSE_TEST_CH_STRUCTURAL=str(flag)).start()
    base = int(time.time() * 1000) - 600_000
    first = _canaries("first", 20, base)
    publish_raw(broker, [(RAW_TASK, _raw(e)) for e in first])
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.events") == 20, 90, "first canaries")
    flag.touch()  # the next insert renames events.agent away: every insert is refused
    held = _canaries("held", 30, base + 100)
    publish_raw(broker, [(RAW_TASK, _raw(e)) for e in held])
    status = wait_for(
        lambda: (s := worker.status()) and "agent" in s["last_sink_error"] and s, 60, "the structural error"
    )
    assert status["backpressure"] is True
    time.sleep(3)  # several retries
    assert worker.scalar("SELECT count() FROM taskpulse.dlq") == 0  # nothing blamed on the rows
    assert worker.scalar("SELECT count() FROM taskpulse.events") == 20
    flag.unlink()  # the operator fixes the table
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.events") == 50, 60, "held canaries")
    time.sleep(1)
    assert worker.scalar("SELECT count() FROM taskpulse.events") == 50
    assert worker.scalar("SELECT sum(count) FROM taskpulse.rollups WHERE granularity = '1m'") == 50
    assert worker.scalar("SELECT count() FROM taskpulse.dlq") == 0
    assert worker.proc.poll() is None and worker.starts == 1
    assert "not an outage" in worker.log()


# --------------------------------------------------------------------------- correlation


def _prepare_database(data_dir: Path, *statements: str) -> None:
    """Create the schema in a worker's data dir and run ``statements`` on it, in a process of
    its own (chDB: one engine per process; the worker opens it next)."""
    code = (
        "import sys\n"
        "from pipeline.sinks.clickhouse import ClickHouseStore\n"
        "s = ClickHouseStore(sys.argv[1])\n"
        "s.migrate()\n"
        "for q in sys.argv[2:]:\n"
        "    s.command(q)\n"
        "s.close()\n"
    )
    url = f"chdb://{(data_dir / 'clickhouse').resolve()}"
    subprocess.run([sys.executable, "-c", code, url, *statements], check=True, timeout=180)


def test_correlation_dead_letters_a_row_it_cannot_write(make_worker, broker, tmp_path):
    # The decoder keeps event values within the columns, so a refusal here comes from the
    # operator's side: a CHECK constraint, a real refusal by the engine (VIOLATED_CONSTRAINT).
    _prepare_database(
        tmp_path / "data",
        "ALTER TABLE taskpulse.task_executions ADD CONSTRAINT no_poison CHECK task_id != 'poison'",
    )
    worker = make_worker(TASKPULSE_ROLES="ingest,correlate", TASKPULSE_REORDER_WINDOW_S="0.5").start()
    pid = worker.proc.pid
    now = int(time.time() * 1000) - 60_000

    def task(tid: str, ms: int, final: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            _event(f"{tid}-c", "task.created", ms, tid, {"task_type": "code"}),
            _event(f"{tid}-s", "task.started", ms + 10, tid, {"agent_id": "agent-1"}),
            {**_event(f"{tid}-f", final.pop("type"), ms + 20, tid, final)},
        ]

    events: list[dict[str, Any]] = []
    for i in range(10):
        events += task(f"canary-a{i}", now + i * 100, {"type": "task.completed", "success": True})
    events += task("poison", now + 1500, {"type": "task.failed", "error": "boom", "retry_count": 2})
    for i in range(10):
        events += task(f"canary-b{i}", now + 2000 + i * 100, {"type": "task.completed", "success": True})
    publish_raw(broker, [(RAW_TASK, _raw(e)) for e in events])

    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.task_executions FINAL WHERE task_id LIKE 'canary-%'") == 20,  # noqa: E501
             120, "every canary task")  # fmt: skip
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.dlq WHERE reason = 'unwritable'") >= 1, 30, "DLQ")
    rows = worker.sql("SELECT event_id, detail FROM taskpulse.dlq WHERE reason = 'unwritable'")
    assert {r[0] for r in rows} == {"poison"}
    assert all(r[1].startswith("task_executions") and "no_poison" in r[1] for r in rows), rows
    assert worker.scalar("SELECT count() FROM taskpulse.events") == len(events)  # raw events all written
    assert worker.scalar("SELECT count() FROM taskpulse.task_executions WHERE task_id = 'poison'") == 0
    status = worker.status()
    assert status["correlate"]["unwritable"] >= 1
    assert worker.proc.poll() is None and worker.proc.pid == pid and worker.starts == 1
