"""The ingest role: raw topics → validate, normalize, dedup, aggregate → sinks → commit.

Thin on purpose: the work is ``BatchProcessor`` (pure) and ``BatchWriter`` (sinks).  Each
micro-batch is written everywhere before its offsets may be committed.  Two engines read
the raw topics (``TASKPULSE_INGEST_ENGINE``): a Faust agent (``faust``, the default) or a
plain aiokafka loop hosted by the same Faust worker (``direct``).  """

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections import Counter
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from pipeline.app import Pipeline
from pipeline.core.ingest.batch import RawMessage
from pipeline.core.ingest.logs import select_marks, went_back
from pipeline.errors import SinkUnavailable, TaskpulseError
from pipeline.settings import kafka_bootstrap
from pipeline.sinks.kafka_identity import topic_identities
from pipeline.topics import RAW_TOPICS

log = logging.getLogger(__name__)


class _State:
    """What the agent learned at start and keeps between batches."""

    def __init__(self) -> None:
        self.ready = False
        self.producer_started = False
        self.reload_watermarks = True
        self.rejected_by_reason: Counter[str] = Counter()
        self.duplicates = 0
        self.accepted = 0
        self.replayed = 0


async def _load_watermarks(p: Pipeline) -> None:
    """Read which log each raw topic is now (cluster and topic id) and the watermarks
    written from those logs; watermarks of any other log (a previous embedded broker, a
    deleted topic) are not used, so their offsets skip nothing."""
    topics = list(RAW_TOPICS.values())
    logs = await topic_identities(kafka_bootstrap(p.kafka_url), topics, client_kwargs=p.kafka_kwargs)
    missing = [t for t in topics if t not in logs]
    if missing:
        raise SinkUnavailable(f"Kafka does not report the topics {missing} (yet)")
    stored = await asyncio.to_thread(p.store.watermarks)
    changed = {t: lg for t, lg in logs.items() if p.processor.logs.get(t) not in (None, lg)}
    if changed:
        log.warning("raw topics now read from other logs (recreated topic or fresh broker): %s", changed)
    p.processor.use_logs(logs, select_marks(stored, logs))
    log.info("log identities %s; watermarks %s", logs, p.processor.watermarks)


