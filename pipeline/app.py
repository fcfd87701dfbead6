"""The composition root: the one place that turns Settings into a Faust app, the store and
the worker's metrics registry.  Everything else takes plain arguments."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_kafka
from prometheus_client import CollectorRegistry

from pipeline.kafka_security import KafkaSecurity, client_kwargs, faust_credentials
from pipeline.settings import Settings, kafka_bootstrap
from pipeline.sinks.clickhouse import ClickHouseStore
from pipeline.sinks.kafka import topic_lag
from pipeline.worker_metrics import PipelineMetrics

log = logging.getLogger(__name__)

#: How long the broker may hold a fetch that finds nothing new, for every consumer of the
#: worker (Faust's own, which it sets to 1,500 ms, and the roles' aiokafka consumers).  Kafka
#: answers a waiting fetch as soon as data arrives; the embedded Tansu broker only when the
#: wait runs out, so there the wait is latency: produce → consume took p50 141 / max 254 ms
#: at 500 ms (aiokafka's default), 15 / 53 ms at 100.  Idle, it costs 10 fetches a second.
FETCH_MAX_WAIT_MS = 100


class _ConsumerThread(faust_kafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by start() for its Fetcher
        return consumer


class _Consumer(faust_kafka.Consumer):  # type: ignore[misc]
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_kafka.Transport):  # type: ignore[misc]
    Consumer = _Consumer


class LeanApp(faust.App):  # type: ignore[misc]
    """A Faust app without the Monitor sensor, whose consumer waits ``FETCH_MAX_WAIT_MS``.

    Faust calls every sensor several times per message (message in, stream event in/out,
    message out); the Monitor keeps per-message statistics that taskpulse does not use
    (its own Prometheus metrics are counted per batch).  Removing it is the largest cut
    in Faust's per-message path that does not change behaviour.
    """

    def on_init_dependencies(self) -> Any:
        deps = super().on_init_dependencies()
        if self.monitor in self.sensors:
            self.sensors.remove(self.monitor)
        return deps

    def _new_transport(self) -> Any:
        """Faust's aiokafka transport, its consumer waiting at most ``FETCH_MAX_WAIT_MS`` on a fetch."""
        return _Transport(self.conf.broker_consumer, self)


@dataclass
class Pipeline:
    """What every role of a worker shares, wired together: settings, the Faust app, the
    store, the worker's metrics on the one registry, its status page and its lag.  What
    belongs to one role (ingest's processor, writer and consumer, …) lives in the role."""

    settings: Settings
    kafka_url: str
    app: faust.App
    store: ClickHouseStore
    #: the worker's own metrics (sinks, backpressure, state sizes), on ``registry``
    metrics: PipelineMetrics
    #: the one Prometheus registry of the worker: every role registers its metrics into it
    registry: CollectorRegistry
    #: TLS / SASL arguments for every aiokafka client a role creates (empty: PLAINTEXT)
    kafka_kwargs: dict[str, Any] = field(default_factory=dict)
    #: where analyst SQL runs: the read-only user's store in server mode, else ``store``
    query_store: ClickHouseStore | None = None
    started_at: float = field(default_factory=time.time)
    #: last processed offset per (topic, partition) of the topics in ``lag_topics``
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    #: consumers a role runs besides Faust's own (ingest's direct engine)
    consumers: list[Any] = field(default_factory=list)
    #: role name → coroutine giving its part of /api/status (``ingest``'s is the top level)
    status_sections: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = field(default_factory=dict)
    #: topics whose lag this worker reports (each role adds the topics it reads)
    lag_topics: set[str] = field(default_factory=set)

    @property
    def kafka_servers(self) -> str:
        return kafka_bootstrap(self.kafka_url)

    def lag(self) -> dict[str, int]:
        """Messages not yet processed per input topic (raw topics: ingest; normalized:
        correlation), from the highwater marks in fetch responses and ``last_offsets``."""
        out: dict[str, int] = {}
        seen: set[Any] = set()
        for consumer in [c for c in (*self.consumers, self.app.consumer) if c is not None]:
            done = topic_lag(
                consumer, lambda tp: self.last_offsets.get((tp.topic, tp.partition), -1) + 1, self.lag_topics, seen
            )
            for topic, n in done.items():
                out[topic] = out.get(topic, 0) + n
        return out


def build_pipeline(settings: Settings, kafka_url: str, clickhouse_url: str) -> Pipeline:
    """Open ClickHouse (refusing a database ahead of this code, migrating one behind it
    unless ``TASKPULSE_AUTO_MIGRATE=false``), and build the Faust app and the registry."""
    servers = kafka_bootstrap(kafka_url)
    security = KafkaSecurity.from_settings(settings)
    kafka_kwargs = client_kwargs(security)
    store = ClickHouseStore.from_settings(settings.model_copy(update={"clickhouse_url": clickhouse_url}))
    store.ensure_schema(settings.auto_migrate, applied_by=f"worker {socket.gethostname()}")
    query_store = ClickHouseStore.from_settings(settings, reader=True) if settings.clickhouse_read_url else store
    app = LeanApp(
        settings.consumer_group,
        broker=f"kafka://{servers}",
        broker_credentials=faust_credentials(security),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_max_poll_records=5000,
        stream_buffer_maxsize=settings.batch_max * 2,
        web_enabled=True,
        # Faust's own pages that expose routing and table contents: not served.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_bind=settings.api_host,
        web_port=settings.api_port,
        web_host=settings.api_host,
        datadir=str(settings.data_dir / "faust"),
        autodiscover=False,
    )
    registry = CollectorRegistry()
    return Pipeline(settings, kafka_url, app, store, PipelineMetrics(registry), registry, kafka_kwargs, query_store)
