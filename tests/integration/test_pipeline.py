"""End to end on the real broker and ClickHouse engine: what analysts read is exactly
what was published, including out-of-order, late and duplicate events."""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict

import pytest

from pipeline.demo import DemoFleet
from tests.integration.conftest import publish, wait_for
from tests.integration.reference import event_ms, expected_windows, nearest_rank, unique

pytestmark = pytest.mark.integration

ROLLUP_SQL = """
SELECT granularity, toUnixTimestamp(window_start), event_type, sum(count), sum(successes),
       sum(failures), sum(duration_count), sum(duration_sum), min(duration_min), max(duration_max)
FROM taskpulse.rollups GROUP BY granularity, window_start, event_type
"""


def _demo_events(n: int, seed: int) -> list[dict]:
    # Six hours of history ending now: spans 1d/1h boundaries most of the time.
    start = int(time.time() * 1000) - 6 * 3_600_000
    return DemoFleet(seed=seed, tasks_per_s=2.0).take(n, start)


def assert_rollups_match(worker, events: list[dict]) -> None:
    expected = expected_windows(events)
    got = {}
    for g, ws, et, c, s, f, dc, dsum, dmin, dmax in worker.sql(ROLLUP_SQL):
        got[(g, int(ws), et)] = [c, s, f, dc, dsum, dmin, dmax]
    assert set(got) == set(expected), (
        f"windows differ: missing {sorted(set(expected) - set(got))[:5]}, "
        f"unexpected {sorted(set(got) - set(expected))[:5]}"
    )
    for key, exp in expected.items():
        g = got[key]
        assert g[:4] == exp[:4], f"{key}: got {g[:4]} expected {exp[:4]}"
        assert math.isclose(g[4], exp[4], rel_tol=1e-9), key
        if exp[3]:
            assert g[5] == exp[5] and g[6] == exp[6], key
    totals = defaultdict(int)
    for (g, _, _), v in got.items():
        totals[g] += v[0]
    n = len(unique(events))
    assert dict(totals) == {"1m": n, "5m": n, "1h": n, "1d": n}


def test_events_and_rollups_match_an_independent_computation(make_worker, broker, engine):
    events = _demo_events(6000, seed=11)
    rng = random.Random(5)
    # Out of order: shuffle the publication order; late: a block of events from the
    # previous day; duplicates: 300 events published a second time.
    late = DemoFleet(seed=99, tasks_per_s=2.0).take(500, int(time.time() * 1000) - 30 * 3_600_000)
    dups = rng.sample(events, 300)
    traffic = events + late
    rng.shuffle(traffic)
    worker = make_worker(engine=engine).start()
    publish(broker, traffic[:3000], batch_size=100)
    publish(broker, traffic[3000:], batch_size=1)  # single-event messages too
    publish(broker, dups, batch_size=50)
    all_events = events + late
    n = len(all_events)
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.events") >= n, 120, f"{n} events")
    time.sleep(1.5)  # let any (wrong) extra rows arrive before we count
    assert worker.scalar("SELECT count() FROM taskpulse.events") == n
    assert worker.scalar("SELECT uniqExact(id) FROM taskpulse.events") == n
    assert worker.scalar("SELECT count() FROM taskpulse.dlq") == 0
    assert_rollups_match(worker, all_events)
    status = worker.status()
    assert status["duplicates"] == 300

    # Percentiles from the mergeable sketch are within 1% of the exact nearest-rank value.
    by_type = defaultdict(list)
    for e in all_events:
        if e.get("metrics", {}).get("duration_ms") is not None:
            by_type[e["event_type"]].append(e["metrics"]["duration_ms"])
    rows = worker.sql(
        "SELECT event_type, tpQuantile(sumMap(duration_sketch), 0.5), "
        "tpQuantile(sumMap(duration_sketch), 0.95), tpQuantile(sumMap(duration_sketch), 0.99) "
        "FROM taskpulse.rollups WHERE granularity = '1h' AND duration_count > 0 GROUP BY event_type"
    )
    assert {r[0] for r in rows} == set(by_type)
    for et, p50, p95, p99 in rows:
        for q, got in ((0.5, p50), (0.95, p95), (0.99, p99)):
            exact = nearest_rank(by_type[et], q)
            assert abs(got - exact) <= 0.01 * exact, f"{et} p{int(q * 100)}: {got} vs exact {exact}"

    # Normalized timestamps keep ms precision and the original value.
    sample = all_events[17]
    row = worker.sql(
        f"SELECT toUnixTimestamp64Milli(event_time), timestamp_raw FROM taskpulse.events "
        f"WHERE id = '{sample['id']}'"
    )
    assert row == [[event_ms(sample), sample["timestamp"]]]


def test_analyst_queries_answer_in_one_statement(make_worker, broker):
    events = _demo_events(3000, seed=3)
    worker = make_worker().start()
    publish(broker, events)
    n = len(events)
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.events") >= n, 120, "events")
    # p95 execution time per agent per hour (last week)
    p95 = worker.sql(
        "SELECT window_start, agent, tpQuantile(sumMap(duration_sketch), 0.95) AS p95_ms "
        "FROM taskpulse.rollups WHERE granularity = '1h' AND event_type = 'task.completed' "
        "AND window_start >= now() - INTERVAL 7 DAY GROUP BY window_start, agent ORDER BY 1, 2"
    )
    assert p95 and all(r[2] > 0 for r in p95)
    # failure rate per task type per day
    rate = worker.sql(
        "SELECT window_start, task_type, sum(failures) / sum(successes + failures) AS failure_rate "
        "FROM taskpulse.rollups WHERE granularity = '1d' AND entity_type = 'task' "
        "AND outcome IN ('success', 'failure') GROUP BY window_start, task_type ORDER BY 1, 2"
    )
    completed = [e for e in events if e["event_type"] in ("task.completed", "task.failed")]
    types = {e["current_state"]["task_type"] for e in completed}
    assert {r[1] for r in rate} == types
    assert all(0 <= r[2] <= 1 for r in rate)
    # the convenience view gives the same p95 as the UDF
    view = worker.sql(
        "SELECT count() FROM taskpulse.rollup_stats WHERE granularity = '1h'"
    )
    assert view[0][0] > 0


def test_sdk_sends_a_partial_batch_after_linger_without_flush(make_worker, broker):
    """A long-lived emitter that sends a few events must not have them wait for a full batch."""
    import asyncio

    from pipeline.sdk import TaskpulseProducer

    worker = make_worker().start()
    events = _demo_events(5, seed=8)

    async def go() -> None:
        async with TaskpulseProducer(broker.url, batch_size=100, linger_ms=50) as p:
            await p.send_many(events)
            # no flush(): the linger timer must publish them while we keep the producer open
            await asyncio.to_thread(
                wait_for, lambda: worker.scalar("SELECT count() FROM taskpulse.events") == 5, 60, "5 events"
            )

    asyncio.run(go())
