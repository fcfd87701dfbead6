"""The demo fleet: run ids keep runs apart, every event is one the pipeline accepts, and a
backfill never stamps an event ahead of the clock however many are asked for."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from pipeline.core.ingest.decode import Decoder
from pipeline.demo import DemoFleet
from pipeline.events import Rejected
from pipeline.publish import DemoRun, backfill_start, publish_demo


def test_runs_with_the_same_seed_share_no_task_group_or_event_id() -> None:
    a = DemoFleet(seed=7, run_id="aaa").take(3000, 0)
    b = DemoFleet(seed=7, run_id="bbb").take(3000, 0)
    tasks_a = {e["entity_id"] for e in a if e["entity_type"] == "task"}
    tasks_b = {e["entity_id"] for e in b if e["entity_type"] == "task"}
    assert tasks_a and not tasks_a & tasks_b
    assert all(t.startswith("task-aaa-") for t in tasks_a)
    assert not {e["id"] for e in a} & {e["id"] for e in b}
    assert len({e["id"] for e in a}) == len(a)
    groups = {e["current_state"].get("group") for e in a if e["event_type"] == "task.created"}
    assert all(g.startswith("batch-aaa-") for g in groups)
    # the same run id and seed again: the same events (a re-send is counted once)
    assert DemoFleet(seed=7, run_id="aaa").take(50, 0) == a[:50]


def test_every_demo_event_is_accepted_by_the_decoder() -> None:
    now = int(time.time() * 1000)
    decoder = Decoder()
    for e in DemoFleet(seed=3, run_id="ok").take(5000, now - 3_600_000):
        (result,) = decoder.decode("taskpulse.events." + e["entity_type"], 0, 0, orjson.dumps(e), now)
        assert not isinstance(result, Rejected), (result, e)


def test_a_run_of_n_events_finishes_every_task_it_started() -> None:
    fleet = DemoFleet(seed=5, run_id="fin")
    events = [e for _, e in fleet.timed(0, events=2000)]
    assert len(events) >= 2000
    by_task: dict[str, list[str]] = {}
    for e in events:
        if e["entity_type"] == "task":
            by_task.setdefault(e["entity_id"], []).append(e["event_type"])
    terminal = {"task.completed", "task.cancelled"}
    for task, types in by_task.items():
        last = types[-1]
        assert last in terminal or (last == "task.failed"), (task, types)


class _Recorder:
    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.ahead_ms: list[float] = []

    async def send(self, event: dict[str, Any]) -> None:
        from pipeline.core.timestamps import to_epoch_ms

        self.ahead_ms.append(to_epoch_ms(event["timestamp"]) - self.clock() * 1000)

    async def flush(self) -> None:
        return None


def test_a_large_backfill_is_never_ahead_of_the_clock() -> None:
    fleet = DemoFleet(seed=9, run_id="big")
    now_ms = int(time.time() * 1000)
    start = backfill_start(fleet, 60_000, now_ms)
    recorder = _Recorder(time.time)
    run = asyncio.run(publish_demo(recorder, fleet, start, DemoRun("big"), 60_000))  # type: ignore[arg-type]
    assert run.published >= 60_000
    assert max(recorder.ahead_ms) <= 0
    assert run.last_ms is not None and now_ms - run.last_ms < 0.25 * (now_ms - start), "ends near now"
