"""Sink error classification and the writer's retry rules (the store is a stand-in here:
these are the retry semantics; the real engine is exercised by tests/integration)."""

from __future__ import annotations

import asyncio

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from pipeline.core.aggregates import SketchMapping
from pipeline.core.batch import BatchProcessor, RawMessage
from pipeline.core.decode import Decoder
from pipeline.core.dedup import SeenIds
from pipeline.errors import SinkBackpressure, SinkRejected, SinkUnavailable
from pipeline.metrics import PipelineMetrics
from pipeline.sinks.clickhouse import _classify
from pipeline.sinks.writer import BatchWriter, _chunks


def test_connection_errors_are_unavailable_and_too_many_parts_is_backpressure() -> None:
    assert isinstance(_classify(OperationalError("Connection refused"), "insert"), SinkUnavailable)
    bp = _classify(DatabaseError("Code: 252. DB::Exception: Too many parts (300)"), "insert into events")
    assert isinstance(bp, SinkBackpressure) and bp.retry_after > 0
    assert isinstance(_classify(DatabaseError("Code: 53. Type mismatch"), "insert"), SinkRejected)


class _Store:
    """Fails the first ``fails`` inserts with ``error``, then records rows."""

    def __init__(self, error: Exception, fails: int) -> None:
        self.error, self.fails, self.rows = error, fails, 0

    def _insert(self, rows: list[tuple[object, ...]]) -> None:
        if self.fails:
            self.fails -= 1
            raise self.error
        self.rows += len(rows)

    insert_events = insert_rollups = insert_dlq = _insert


def _out(processor: BatchProcessor):  # type: ignore[no-untyped-def]
    raw = (
        b'{"id":"e1","timestamp":"2025-11-03T10:00:00Z","event_type":"task.completed",'
        b'"entity_type":"task","entity_id":"t1","metrics":{"duration_ms":5}}'
    )
    return processor.process([RawMessage("taskpulse.events.task", 0, 7, raw)], 1_762_170_000_000)


@pytest.mark.parametrize(
    "error",
    [SinkBackpressure("slow down", retry_after=0.01), SinkUnavailable("connection refused")],
    ids=["backpressure", "unavailable"],
)
def test_writer_retries_the_same_batch_until_written(error: Exception) -> None:
    processor = BatchProcessor(Decoder(), SeenIds(1000), SketchMapping())
    store = _Store(error, fails=2)
    writer = BatchWriter(store, producer=None, processor=processor, metrics=PipelineMetrics())  # type: ignore[arg-type]
    out = _out(processor)

    async def go() -> None:
        # only the ClickHouse steps: the Kafka step needs a broker (covered in integration)
        await writer._retrying("events", lambda: writer._insert("events", out))

    asyncio.run(go())
    assert store.rows == 1  # written once, after two refusals
    assert processor.watermarks["events"] == {("taskpulse.events.task", 0): 7}


def test_writer_does_not_retry_a_rejection() -> None:
    processor = BatchProcessor(Decoder(), SeenIds(1000), SketchMapping())
    store = _Store(SinkRejected("type mismatch"), fails=1)
    writer = BatchWriter(store, producer=None, processor=processor, metrics=PipelineMetrics())  # type: ignore[arg-type]
    out = _out(processor)
    with pytest.raises(SinkRejected):
        asyncio.run(writer._retrying("events", lambda: writer._insert("events", out)))
    assert processor.watermarks["events"] == {}  # nothing recorded as written


def test_output_chunks_stay_under_the_message_limit_and_keep_every_item() -> None:
    items = [b"x" * n for n in (10, 400, 399, 1, 600, 5)]
    chunks = list(_chunks(items, 1000))
    assert [i for c in chunks for i in c] == items
    assert all(2 + sum(len(i) + 1 for i in c) <= 1000 or len(c) == 1 for c in chunks)
