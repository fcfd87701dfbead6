"""The ingest role: raw topics → validate, normalize, dedup, aggregate → sinks → commit.

Wiring only: the work is ``BatchProcessor`` (pure) and ``BatchWriter`` (sinks); the
checkpoint (``runtime.Checkpoint``) writes each micro-batch everywhere before its offsets
may be committed.  Two engines read the raw topics (``TASKPULSE_INGEST_ENGINE``): an aiokafka
batch loop hosted by the Faust worker (``direct``, the default: no per-message Faust cost)
or a Faust agent (``faust``, kept as a fallback); both hand their batches to the same
``_Ingest.batch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import Counter
from typing import Any

import faust
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.app import Pipeline
from pipeline.core.ingest.aggregates import SketchMapping
from pipeline.core.ingest.batch import BatchOutput, BatchProcessor, RawMessage
from pipeline.core.ingest.decode import Decoder, Limits
from pipeline.core.ingest.dedup import SeenIds
from pipeline.core.ingest.dimcap import DimensionCap
from pipeline.core.ingest.logs import select_marks, went_back
from pipeline.core.timestamps import to_epoch_ms
from pipeline.errors import SinkUnavailable, TaskpulseError
from pipeline.roles import runtime
from pipeline.settings import Settings
from pipeline.sinks.kafka import OutputProducer
from pipeline.sinks.kafka_identity import topic_identities
from pipeline.sinks.privacy import ErasureList, privacy_of
from pipeline.sinks.writer import BatchWriter
from pipeline.topics import RAW_TOPICS

log = logging.getLogger(__name__)
Step = runtime.Step


def decode_limits(settings: Settings) -> Limits:
    """The decoder's bounds from the settings (TASKPULSE_MAX_*, TASKPULSE_MIN_EVENT_TIME)."""
    return Limits(
        max_message_bytes=settings.max_message_bytes,
        max_future_skew_ms=int(settings.max_future_skew_s * 1000),
        min_event_ms=to_epoch_ms(settings.min_event_time.isoformat()),
        max_depth=settings.max_depth,
        max_array_elements=settings.max_array_elements,
        max_id_length=settings.max_id_length,
        max_dimension_length=settings.max_dimension_length,
    )


