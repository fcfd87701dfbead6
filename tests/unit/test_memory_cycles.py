"""A written batch is freed when the last reference to it goes, not at the cyclic collector's
next full pass: the worker raises the collector's thresholds (fewer passes per batch), so
every batch caught in a reference cycle (20,000 events, their dicts, rows and JSON) piled
up as garbage between two full passes: the soak's RSS sawtooth of several hundred MiB."""

from __future__ import annotations

import gc
import sys
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from pipeline.core.ingest.aggregates import SketchMapping
from pipeline.core.ingest.batch import BatchProcessor, RawMessage
from pipeline.core.ingest.decode import Decoder
from pipeline.core.ingest.dedup import SeenIds
from pipeline.core.ingest.rows import event_lines, rollup_rows
from tests.unit.helpers import DAY0_MS, TOPIC, dumps, iso, make_event

NOW = DAY0_MS + 2 * 86_400_000


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic collector off (what is freed is freed by reference counting), with the
    garbage from before the test collected first."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _messages(n: int, per_msg: int, t0_ms: int = DAY0_MS) -> list[RawMessage]:
    return [
        RawMessage(TOPIC, m % 2, m, dumps([
            make_event(f"c{m}-{k}", "task.completed", iso(t0_ms + (m * per_msg + k) * 1000),
                       state={"agent_id": f"a{k % 3}"}, metadata={"tags": ["x"] * 3, "n": [[[1]]]})
            for k in range(per_msg)
        ]))
        for m in range(n)
    ]  # fmt: skip


@pytest.mark.parametrize("max_rows", [1_000, 10], ids=["one segment", "several segments"])
def test_a_processed_batch_is_no_reference_cycle(no_collector: None, max_rows: int) -> None:
    proc = BatchProcessor(Decoder(), SeenIds(10_000), SketchMapping(), max_rows=max_rows)
    out = proc.process(_messages(12, 5), NOW)
    assert out.accepted == 60
    parts = out.segments or [out]  # what the writer writes (``out.parts``)
    assert sum(len(p.events) for p in parts) == 60
    assert (len(parts) == 1) == (max_rows == 1_000)
    for part in parts:
        for sink in ("events", "rollups"):
            proc.committed(part, sink)
    del out, part, parts
    assert gc.collect() == 0  # nothing was left for the collector


def test_the_one_segment_of_a_small_batch_is_the_batch() -> None:
    out = BatchProcessor(Decoder(), SeenIds(100), SketchMapping()).process(_messages(3, 2), NOW)
    assert out.segments == [] and out.parts == [out]


class _Rows(list[tuple[object, ...]]):
    """A list a weak reference can point at."""


def test_an_insert_frees_its_rows(tmp_path: Path, no_collector: None) -> None:
    from pipeline.sinks.clickhouse import ClickHouseStore

    store = ClickHouseStore(f"chdb://{tmp_path / 'ch'}", "taskpulse")
    try:
        store.ensure_schema(True, "test")
        proc = BatchProcessor(Decoder(), SeenIds(10_000), SketchMapping())
        now_ms = int(time.time() * 1000)
        out = proc.process(_messages(20, 5, now_ms - 3_600_000), now_ms)  # within the events' TTL
        # the rollups go in as Native row tuples through the client's InsertContext (the
        # events as JSON lines, which no client object keeps)
        rows = _Rows(rollup_rows(out.rollups, out.offsets.get("rollups", {}), datetime.now(UTC), out.logs))
        n = len(rows)
        alive, first = weakref.ref(rows), rows[0]
        store.insert_rollups(rows)
        del rows
        assert alive() is None
        assert sys.getrefcount(first) == 2  # ``first`` and the call's argument: no list holds the row
        gc.enable()  # chDB's result streams are freed by the collector: a query's must be closed
        assert store.rows("SELECT count() FROM taskpulse.rollups") == [(n,)]
        assert store.rows("SELECT sum(count) FROM taskpulse.rollups WHERE granularity = '1m'") == [(100,)]
        store.insert_events(event_lines(out.events))
        assert store.rows("SELECT count(), uniqExact(id) FROM taskpulse.events") == [(100, 100)]
        stored = store.rows("SELECT id, metadata FROM taskpulse.events ORDER BY id")
        assert stored == sorted((a.id, dumps(orjson.loads(a.payload)["metadata"]).decode()) for a in out.events)
    finally:
        store.close()
