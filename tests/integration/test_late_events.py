"""Abandonment is a verdict, on the real broker and engine: tasks whose events are delivered
shuffled across hours of event time, or whose completions arrive after their abandonment
deadline in stream time, end with the same ``task_executions`` rows as in-order delivery
(except ``version``, ``updated_at`` and ``abandoned_verdicts``), and with the outcomes a
reference computed here from the generated tasks says."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from pipeline.sdk import make_event
from tests.integration.conftest import publish, wait_for

pytestmark = pytest.mark.integration

H = 3_600_000
ABANDON_S = 1800
N = 40
ENV = {"TASKPULSE_ROLES": "ingest,correlate", "TASKPULSE_REORDER_WINDOW_S": "1",
       "TASKPULSE_ABANDON_AFTER_S": str(ABANDON_S)}  # fmt: skip
TIMES = ("finished_at", "created_at", "queued_at", "assigned_at", "started_at")
COLUMNS = (
    "task_id", "toUnixTimestamp64Milli(finished_at)", "toUnixTimestamp64Milli(created_at)",
    "toUnixTimestamp64Milli(queued_at)", "toUnixTimestamp64Milli(assigned_at)",
    "toUnixTimestamp64Milli(started_at)", "task_type", "group_key", "correlation_id", "requester_id",
    "requester_type", "request", "priority", "agent", "confidence", "other_agents", "outcome", "success",
    "final_state", "error", "retry_count", "queue_wait_ms", "execution_ms", "review_ms", "cycle_ms", "paused_ms",
    "progress_checkpoints", "invalid_transitions", "invalid_transition_list", "events", "history_dropped",
    "abandoned_verdicts", "version",
)  # fmt: skip


def plan(rnd: random.Random) -> list[dict[str, Any]]:
    """N tasks over 3 h of event time (offsets from the set's start): each completes, fails
    or falls silent after a few progress reports, with gaps below the abandonment timeout."""
    tasks = []
    for k in range(N):
        t0 = rnd.randrange(0, 3 * H)
        steps: list[tuple[int, str, dict[str, Any]]] = [
            (t0, "task.created", {"request": f"job {k}", "requester_id": "u-1"}), (t0 + 1000, "task.queued", {}),
            (t0 + 2000, "task.assigned", {"agent_id": f"agent-{k % 3}", "confidence": 0.8}),
            (t0 + 3000, "task.started", {}),
        ]  # fmt: skip
        t = t0 + 3000
        for _ in range(rnd.randrange(0, 4)):
            t += rnd.randrange(1000, (ABANDON_S - 60) * 1000)
            steps.append((t, "task.progress", {"percentage": 25}))
        t += rnd.randrange(1000, (ABANDON_S - 60) * 1000)
        end = rnd.choice(["success", "success", "failure", "abandoned"])
        if end == "success":
            steps.append((t, "task.completed", {"success": True}))
        elif end == "failure":
            steps.append((t, "task.failed", {"error": "OOM", "will_retry": False}))
        last = steps[-1][0]
        finished = last if end != "abandoned" else last + ABANDON_S * 1000
        tasks.append({"k": k, "steps": steps, "outcome": end, "finished": finished, "started": t0 + 3000})
    return tasks


def events_of(tasks: list[dict[str, Any]], prefix: str, base: int) -> list[dict[str, Any]]:
    return [make_event(et, f"{prefix}{t['k']}", {"task_type": "research", **state}, timestamp=base + at)
            for t in tasks for at, et, state in t["steps"]]  # fmt: skip


def correlated(worker: Any) -> int:
    st = worker.status() or {}
    return int((st.get("correlate") or {}).get("task_events", 0))


def feed(worker: Any, broker: Any, events: list[dict[str, Any]], chunks: int) -> None:
    """Publish in chunks, each read by the correlator before the next: stream time moves
    up chunk by chunk, so verdicts fall due between a task's events."""
    size = -(-len(events) // chunks)
    for i in range(0, len(events), size):
        before = correlated(worker)
        chunk = events[i : i + size]
        publish(broker, chunk, batch_size=10)
        wait_for(lambda: correlated(worker) >= before + len(chunk), 60, "the chunk correlated")  # noqa: B023


def rows_of(worker: Any, prefix: str, shift: int) -> dict[int, dict[str, Any]]:
    """The set's rows by task number, times moved back by ``shift`` (to compare across sets)."""
    sql = f"SELECT {', '.join(COLUMNS)} FROM taskpulse.task_executions FINAL WHERE startsWith(task_id, '{prefix}')"
    out = {}
    for r in worker.sql(sql):
        row = dict(zip(("task_id", *TIMES, *COLUMNS[6:]), r, strict=True))
        for c in TIMES:
            row[c] = None if row[c] is None else int(row[c]) - shift
        out[int(str(row.pop("task_id"))[len(prefix) :])] = row
    return out


def without_verdicts(rows: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {k: {c: v for c, v in r.items() if c not in ("version", "abandoned_verdicts")} for k, r in rows.items()}


def test_late_and_shuffled_task_events_end_as_in_order_delivery(make_worker, broker):
    """Three copies of the same 40 tasks: ``o`` in order, ``s`` shuffled across its 3 h,
    ``d`` with every terminal event delivered after stream time passed its deadline."""
    rnd = random.Random(9)
    tasks = plan(rnd)
    now = int(time.time() * 1000)
    base_s, base_o, base_d = now - 16 * H, now - 11 * H, now - 22 * H
    worker = make_worker(**ENV).start()

    # s: shuffled across hours; stream time rises chunk by chunk, so tasks are judged
    # abandoned while their later events are still to come
    shuffled = events_of(tasks, "s", base_s)
    rnd.shuffle(shuffled)
    feed(worker, broker, shuffled, chunks=8)
    # o: in order, after the s set in event time too: the reference delivery
    ordered = sorted(events_of(tasks, "o", base_o), key=lambda e: e["timestamp"])
    feed(worker, broker, ordered, chunks=8)
    # d: everything but the terminal events, when stream time is past every deadline …
    d_events = events_of(tasks, "d", base_d)
    terminal = [e for e in d_events if e["event_type"] in ("task.completed", "task.failed")]
    feed(worker, broker, [e for e in d_events if e not in terminal], chunks=1)
    wait_for(lambda: len(rows_of(worker, "d", base_d)) == N, 60, "every d task judged abandoned")
    assert {r["outcome"] for r in rows_of(worker, "d", base_d).values()} == {"abandoned"}
    # … then the completions and failures, timed before the deadlines that were judged
    feed(worker, broker, terminal, chunks=2)
    # a last event moves stream time past the o set's deadlines too
    publish(broker, [make_event("task.created", "clock", {}, timestamp=now)], batch_size=1)

    reference = {t["k"]: (t["outcome"], t["finished"]) for t in tasks}

    def settled(prefix: str, base: int) -> bool:
        got = rows_of(worker, prefix, base)
        return {k: (r["outcome"], r["finished_at"]) for k, r in got.items()} == reference

    for prefix, base in (("o", base_o), ("s", base_s), ("d", base_d)):
        wait_for(lambda p=prefix, b=base: settled(p, b), 90, f"the {prefix} set's outcomes")
    want = rows_of(worker, "o", base_o)
    for k, t in enumerate(tasks):  # the reference, computed from the plan
        assert want[k]["execution_ms"] == t["finished"] - t["started"]
        assert want[k]["events"] == len(t["steps"])
        assert want[k]["abandoned_verdicts"] == (1 if t["outcome"] == "abandoned" else 0)
    shuffled_rows, late_rows = rows_of(worker, "s", base_s), rows_of(worker, "d", base_d)
    assert without_verdicts(shuffled_rows) == without_verdicts(want)
    assert without_verdicts(late_rows) == without_verdicts(want)
    # the d set was judged first: each completed or failed task shows it, with its true outcome
    assert all(r["abandoned_verdicts"] >= 1 and r["version"] >= 2 for r in late_rows.values()
               if r["outcome"] != "abandoned")  # fmt: skip
    st = worker.status()["correlate"]
    assert st["verdicts_overruled"] >= sum(1 for t in tasks if t["outcome"] != "abandoned")