class _Ingest:
    """The processor, the writer and what the role learned at start and keeps between batches."""

    def __init__(self, p: Pipeline) -> None:
        s = p.settings
        self.p = p
        self.processor = BatchProcessor(
            Decoder(limits=decode_limits(s), privacy=privacy_of(s), keep_original=s.dlq_keep_original),
            SeenIds(s.dedup_capacity),
            SketchMapping(s.sketch_relative_accuracy),
            max_rows=s.insert_max_rows,
            max_bytes=s.insert_max_bytes,
            caps=DimensionCap(s.rollup_max_dimension_values, s.rollup_cap_windows),
        )
        self.producer = OutputProducer(p.kafka_servers, client_kwargs=p.kafka_kwargs)
        self.writer = BatchWriter(p.store, self.producer, self.processor, p.metrics)
        self.checkpoint = runtime.Checkpoint()
        self.erasures = ErasureList(p.store, s.erasure_refresh_s)
        self.ready = False
        self.reload_watermarks = True
        self.consumed_messages = 0
        self.consumed_events = 0
        self.rejected_by_reason: Counter[str] = Counter()
        self.duplicates = 0
        self.accepted = 0
        self.replayed = 0

    async def batch(self, msgs: list[RawMessage], ack: Step) -> BatchOutput:
        """Process one micro-batch and hand it to the checkpoint (written, then ``ack``)."""
        if self._went_back(msgs):
            await self.checkpoint.wait()  # its offsets count in the log it was read from
            self._rewind(msgs)
            self.reload_watermarks = True  # a replay, or a log that started again
        await runtime.until_ready(self._prepare, "start-up reads", self._sink_error)
        now = time.time()
        out = self.processor.process(msgs, int(now * 1000))
        for msg in msgs:  # memory: past here the batch needs its output, not the raw bytes
            msg.value = None
        await self.erasures.refresh()  # privacy hook: nothing naming an erased person is written
        self.erasures.drop_erased(out)
        await self.checkpoint.commit(lambda: self._write_or_exit(out), ack, lambda: self._account(msgs, out, now))
        return out

    async def stop(self) -> None:
        self.checkpoint.cancel()
        await self.producer.stop()

    def _sink_error(self, text: str) -> None:
        self.writer.last_error = text

    async def _prepare(self) -> None:
        """Before the first batch (and after a rebalance): start the output producer, warm the
        dedup memory, read the raw topics' log identities and load the watermarks written from
        those logs."""
        if not self.ready:
            await self.producer.start()
            ids = await asyncio.to_thread(self.p.store.recent_ids, self.p.settings.dedup_capacity)
            self.processor.seen.preload(ids)
            log.info("dedup memory warmed with %d ids", len(ids))
            del ids
            gc.freeze()  # start-up objects (and the warmed id map) are never garbage
            self.ready = True
        if self.reload_watermarks:
            await self._load_watermarks()
            self.reload_watermarks = False

    async def _load_watermarks(self) -> None:
        """Read which log each raw topic is now (cluster and topic id) and the watermarks
        written from those logs; watermarks of any other log (a previous embedded broker, a
        deleted topic) are not used, so their offsets skip nothing."""
        topics = list(RAW_TOPICS.values())
        logs = await topic_identities(self.p.kafka_servers, topics, client_kwargs=self.p.kafka_kwargs)
        missing = [t for t in topics if t not in logs]
        if missing:
            raise SinkUnavailable(f"Kafka does not report the topics {missing} (yet)")
        stored = await asyncio.to_thread(self.p.store.watermarks)
        processor = self.processor
        changed = {t: lg for t, lg in logs.items() if processor.logs.get(t) not in (None, lg)}
        if changed:
            log.warning("raw topics now read from other logs (recreated topic or fresh broker): %s", changed)
        processor.use_logs(logs, select_marks(stored, logs))
        log.info("log identities %s; watermarks %s", logs, processor.watermarks)

    async def _write_or_exit(self, out: BatchOutput) -> None:
        """Write a batch to every sink.  Outages and structural refusals are retried inside
        until it is written; rows refused for their content are dead-lettered inside; any
        other error exits (``runtime.or_exit``)."""
        await runtime.or_exit(lambda: self.writer.write(out), "a batch")

    def _went_back(self, msgs: list[RawMessage]) -> bool:
        return bool(went_back(((m.topic, m.partition, m.offset) for m in msgs), self.p.last_offsets))

    def _rewind(self, msgs: list[RawMessage]) -> None:
        """The position shown for a partition that went back (lag) moves back with it, so a
        replay triggers one reload, not one per batch."""
        last = self.p.last_offsets
        for tp, off in went_back(((m.topic, m.partition, m.offset) for m in msgs), last).items():
            last[tp] = off - 1

    def _account(self, msgs: list[RawMessage], out: BatchOutput, now: float) -> None:
        m, p = self.p.metrics, self.p
        self.consumed_messages += len(msgs)
        self.consumed_events += out.accepted + out.rejected_count + out.duplicates
        runtime.record_offsets(p.last_offsets, ((msg.topic, msg.partition, msg.offset) for msg in msgs))
        for topic, n in Counter(msg.topic for msg in msgs).items():
            m.messages.labels(topic).inc(n)
        m.batch_messages.observe(len(msgs))
        m.accepted.inc(out.accepted)
        m.duplicates.inc(out.duplicates)
        m.replayed.inc(out.replayed)
        self.accepted += out.accepted
        self.duplicates += out.duplicates
        self.replayed += out.replayed
        for r in out.rejected:
            m.rejected.labels(r.reason.value).inc()
            self.rejected_by_reason[r.reason.value] += 1
        for r in out.unwritable:  # refused at write time (the writer counted the metric)
            self.rejected_by_reason[r.reason.value] += 1
        for dim, n in out.folded.items():
            m.rollup_folded.labels(dim).inc(n)
        if out.max_event_time_ms is not None:
            m.event_delay.observe(max(0.0, now - out.max_event_time_ms / 1000))
        for topic, lag in p.lag().items():
            m.consumer_lag.labels(topic).set(lag)

    async def status(self) -> dict[str, Any]:
        p, writer = self.p, self.writer
        try:
            tables = await asyncio.to_thread(p.store.table_counts)
        except TaskpulseError as exc:
            tables = {"error": str(exc)}  # type: ignore[dict-item]
        return {
            "uptime_s": round(time.time() - p.started_at, 1),
            "ready": self.ready,
            "messages_consumed": self.consumed_messages,
            "events_consumed": self.consumed_events,
            "events_accepted": self.accepted,
            "duplicates": self.duplicates,
            "replayed_messages": self.replayed,
            "rejected": dict(self.rejected_by_reason),
            "rows_written": dict(writer.rows_written),
            "rollup_dimension_folded": dict(self.processor.caps.folded),
            "dlq_rows_refused": writer.dlq_dropped,
            "table_rows": tables,
            "lag": p.lag(),
            "backpressure": writer.unavailable_since is not None,
            "last_sink_error": writer.last_error,
            "dedup_ids": len(self.processor.seen),
        }


