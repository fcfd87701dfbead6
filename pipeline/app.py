"""The composition root: the one place that turns Settings into a Faust app, sinks, a
processor and a metrics registry.  Everything else takes plain arguments."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from pipeline.core.ingest.aggregates import SketchMapping
from pipeline.core.ingest.batch import BatchProcessor
from pipeline.core.ingest.decode import Decoder, Limits
from pipeline.core.ingest.dedup import SeenIds
from pipeline.core.ingest.dimcap import DimensionCap
from pipeline.core.timestamps import to_epoch_ms
from pipeline.kafka_security import KafkaSecurity, client_kwargs, faust_credentials
from pipeline.settings import Settings, kafka_bootstrap
from pipeline.sinks.clickhouse import ClickHouseStore, store_from_settings
from pipeline.sinks.kafka import OutputProducer
from pipeline.sinks.writer import BatchWriter
from pipeline.worker_metrics import PipelineMetrics

log = logging.getLogger(__name__)


class LeanApp(faust.App):  # type: ignore[misc]
    """A Faust app without the Monitor sensor.

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


@dataclass
class Pipeline:
    """Everything a worker runs, wired together."""

    settings: Settings
    kafka_url: str
    app: faust.App
    store: ClickHouseStore
    producer: OutputProducer
    processor: BatchProcessor
    writer: BatchWriter
    metrics: PipelineMetrics
    #: TLS / SASL arguments for every aiokafka client a role creates (empty: PLAINTEXT)
    kafka_kwargs: dict[str, Any] = field(default_factory=dict)
    #: where analyst SQL runs: the read-only user's store in server mode, else ``store``
    query_store: ClickHouseStore | None = None
    started_at: float = field(default_factory=time.time)
    consumed_messages: int = 0
    consumed_events: int = 0
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    #: the consumer that holds the raw partitions when it is not Faust's (direct engine)
    raw_consumer: Any = None
    #: role name → coroutine giving its part of /api/status (``ingest``'s is the top level)
    status_sections: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = field(default_factory=dict)
    #: topics whose lag this worker reports (each role adds the topics it reads)
    lag_topics: set[str] = field(default_factory=set)
    #: every registry /metrics serves (roles add their own)
    registries: list[CollectorRegistry] = field(default_factory=list)

    def lag(self) -> dict[str, int]:
        """Messages not yet processed per input topic (raw topics: ingest; normalized:
        correlation), from the highwater marks in fetch responses and ``last_offsets``."""
        out: dict[str, int] = {}
        consumers = [c for c in (self.raw_consumer, self.app.consumer) if c is not None]
        seen: set[Any] = set()
        for consumer in consumers:
            for tp in consumer.assignment():
                if tp in seen or tp.topic not in self.lag_topics:
                    continue  # read by another role (its own consumer reports it) or an internal topic
                seen.add(tp)
                try:
                    hw = consumer.highwater(tp)
                except Exception:  # noqa: BLE001, S112 - not fetched yet
                    continue
                if hw is None:
                    continue
                done = self.last_offsets.get((tp.topic, tp.partition), -1) + 1
                out[tp.topic] = out.get(tp.topic, 0) + max(0, int(hw) - done)
        return out


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


def build_pipeline(settings: Settings, kafka_url: str, clickhouse_url: str) -> Pipeline:
    """Open ClickHouse (applying the schema), and build the Faust app and the processor."""
    servers = kafka_bootstrap(kafka_url)
    security = KafkaSecurity.from_settings(settings)
    kafka_kwargs = client_kwargs(security)
    store = store_from_settings(settings.model_copy(update={"clickhouse_url": clickhouse_url}))
    store.migrate(settings.sketch_relative_accuracy)
    query_store = store_from_settings(settings, reader=True) if settings.clickhouse_read_url else store
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
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
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
    metrics = PipelineMetrics(CollectorRegistry())
    processor = BatchProcessor(
        Decoder(limits=decode_limits(settings)),
        SeenIds(settings.dedup_capacity),
        SketchMapping(settings.sketch_relative_accuracy),
        max_rows=settings.insert_max_rows,
        max_bytes=settings.insert_max_bytes,
        caps=DimensionCap(settings.rollup_max_dimension_values, settings.rollup_cap_windows),
    )
    producer = OutputProducer(servers, client_kwargs=kafka_kwargs)
    writer = BatchWriter(store, producer, processor, metrics)
    p = Pipeline(settings, kafka_url, app, store, producer, processor, writer, metrics, kafka_kwargs, query_store)
    p.registries.append(metrics.registry)
    return p