async def _prepare(p: Pipeline, st: _State) -> None:
    """Before the first batch (and after a rebalance): start the output producer, warm the
    dedup memory, read the raw topics' log identities and load the watermarks written from
    those logs.  Waits out a ClickHouse or Kafka outage."""
    delay = 0.2
    while True:
        try:
            if not st.ready:
                if not st.producer_started:
                    await p.producer.start()
                    st.producer_started = True
                ids = await asyncio.to_thread(p.store.recent_ids, p.settings.dedup_capacity)
                p.processor.seen.preload(ids)
                log.info("dedup memory warmed with %d ids", len(ids))
                del ids
                gc.freeze()  # start-up objects (and the warmed id map) are never garbage
                st.ready = True
            if st.reload_watermarks:
                await _load_watermarks(p)
                st.reload_watermarks = False
            return
        except SinkUnavailable as exc:
            log.warning("%s; retrying start-up reads in %.1fs", exc, delay)
            p.writer.last_error = str(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _write_or_exit(p: Pipeline, out: Any) -> None:
    """Write a batch to every sink.  Outages and structural refusals are retried inside
    until it is written; rows refused for their content are dead-lettered inside."""
    try:
        await p.writer.write(out)
    except asyncio.CancelledError:
        raise
    except Exception:
        # None of the above: a bug or a client in a broken state, which a fresh process
        # may cure.  Stalling would hide it; skipping would lose data.  Exit, so that a
        # restart replays the batch from the last committed offset (the watermarks keep
        # that exact).
        log.critical("cannot write a batch; exiting so it is replayed", exc_info=True)
        logging.shutdown()
        os._exit(70)


def register(p: Pipeline) -> None:
    """Define the ingest loop (engine ``faust`` or ``direct``) and its /api/status section."""
    st = _State()
    if p.settings.ingest_engine == "direct":
        _register_direct(p, st)
    else:
        _register_faust_agent(p, st)

    async def status() -> dict[str, Any]:
        return await _status(p, st)

    p.status_sections["ingest"] = status
    p.lag_topics.update(RAW_TOPICS.values())


def _register_faust_agent(p: Pipeline, st: _State) -> None:
    """The default engine: a Faust agent over the raw topics, in ``noack_take`` micro-batches."""
    app = p.app
    settings = p.settings
    source = app.topic(*RAW_TOPICS.values(), value_type=bytes, key_type=bytes)

    @app.on_partitions_assigned.connect  # type: ignore[misc,arg-type]
    async def _on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        st.reload_watermarks = True

    async def ingest(stream: faust.StreamT) -> None:  # type: ignore[name-defined]
        # Batch N+1 is decoded and aggregated while batch N is being written; writes stay
        # strictly ordered (one in flight), and a batch is acked only once it is written.
        in_flight: asyncio.Task[None] | None = None

        async def write_then_ack(out: Any, events: list[Any], msgs: list[RawMessage], now: float) -> None:  # noqa: E501
            await _write_or_exit(p, out)
            for e in events:  # only now may these offsets be committed
                await stream.ack(e)
            _account(p, st, msgs, out, now)

        try:
            async for events in stream.noack_take(settings.batch_max, settings.batch_within_s):  # type: ignore[attr-defined]  # noqa: E501
                msgs = [
                    RawMessage(e.message.topic, e.message.partition, e.message.offset, e.message.value)
                    for e in events
                ]
                if _went_back(p, msgs):
                    if in_flight is not None:
                        await in_flight  # its offsets count in the log it was read from
                    _rewind(p, msgs)
                    st.reload_watermarks = True  # a replay, or a log that started again
                await _prepare(p, st)
                now = time.time()
                out = p.processor.process(msgs, int(now * 1000))
                if in_flight is not None:
                    await in_flight
                in_flight = asyncio.create_task(write_then_ack(out, list(events), msgs, now))
        finally:
            if in_flight is not None and not in_flight.done():
                in_flight.cancel()
            await p.producer.stop()

    app.agent(source, name="taskpulse.ingest")(ingest)


def _register_direct(p: Pipeline, st: _State) -> None:
    """The ``direct`` engine: a plain aiokafka consumer loop hosted by the Faust worker.

    Same processor, same writer, same guarantees; it skips Faust's per-message stream
    machinery (a loop turn, a queue hand-off and ack bookkeeping per message), which on a
    2-core machine costs more than processing the event itself.  Offsets are committed
    explicitly, per batch, after the batch is written.  Its consumer group is
    ``<TASKPULSE_CONSUMER_GROUP>-ingest``.
    """
    settings = p.settings
    servers = kafka_bootstrap(p.kafka_url)
    pending: list[asyncio.Task[None]] = []  # at most one batch being written and committed

    class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: Any) -> None:
            for task in pending:  # finish (write and commit) what we hold before letting go
                with contextlib.suppress(Exception):
                    await task

        async def on_partitions_assigned(self, assigned: Any) -> None:
            st.reload_watermarks = True

    @p.app.task  # type: ignore[misc]
    async def direct_ingest() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=servers,
            **p.kafka_kwargs,
            group_id=f"{settings.consumer_group}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, settings.session_timeout_s / 3) * 1000),
            max_poll_records=50_000,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        consumer.subscribe(list(RAW_TOPICS.values()), listener=Rebalance())
        await consumer.start()
        p.raw_consumer = consumer

        async def write_then_commit(out: Any, offsets: dict[TopicPartition, int], msgs: list[RawMessage], now: float) -> None:  # noqa: E501
            await _write_or_exit(p, out)
            try:
                await consumer.commit(offsets)  # only now: the batch is written
            except KafkaError as exc:
                # Lost the partitions mid-batch: the new owner replays from the last commit
                # and the watermarks skip what this batch already wrote.
                log.warning("offset commit failed (%r); the batch will be replayed, not double counted", exc)
            _account(p, st, msgs, out, now)

        # Batches are sized in events, not messages: single-event messages need many per
        # batch (each batch costs three INSERTs), SDK arrays need few (memory).
        events_per_msg = 1.0
        try:
            while True:
                max_records = max(100, min(50_000, int(settings.batch_events / events_per_msg)))
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
                if _went_back(p, msgs):
                    if pending:
                        await pending.pop()  # its offsets count in the log it was read from
                    _rewind(p, msgs)
                    st.reload_watermarks = True  # a replay, or a log that started again
                await _prepare(p, st)
                offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
                now = time.time()
                out = p.processor.process(msgs, int(now * 1000))
                seen = out.accepted + out.rejected_count + out.duplicates
                if seen:
                    events_per_msg = 0.7 * events_per_msg + 0.3 * max(1.0, seen / len(msgs))
                if pending:
                    await pending.pop()
                pending.append(asyncio.create_task(write_then_commit(out, offsets, msgs, now)))
        finally:
            for task in pending:
                if not task.done():
                    task.cancel()
            await consumer.stop()
            await p.producer.stop()


