"""Attacks on the ingest path with real parts (Tansu, chDB): poisons the decoder did not
foresee, each between canaries on one partition.  Every poison must land in the DLQ with a
reason, every canary and every valid-but-odd event must reach ClickHouse, and the worker
must stay the same process."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from pipeline.sdk import make_event
from pipeline.topics import RAW_TASK
from tests.integration.conftest import publish_raw, wait_for

pytestmark = pytest.mark.integration


def _nest(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_odd_numbers_and_digits_never_stop_a_partition(make_worker, broker):
    worker = make_worker().start()
    now = int(time.time() * 1000)
    ts = now - 60_000

    def ev(event_id: str, event_type: str = "task.progress", state: dict[str, Any] | None = None,
           **over: Any) -> bytes:  # fmt: skip
        doc = make_event(event_type, f"task-{event_id}", state or {"percentage": 5}, timestamp=ts, event_id=event_id)
        doc.update(over)
        return orjson.dumps(doc)

    poisons = [
        (ev("p-digits", timestamp="9" * 5000), "bad_timestamp"),
        (ev("p-digits-epoch", timestamp="1" * 4301), "bad_timestamp"),
        (ev("p-65-arrays", state={"n": _nest(63)}), "too_deep"),  # event 1 + current_state 1 + 63 = 65
        (ev("p-year-10000", timestamp="+10000-01-01T00:00:00Z"), "bad_timestamp"),
        (ev("p-bool-ts", timestamp=True), "bad_timestamp"),
    ]
    odd_but_valid = [
        ev("v-digits-deadline", "task.created", {"task_type": "x", "deadline": "9" * 5000}),
        ev("v-nul\x00id"),
        ev("v-64-arrays", state={"n": _nest(62)}),  # exactly 64 levels
        ev("v-epoch-ns", timestamp=ts * 1_000_000),
        ev("v-cpu-1e308", "agent.heartbeat", {"cpu_percent": 1e308}, entity_type="agent"),
    ]

    def canaries(tag: str) -> list[tuple[str, bytes]]:
        return [(RAW_TASK, ev(f"canary-{tag}-{i}")) for i in range(10)]

    publish_raw(broker, [*canaries("before"), *[(RAW_TASK, p) for p, _ in poisons],
                         *[(RAW_TASK, v) for v in odd_but_valid], *canaries("after")])  # fmt: skip

    expected = 20 + len(odd_but_valid)
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.events") >= expected, 90,
             "every canary and valid event in taskpulse.events")  # fmt: skip
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.dlq") >= len(poisons), 30, "the poisons in the DLQ")
    time.sleep(1)
    rows = worker.sql("SELECT event_id, reason FROM taskpulse.dlq ORDER BY src_offset")
    assert [r[1] for r in rows] == [reason for _, reason in poisons], rows
    assert worker.scalar("SELECT count() FROM taskpulse.events") == expected
    assert worker.scalar("SELECT count() FROM taskpulse.events WHERE id = 'v-nul\\0id'") == 1
    assert worker.proc.poll() is None and worker.starts == 1, worker.log()
