"""Sink error classification and the writer's retry rules (the store is a stand-in here:
these are the retry semantics; the real engine is exercised by tests/integration)."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError, ProgrammingError

from pipeline.core.ingest.aggregates import SketchMapping
from pipeline.core.ingest.batch import BatchProcessor, RawMessage
from pipeline.core.ingest.decode import Decoder
from pipeline.core.ingest.dedup import SeenIds
from pipeline.errors import SinkBackpressure, SinkRejected, SinkStructural, SinkUnavailable
from pipeline.sinks.clickhouse import _classify
from pipeline.sinks.writer import BatchWriter, SinkRetry, _chunks
from pipeline.worker_metrics import PipelineMetrics


def test_connection_errors_are_unavailable_and_too_many_parts_is_backpressure() -> None:
    assert isinstance(_classify(OperationalError("Connection refused"), "insert"), SinkUnavailable)
    bp = _classify(DatabaseError("Code: 252. DB::Exception: Too many parts (300)"), "insert into events")
    assert isinstance(bp, SinkBackpressure) and bp.retry_after > 0
    assert isinstance(_classify(DatabaseError("Code: 53. Type mismatch"), "insert"), SinkRejected)


@pytest.mark.parametrize(
    "exc",
    [
        DatabaseError("Code: 60. DB::Exception: Table taskpulse.events does not exist. (UNKNOWN_TABLE)", code=60),
        DatabaseError("Code: 16. There is no column 'x' in table (NO_SUCH_COLUMN_IN_TABLE)"),
        DatabaseError("Code: 497. DB::Exception: writer: Not enough privileges. (ACCESS_DENIED)"),
        DatabaseError("Code: 164. DB::Exception: Cannot insert in readonly mode. (READONLY)"),
        DatabaseError("Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space. (NOT_ENOUGH_SPACE)"),
        DatabaseError("Code: 241. DB::Exception: Memory limit exceeded. (MEMORY_LIMIT_EXCEEDED)"),
        ProgrammingError("Unrecognized column 'zz' in table taskpulse.events"),
        DatabaseError("some server error nobody classified"),
    ],
)
def test_structural_errors_are_never_blamed_on_rows(exc: Exception) -> None:
    assert isinstance(_classify(exc, "insert into events"), SinkStructural)


def test_client_side_serialization_errors_are_content_and_name_the_column() -> None:
    try:
        try:
            struct.pack("<I", 2**40)
        except struct.error as cause:
            raise DataError("Unable to create native array for column `retry_count`: error") from cause
    except DataError as exc:
        err = _classify(exc, "insert into tasks")
    assert isinstance(err, SinkRejected) and err.column == "retry_count"
    assert "4294967295" in str(err) or "range" in str(err)
    assert isinstance(_classify(UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates"), "insert"), SinkRejected)
    assert isinstance(_classify(AttributeError("'int' object has no attribute 'encode'"), "insert"), SinkRejected)


class _Store:
    """Fails the first ``fails`` inserts with ``error``, then records rows."""

    def __init__(self, error: Exception, fails: int) -> None:
        self.error, self.fails, self.rows = error, fails, 0

    def insert(self, table: str, rows: list[tuple[object, ...]], columns: list[str]) -> None:
        if self.fails:
            self.fails -= 1
            raise self.error
        self.rows += len(rows)


def _out(processor: BatchProcessor):  # type: ignore[no-untyped-def]
    raw = (
        b'{"id":"e1","timestamp":"2025-11-03T10:00:00Z","event_type":"task.completed",'
        b'"entity_type":"task","entity_id":"t1","metrics":{"duration_ms":5}}'
    )
    return processor.process([RawMessage("taskpulse.events.task", 0, 7, raw)], 1_762_170_000_000)


@pytest.mark.parametrize(
    "error",
    [
        SinkBackpressure("slow down", retry_after=0.01),
        SinkUnavailable("connection refused"),
        SinkStructural("Code: 497. ACCESS_DENIED"),
    ],
    ids=["backpressure", "unavailable", "structural"],
)
def test_writer_retries_the_same_batch_until_written(error: Exception) -> None:
    processor = BatchProcessor(Decoder(), SeenIds(1000), SketchMapping())
    store = _Store(error, fails=2)
    writer = BatchWriter(store, producer=None, processor=processor, metrics=PipelineMetrics())  # type: ignore[arg-type]
    writer.retry.max_backoff_s = 0.01
    out = _out(processor)

    async def go() -> None:
        # only the ClickHouse step: the Kafka step needs a broker (covered in integration)
        await writer._events(out, out, datetime.now(UTC))

    asyncio.run(go())
    assert store.rows == 1  # written once, after two refusals
    assert processor.watermarks["events"] == {("taskpulse.events.task", 0): 7}
    if isinstance(error, SinkStructural):
        assert "ACCESS_DENIED" in writer.last_error


def test_a_content_refusal_propagates_from_the_retry() -> None:
    retry = SinkRetry(PipelineMetrics())

    def refuse() -> None:
        raise SinkRejected("type mismatch")

    with pytest.raises(SinkRejected):
        asyncio.run(retry("events", refuse))


def test_output_chunks_stay_under_the_message_limit_and_keep_every_item() -> None:
    items = [b"x" * n for n in (10, 400, 399, 1, 600, 5)]
    chunks = list(_chunks(items, 1000))
    assert [i for c in chunks for i in c] == items
    assert all(2 + sum(len(i) + 1 for i in c) <= 1000 or len(c) == 1 for c in chunks)