def register(p: Pipeline) -> None:
    """Define the ingest loop (engine ``faust`` or ``direct``) and its /api/status section."""
    role = _Ingest(p)
    if p.settings.ingest_engine == "direct":
        _register_direct(p, role)
    else:
        _register_faust_agent(p, role)
    p.status_sections["ingest"] = role.status
    p.lag_topics.update(RAW_TOPICS.values())


def _register_faust_agent(p: Pipeline, role: _Ingest) -> None:
    """The ``faust`` engine: a Faust agent over the raw topics, in ``noack_take`` micro-batches."""
    app, settings = p.app, p.settings
    source = app.topic(*RAW_TOPICS.values(), value_type=bytes, key_type=bytes)

    @app.on_partitions_assigned.connect  # type: ignore[misc,arg-type]
    async def _on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        role.reload_watermarks = True

    async def ingest(stream: faust.StreamT) -> None:  # type: ignore[name-defined]
        try:
            async for events in stream.noack_take(settings.batch_max, settings.batch_within_s):  # type: ignore[attr-defined]  # noqa: E501
                msgs = [
                    RawMessage(e.message.topic, e.message.partition, e.message.offset, e.message.value)
                    for e in events
                ]
                await role.batch(msgs, runtime.faust_acker(stream, list(events), p.last_offsets))
        finally:
            await role.stop()

    app.agent(source, name="taskpulse.ingest")(ingest)


def _register_direct(p: Pipeline, role: _Ingest) -> None:
    """The ``direct`` engine (the default): a plain aiokafka consumer loop hosted by the Faust worker.

    Same processor, same writer, same guarantees; it skips Faust's per-message stream
    machinery (a loop turn, a queue hand-off and ack bookkeeping per message), which on a
    2-core machine costs more than processing the event itself.  Offsets are committed
    explicitly, per batch, after the batch is written.  Its consumer group is
    ``<TASKPULSE_CONSUMER_GROUP>-ingest``.
    """
    settings = p.settings

    class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            with contextlib.suppress(Exception):  # finish (write and commit) what we hold before letting go
                await role.checkpoint.wait()

        async def on_partitions_assigned(self, assigned: Any) -> None:
            role.reload_watermarks = True

    @p.app.task  # type: ignore[misc]
    async def direct_ingest() -> None:
        consumer = runtime.consumer(
            p, "ingest", RAW_TOPICS.values(), Rebalance(), auto_commit=False, max_poll_records=50_000,
            fetch_max_bytes=16 * 1024 * 1024, max_partition_fetch_bytes=4 * 1024 * 1024,
        )  # fmt: skip
        await consumer.start()
        p.consumers.append(consumer)

        def committer(offsets: dict[TopicPartition, int]) -> Step:
            async def commit() -> None:
                try:
                    await consumer.commit(offsets)  # only now: the batch is written
                except KafkaError as exc:
                    # Lost the partitions mid-batch: the new owner replays from the last commit
                    # and the watermarks skip what this batch already wrote.
                    log.warning("offset commit failed (%r); the batch will be replayed, not double counted", exc)

            return commit

        # Batches are sized in events, not messages: single-event messages need many per
        # batch (each batch costs three INSERTs), SDK arrays need few (memory).  Until the
        # first batch says how many events a message holds, assume big arrays (a first
        # batch of 20,000 SDK arrays would hold 2,000,000 events at once).
        events_per_msg = 100.0
        try:
            while True:
                max_records = max(10, min(50_000, int(settings.batch_events / events_per_msg)))
                batch = await consumer.getmany(
                    timeout_ms=int(settings.batch_within_s * 1000), max_records=max_records
                )
                if not batch:
                    continue
                msgs = [
                    RawMessage(tp.topic, tp.partition, r.offset, r.value)
                    for tp, records in batch.items()
                    for r in records
                ]
                offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
                del batch
                out = await role.batch(msgs, committer(offsets))
                seen = out.accepted + out.rejected_count + out.duplicates
                if seen:  # up at once (memory), down by halves
                    observed = max(1.0, seen / len(msgs))
                    events_per_msg = max(observed, 0.5 * events_per_msg + 0.5 * observed)
        finally:
            role.checkpoint.cancel()
            await consumer.stop()
            await role.stop()