def _went_back(p: Pipeline, msgs: list[RawMessage]) -> bool:
    return bool(went_back(((m.topic, m.partition, m.offset) for m in msgs), p.last_offsets))


def _rewind(p: Pipeline, msgs: list[RawMessage]) -> None:
    """The position shown for a partition that went back (lag) moves back with it, so a
    replay triggers one reload, not one per batch."""
    for tp, off in went_back(((m.topic, m.partition, m.offset) for m in msgs), p.last_offsets).items():
        p.last_offsets[tp] = off - 1


def _account(p: Pipeline, st: _State, msgs: list[RawMessage], out: Any, now: float) -> None:
    m = p.metrics
    p.consumed_messages += len(msgs)
    p.consumed_events += out.accepted + out.rejected_count + out.duplicates
    per_topic: Counter[str] = Counter()
    for msg in msgs:
        tp = (msg.topic, msg.partition)
        if msg.offset > p.last_offsets.get(tp, -1):
            p.last_offsets[tp] = msg.offset
        per_topic[msg.topic] += 1
    for topic, n in per_topic.items():
        m.messages.labels(topic).inc(n)
    m.batch_messages.observe(len(msgs))
    m.accepted.inc(out.accepted)
    m.duplicates.inc(out.duplicates)
    m.replayed.inc(out.replayed)
    st.accepted += out.accepted
    st.duplicates += out.duplicates
    st.replayed += out.replayed
    for r in out.rejected:
        m.rejected.labels(r.reason.value).inc()
        st.rejected_by_reason[r.reason.value] += 1
    for r in out.unwritable:  # refused at write time (the writer counted the metric)
        st.rejected_by_reason[r.reason.value] += 1
    for dim, n in out.folded.items():
        m.rollup_folded.labels(dim).inc(n)
    if out.max_event_time_ms is not None:
        m.event_delay.observe(max(0.0, now - out.max_event_time_ms / 1000))
    for topic, lag in p.lag().items():
        m.consumer_lag.labels(topic).set(lag)


async def _status(p: Pipeline, st: _State) -> dict[str, Any]:
    try:
        tables = await asyncio.to_thread(p.store.table_counts)
    except TaskpulseError as exc:
        tables = {"error": str(exc)}  # type: ignore[dict-item]
    return {
        "uptime_s": round(time.time() - p.started_at, 1),
        "ready": st.ready,
        "messages_consumed": p.consumed_messages,
        "events_consumed": p.consumed_events,
        "events_accepted": st.accepted,
        "duplicates": st.duplicates,
        "replayed_messages": st.replayed,
        "rejected": dict(st.rejected_by_reason),
        "rows_written": dict(p.writer.rows_written),
        "rollup_dimension_folded": dict(p.processor.caps.folded),
        "dlq_rows_refused": p.writer.dlq_dropped,
        "table_rows": tables,
        "lag": p.lag(),
        "backpressure": p.writer.unavailable_since is not None,
        "last_sink_error": p.writer.last_error,
        "dedup_ids": len(p.processor.seen),
    }
