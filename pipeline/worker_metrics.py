"""The pipeline's own Prometheus metrics, registered on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class PipelineMetrics:
    """Counters and histograms the ingest worker updates once per batch."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "taskpulse_messages_consumed_total", "Raw Kafka messages consumed", ["topic"], registry=r
        )
        self.accepted = Counter(
            "taskpulse_events_accepted_total", "Events validated and normalized", registry=r
        )
        self.rejected = Counter(
            "taskpulse_events_rejected_total", "Inputs sent to the DLQ", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "taskpulse_events_duplicate_total", "Duplicate deliveries dropped", registry=r
        )
        self.replayed = Counter(
            "taskpulse_messages_replayed_total",
            "Messages skipped because every sink had already written them (crash replay)",
            registry=r,
        )
        self.rows = Counter(
            "taskpulse_clickhouse_rows_written_total", "Rows written", ["table"], registry=r
        )
        self.write_seconds = Histogram(
            "taskpulse_clickhouse_write_seconds",
            "ClickHouse insert latency",
            ["table"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.write_errors = Counter(
            "taskpulse_sink_errors_total", "Sink write failures (retried)", ["sink"], registry=r
        )
        self.batch_messages = Histogram(
            "taskpulse_batch_messages",
            "Kafka messages per processing batch",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000),
            registry=r,
        )
        self.event_delay = Histogram(
            "taskpulse_event_delay_seconds",
            "Event time to processed (newest event of each batch)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "taskpulse_consumer_lag_messages", "Messages not yet consumed", ["topic"], registry=r
        )
        self.backpressure = Gauge(
            "taskpulse_backpressure", "1 while a sink is unavailable and batches are held", registry=r
        )
        self.state_bytes = Gauge(
            "taskpulse_state_bytes", "Estimated memory held by a role's state", ["role"], registry=r
        )
        self.state_entries = Gauge(
            "taskpulse_state_entries", "Entities a role's state holds", ["role", "kind"], registry=r
        )
        self.state_dropped = Counter(
            "taskpulse_state_dropped_total",
            "State entries a role dropped to stay bounded (budget, expiry, forgetting, history cap)",
            ["role", "reason"],
            registry=r,
        )
        self.rollup_folded = Counter(
            "taskpulse_rollup_dimension_folded_total",
            "Rollup updates (event × granularity) whose agent or task type was folded into `other` "
            "(over TASKPULSE_ROLLUP_MAX_DIMENSION_VALUES distinct values in the window)",
            ["dimension"],
            registry=r,
        )
