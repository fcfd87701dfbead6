"""The metrics role: normalized events, task lifecycle records, rollups and alert state
changes → Prometheus metrics on the worker's ``/metrics``.

A plain aiokafka loop hosted by the Faust worker, in its own consumer group
(``<TASKPULSE_CONSUMER_GROUP>-metrics``), so it reads every record whatever the other
roles do; replicas of the role split the partitions (entity-keyed topics keep a task's
events on one replica) and Prometheus sums them.  Delivery is at-least-once: normalized
events are counted once per id, lifecycle records once per task (higher versions are
corrections).  When it is given partitions of the normalized topic it loads the open
tasks and the agents of those partitions from the correlation tables (``tasks``,
``agent_status``), so the gauges are right after a restart; when it loses partitions
it forgets their tasks and agents (another replica has them now).  A new group starts
from the earliest retained record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import start_http_server

from pipeline.app import Pipeline
from pipeline.core.alerts.queries import live_alerts_query
from pipeline.core.normalized import decode_normalized
from pipeline.core.tasks import queries as task_queries
from pipeline.errors import TaskpulseError
from pipeline.roles import runtime
from pipeline.roles.metrics_series import ExporterMetrics
from pipeline.sinks.kafka import topic_lag
from pipeline.topics import ALERTS, LIFECYCLE, NORMALIZED, ROLLUPS

log = logging.getLogger(__name__)
TOPICS = (NORMALIZED, LIFECYCLE, ROLLUPS, ALERTS)


def register(p: Pipeline) -> None:
    s = p.settings
    m = ExporterMetrics(
        p.registry,
        max_agents=s.metrics_max_agents,
        max_task_types=s.metrics_max_task_types,
        max_tracked_tasks=s.metrics_max_tracked_tasks,
        dedup_capacity=s.metrics_dedup_capacity,
    )
    counts: dict[str, Any] = {"messages": 0, "lag": {}}  # for /api/status

    @p.app.task  # type: ignore[misc]
    async def metrics_exporter() -> None:
        if s.metrics_port:
            start_http_server(s.metrics_port, addr=s.api_host, registry=p.registry)
        partitions = _Partitions(p, m)
        consumer = runtime.consumer(
            p, "metrics", TOPICS, partitions, auto_commit=True, fetch_max_bytes=16 * 1024 * 1024
        )  # a normalized message holds up to 64 KiB: 500 of them a batch, at most 16 MiB a fetch
        partitions.consumer = consumer
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                now = time.time()
                for tp, records in batch.items():
                    m.messages.labels(tp.topic).inc(len(records))
                    counts["messages"] += len(records)
                    for r in records:
                        _apply(m, tp.topic, tp.partition, r.offset, r.value, now)
                fetched = [tp for tp in consumer.assignment() if consumer.highwater(tp) is not None]
                positions = {tp: await consumer.position(tp) for tp in fetched}
                lag = topic_lag(consumer, positions.get)
                for topic, n in lag.items():
                    m.lag.labels(topic).set(n)
                counts["lag"] = lag
        finally:
            await consumer.stop()

    async def status() -> dict[str, Any]:
        return {
            "messages_consumed": counts["messages"],
            "open_tasks": dict(m.tasks.counts),
            "agents": dict(m.agents.by_status()),
            "alerts_firing": dict(m.alerts.counts("firing")),
            "lag": counts["lag"],
        }

    p.status_sections["metrics"] = status


class _Partitions(ConsumerRebalanceListener):  # type: ignore[misc]
    """Loads the open tasks and agents of newly assigned normalized partitions from
    ClickHouse, forgets those of revoked ones (entities are partitioned by id)."""

    def __init__(self, p: Pipeline, m: ExporterMetrics) -> None:
        self.p, self.m = p, m
        self.consumer: AIOKafkaConsumer | None = None  # set once created
        self.partitioner = DefaultPartitioner()

    def _owner(self, parts: set[int], topic: str = NORMALIZED) -> Any:
        assert self.consumer is not None
        every = sorted(self.consumer.partitions_for_topic(topic) or [])

        def owned(entity_id: str) -> bool:
            return bool(every) and int(self.partitioner(entity_id.encode(), every, every)) in parts

        return owned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        parts = {tp.partition for tp in revoked if tp.topic == NORMALIZED}
        if parts:
            self.m.forget(self._owner(parts))
        alert_parts = {tp.partition for tp in revoked if tp.topic == ALERTS}
        if alert_parts:
            self.m.alerts.forget(self._owner(alert_parts, ALERTS))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        alert_parts = {tp.partition for tp in assigned if tp.topic == ALERTS}
        if alert_parts:
            await self._load_alerts(self._owner(alert_parts, ALERTS))
        parts = {tp.partition for tp in assigned if tp.topic == NORMALIZED}
        if not parts:
            return
        owned = self._owner(parts)
        db, limit = self.p.settings.clickhouse_database, self.p.settings.metrics_max_tracked_tasks
        try:
            tasks = await asyncio.to_thread(self.p.store.rows, *task_queries.open_tasks(db, limit))
            agents = await asyncio.to_thread(self.p.store.rows, *task_queries.agent_gauges(db))
        except TaskpulseError as exc:  # no table yet, or ClickHouse away: the stream still counts
            log.warning("metrics role: open tasks and agents not loaded from ClickHouse: %s", exc)
            return
        n = self.m.seed(
            reversed([t for t in tasks if owned(str(t[0]))]), [a for a in agents if owned(str(a[0]))]
        )
        log.info("metrics role: loaded %d open tasks and %d agents from ClickHouse", *n)

    async def _load_alerts(self, owned: Any) -> None:
        """Pending and firing alerts (latest change per fingerprint, keyed like the topic)."""
        db = self.p.settings.clickhouse_database
        try:
            rows = await asyncio.to_thread(self.p.store.rows, live_alerts_query(db))
        except TaskpulseError as exc:
            log.warning("metrics role: live alerts not loaded from ClickHouse: %s", exc)
            return
        live = [r for r in rows if owned(str(r[0]))]
        for fingerprint, state, severity in live:
            self.m.alerts.apply(str(fingerprint), str(state), str(severity))
        log.info("metrics role: loaded %d live alerts from ClickHouse", len(live))


def _apply(m: ExporterMetrics, topic: str, partition: int, offset: int, value: bytes | None, now: float) -> None:
    """Decode one record and hand it to the metrics; unreadable input is counted, skipped."""
    if topic == NORMALIZED and value:
        m.normalized(decode_normalized(value), (topic, partition, offset), now)
        return
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        m.bad_records.labels(topic).inc()
        return
    items = data if isinstance(data, list) else [data]
    for item in items:
        if not isinstance(item, dict):
            m.bad_records.labels(topic).inc()
        elif topic == LIFECYCLE:
            m.lifecycle(item, topic)
        elif topic == ROLLUPS:
            m.rollups([item], topic)
        else:
            m.alert(item, topic)
