"""Write one processed batch to every sink, in order, before its offsets may be acked.

Per segment of the batch (``BatchOutput.parts``: each within the INSERT limits, cut at
Kafka-message boundaries), in order: Kafka outputs (normalized events, DLQ, rollups), then
the ``dlq``, ``events`` and ``rollups`` tables.  A sink that is unavailable, or that refuses
every write for a structural reason (unknown table or column, access, read-only, disk),
is retried with backoff for the same segment for as long as it takes (backpressure:
nothing new is consumed meanwhile).  ClickHouse parts carry their watermarks, so a crash at
any point replays without double counting.

A table that refuses rows for their *content* never stops the pipeline: ``write_rows``
finds the refused rows (by halves, against the table's ``Null`` twin: nothing is written
while searching), dead-letters them with reason ``unwritable`` first, then writes every
other row in one INSERT.  A refused row's dead letter is therefore written at least once
(twice if the worker dies between the two steps), and the kept rows exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

from pipeline.backoff import Backoff
from pipeline.core.ingest.batch import MAX_EVENT_BYTES, BatchOutput, BatchProcessor
from pipeline.core.ingest.rows import (
    DLQ_COLUMNS,
    EVENT_JSON,
    ROLLUP_COLUMNS,
    JsonRows,
    dlq_rows,
    event_lines,
    rollup_json,
    rollup_rows,
    rows_without,
)
from pipeline.errors import SinkBackpressure, SinkRejected, SinkStructural, SinkUnavailable
from pipeline.events import Rejected, RejectReason, Source
from pipeline.settings import redact
from pipeline.sinks.clickhouse import ClickHouseStore
from pipeline.sinks.kafka import OutputProducer
from pipeline.topics import DLQ, NORMALIZED, ROLLUPS
from pipeline.worker_metrics import PipelineMetrics

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
Row = tuple[Any, ...]
#: (row index, the sink's refusal)
Refusals = list[tuple[int, SinkRejected]]

#: Largest JSON-array message the writer publishes (Kafka's default message limit is 1 MB).
MAX_OUTPUT_BYTES = MAX_EVENT_BYTES
#: Target size of a normalized-topic message (events are grouped up to it; a bigger event
#: goes alone).  Small enough that a consumer's batch of messages stays a few MiB (the
#: correlation and metrics roles hold a batch decoded), big enough that the per-message cost
#: of a consumer (Faust: about 100 µs) is under a microsecond per event.
NORMALIZED_MESSAGE_BYTES = 64 * 1024
#: A structural error is logged at ERROR at most this often while it is retried.
_LOUD_EVERY_S = 30.0


def _chunks(items: list[bytes], max_bytes: int) -> Iterator[list[bytes]]:
    """Consecutive groups of items whose joined size stays under ``max_bytes``."""
    chunk: list[bytes] = []
    size = 2
    for item in items:
        if chunk and size + len(item) + 1 > max_bytes:
            yield chunk
            chunk, size = [], 2
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        yield chunk


class SinkRetry:
    """Runs one sink step until it is written, and returns its result.  An unavailable sink
    is retried with backoff for as long as it takes (the caller holds its batch meanwhile:
    backpressure); so is a structural refusal (logged at ERROR, shown as ``last_error``:
    an operator must act, and the data must not be dead-lettered for it); a sink that asks
    to slow down is retried after its ``retry_after``; a content refusal propagates (the
    caller isolates the rows)."""

    def __init__(
        self, metrics: PipelineMetrics, max_backoff_s: float = 5.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.metrics = metrics
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.unavailable_since: float | None = None
        self.last_error: str = ""
        self._last_loud = -_LOUD_EVERY_S

    async def __call__(self, name: str, step: Callable[[], Any]) -> Any:
        backoff = Backoff(0.2, self.max_backoff_s)
        while True:
            try:
                result = step()
                if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                    result = await result
                if self.unavailable_since is not None:
                    log.warning(
                        "sink %s is back after %.1fs; resuming", name, self.clock() - self.unavailable_since
                    )
                    self.unavailable_since = None
                    self.metrics.backpressure.set(0)
                return result
            except SinkBackpressure as exc:
                self.metrics.write_errors.labels(name).inc()
                log.info("%s; retrying in %.1fs", exc, exc.retry_after)
                await asyncio.sleep(exc.retry_after)
            except (SinkUnavailable, SinkStructural) as exc:
                self.metrics.write_errors.labels(name).inc()
                self.last_error = redact(str(exc))
                if self.unavailable_since is None:
                    self.unavailable_since = self.clock()
                    self.metrics.backpressure.set(1)
                    if isinstance(exc, SinkUnavailable):
                        log.warning("%s; holding the batch and retrying", exc)
                if isinstance(exc, SinkStructural) and self.clock() - self._last_loud >= _LOUD_EVERY_S:
                    self._last_loud = self.clock()
                    log.error(
                        "%s — this is not an outage and no row is to blame: fix the table, grants or "
                        "server; the batch is held and retried meanwhile", exc
                    )
                await backoff.sleep()
            except SinkRejected:
                self.metrics.write_errors.labels(name).inc()
                raise


def unwritable(where: str, exc: SinkRejected | Exception, source: Source, original: bytes, event_id: str) -> Rejected:
    """The DLQ entry of an item a sink refused: names the table (and column) and the error."""
    column = getattr(exc, "column", None)
    place = f"{where}.{column}" if column else where
    return Rejected(
        reason=RejectReason.unwritable,
        detail=f"{place}: {exc}"[:2000],
        source=source,
        original=original,
        event_id=event_id or None,
    )


def build_rows(
    build: Callable[[Sequence[T]], list[R]], items: Sequence[T]
) -> tuple[list[R], list[T], list[tuple[T, Exception]]]:
    """Rows for ``items``; an item the row builder raises on is set apart with its error
    (per item, only when the whole batch fails).  Returns (rows, their items, failures)."""
    try:
        return build(items), list(items), []
    except Exception:  # noqa: BLE001 - a builder that refuses a value: find the item
        rows: list[R] = []
        kept: list[T] = []
        failed: list[tuple[T, Exception]] = []
        for item in items:
            try:
                rows.extend(build([item]))
                kept.append(item)
            except Exception as exc:  # noqa: BLE001
                failed.append((item, exc))
        return rows, kept, failed


async def write_rows(
    retry: SinkRetry,
    store: ClickHouseStore,
    table: str,
    rows: list[R],
    columns: list[str] | JsonRows,
    dead_letter: Callable[[Refusals], Awaitable[None]],
    keep: Callable[[list[R], set[int]], list[R]] | None = None,
) -> Refusals:
    """Insert ``rows`` (tuples, or JSONEachRow lines for a ``JsonRows``); if the table refuses
    some for their content, dead-letter those first (``dead_letter``), then insert the rest
    (``keep`` picks them; default: every other row) in one INSERT.  Outages and structural
    errors are retried by ``retry``."""
    if not rows:
        return []

    def attempt() -> Refusals:
        try:
            store.insert(table, rows, columns)
            return []
        except SinkRejected as first:
            refused = store.refused_rows(table, rows, columns)
            if not refused:
                raise SinkStructural(
                    f"{first}; yet no row is refused on its own (a constraint or view on the table?)"
                ) from first
            return refused

    refused: Refusals = await retry(table, lambda: asyncio.to_thread(attempt))
    if not refused:
        return []
    bad = {i for i, _ in refused}
    log.warning("%s refused %d of %d rows for their content; dead-lettered as unwritable", table, len(bad), len(rows))
    await dead_letter(refused)
    kept = keep(rows, bad) if keep else [r for i, r in enumerate(rows) if i not in bad]

    def insert_kept() -> None:
        try:
            store.insert(table, kept, columns)
        except SinkRejected as exc:
            raise SinkStructural(f"{exc}; rows the probe accepted were refused by {table}") from exc

    await retry(table, lambda: asyncio.to_thread(insert_kept))
    return refused


class BatchWriter:
    """Writes BatchOutputs; tracks totals for the status view."""

    def __init__(
        self,
        store: ClickHouseStore,
        producer: OutputProducer,
        processor: BatchProcessor,
        metrics: PipelineMetrics,
        max_backoff_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.producer = producer
        self.processor = processor
        self.metrics = metrics
        self.retry = SinkRetry(metrics, max_backoff_s, clock)
        self.rows_written: dict[str, int] = defaultdict(int)
        #: DLQ rows the dlq table itself refused (logged; nowhere else to put them)
        self.dlq_dropped = 0

    @property
    def unavailable_since(self) -> float | None:
        return self.retry.unavailable_since

    @property
    def last_error(self) -> str:
        return self.retry.last_error

    @last_error.setter
    def last_error(self, value: str) -> None:
        self.retry.last_error = redact(value)

    async def write(self, out: BatchOutput) -> None:
        for seg in out.parts:
            await self._write_segment(seg, out)

    async def _write_segment(self, seg: BatchOutput, total: BatchOutput) -> None:
        now = datetime.now(UTC)
        if seg.events or seg.rejected or seg.rollups:
            await self.retry("kafka", lambda: self._kafka(seg))
        if seg.rejected:
            await self._insert_dlq(dlq_rows(seg.rejected, now, seg.logs))
            self.processor.committed(seg, "dlq")
        if seg.events:
            await self._events(seg, total, now)
        if seg.rollups:
            await self._rollups(seg, total, now)

    async def _timed(self, table: str, n: int, step: Awaitable[T]) -> T:
        t0 = time.perf_counter()
        result = await step
        self.metrics.write_seconds.labels(table).observe(time.perf_counter() - t0)
        self.metrics.rows.labels(table).inc(n)
        self.rows_written[table] += n
        return result

    async def _events(self, seg: BatchOutput, total: BatchOutput, now: datetime) -> None:
        rows, items, failed = build_rows(event_lines, seg.events)
        letters = [
            unwritable("events", exc, Source(topic=a.topic, partition=a.partition, offset=a.offset, index=a.index),
                       a.payload, a.id)
            for a, exc in failed
        ]  # fmt: skip
        if letters:
            await self.dead_letter(letters, total)

        async def refused(found: Refusals) -> None:
            await self.dead_letter(
                [
                    unwritable("events", exc, Source(topic=a.topic, partition=a.partition, offset=a.offset,
                               index=a.index), a.payload, a.id)
                    for i, exc in found
                    for a in (items[i],)
                ],
                total,
            )  # fmt: skip

        found = await self._timed(
            "events", len(rows), write_rows(self.retry, self.store, "events", rows, EVENT_JSON, refused)
        )
        self.rows_written["events"] -= len(found)
        self.processor.committed(seg, "events")

    async def _rollups(self, seg: BatchOutput, total: BatchOutput, now: datetime) -> None:
        offsets = seg.offsets.get("rollups", {})
        keys = list(seg.rollups)
        rows = rollup_rows(seg.rollups, offsets, now, seg.logs)

        async def refused(found: Refusals) -> None:
            letters = []
            for i, exc in found:
                key = keys[i]
                topic, partition, offset, index, event_id = seg.rollup_origins.get(key, ("", 0, -1, 0, ""))
                source = Source(topic=topic, partition=partition, offset=offset, index=index)
                letters.append(unwritable("rollups", exc, source, rollup_json(key, seg.rollups[key]), event_id))
            await self.dead_letter(letters, total)

        def keep(all_rows: list[Row], bad: set[int]) -> list[Row]:
            return rows_without(all_rows, bad, offsets, now, seg.logs)

        found = await self._timed(
            "rollups", len(rows),
            write_rows(self.retry, self.store, "rollups", rows, ROLLUP_COLUMNS, refused, keep),
        )  # fmt: skip
        self.rows_written["rollups"] -= len(found)
        self.processor.committed(seg, "rollups")

    async def _insert_dlq(self, rows: list[Row]) -> None:
        async def dropped(found: Refusals) -> None:
            # The DLQ is the last resort: a row it refuses can only be logged.
            self.dlq_dropped += len(found)
            for i, exc in found:
                log.error("the dlq table refused a dead letter (%s, %s:%s): %s", rows[i][1], rows[i][5],
                          rows[i][7], exc)  # fmt: skip

        step = write_rows(self.retry, self.store, "dlq", rows, DLQ_COLUMNS, dropped)
        found = await self._timed("dlq", len(rows), step)
        self.rows_written["dlq"] -= len(found)

    async def dead_letter(self, letters: list[Rejected], total: BatchOutput | None = None) -> None:
        """Dead-letter write-time refusals (before the rows they were taken from are
        written, so a crash in between cannot lose them)."""
        self.dlq_dropped += await dead_letter(self.retry, self.store, self.producer, self.metrics, letters)
        if total is not None:
            total.unwritable.extend(letters)

    async def _kafka(self, out: BatchOutput) -> None:
        p = self.producer
        if out.events:
            parts = await p.partitions_for(NORMALIZED)
            grouped: dict[int, list[bytes]] = defaultdict(list)
            # an entity's events come in runs (a task has ~14): murmur2 in pure Python is
            # ~5 µs a key, so each entity is hashed once a batch
            part_of: dict[str, int] = {}
            for a in out.events:
                entity = a.entity_id
                part = part_of.get(entity)
                if part is None:
                    part = part_of[entity] = p.partition_of(entity.encode(), parts)
                # serialized once, by the processor (an event orjson refuses never gets here)
                grouped[part].append(a.payload)
            for part, items in grouped.items():
                for chunk in _chunks(items, NORMALIZED_MESSAGE_BYTES):
                    await p.send(NORMALIZED, b"[" + b",".join(chunk) + b"]", partition=part)
        for r in out.rejected:
            await p.send(DLQ, dlq_message(r))
        if out.rollups:
            items = []
            for (g, ws, dims), m in out.rollups.items():
                doc = {"granularity": g, "window_start_ms": ws, "dims": dims, **m.result(self.processor.mapping),
                       "sketch": m.sketch}  # fmt: skip
                try:
                    items.append(orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS))
                except (TypeError, ValueError) as exc:  # the table keeps the row; the topic skips it
                    log.error("rollup %s %s %s cannot be serialized for %s: %s", g, ws, dims, ROLLUPS, exc)
            for chunk in _chunks(items, MAX_OUTPUT_BYTES):
                await p.send(ROLLUPS, b"[" + b",".join(chunk) + b"]")
        await p.flush()


async def dead_letter(
    retry: SinkRetry,
    store: ClickHouseStore,
    producer: OutputProducer,
    metrics: PipelineMetrics,
    letters: list[Rejected],
) -> int:
    """Send refusals to the DLQ topic and the ``dlq`` table, logged and counted; returns how
    many the ``dlq`` table itself refused (logged: there is nowhere else to put them)."""
    if not letters:
        return 0
    for r in letters:
        log.warning("unwritable: %s (source %s:%d@%d)", r.detail[:300], r.source.topic, r.source.partition,
                    r.source.offset)  # fmt: skip
        metrics.rejected.labels(RejectReason.unwritable.value).inc()

    async def publish() -> None:
        for r in letters:
            await producer.send(DLQ, dlq_message(r))
        await producer.flush()

    await retry("kafka", publish)
    rows = dlq_rows(letters, datetime.now(UTC))

    async def dropped(found: Refusals) -> None:
        for i, exc in found:
            log.error("the dlq table refused a dead letter (%s, %s:%s): %s", rows[i][1], rows[i][5], rows[i][7], exc)

    return len(await write_rows(retry, store, "dlq", rows, DLQ_COLUMNS, dropped))


def dlq_message(r: Rejected) -> bytes:
    """A DLQ topic message.  Always serializable (text sanitized) and within the output
    limit (a huge original is cut here; the ``dlq`` table keeps it whole)."""
    original = r.original
    if len(original) > MAX_OUTPUT_BYTES // 3:
        original = original[: MAX_OUTPUT_BYTES // 3]
    doc = {
        "reason": r.reason.value,
        "detail": r.detail,
        "event_id": r.event_id,
        "source": r.source.model_dump(),
        "original": original.decode("utf-8", errors="replace"),
        "original_b64": base64.b64encode(original).decode(),
        "original_bytes": len(r.original),
    }
    try:
        return orjson.dumps(doc)
    except TypeError:  # lone surrogates in a detail or id
        doc["detail"] = r.detail.encode("utf-8", "replace").decode()
        doc["event_id"] = (r.event_id or "").encode("utf-8", "replace").decode()
        return orjson.dumps(doc)
