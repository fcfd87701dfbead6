"""The ingest domain's ClickHouse tables (``events``, ``rollups``, ``dlq`` and their views), as
DDL text; ``pipeline.core.schema`` composes them with the other domains' tables.

Atomicity: no table has a ``PARTITION BY`` (an INSERT that spans partitions makes one
part per partition), so one INSERT within ``min_insert_block_size_rows`` /
``min_insert_block_size_bytes`` (1,048,449 rows / 256 MiB: the server squashes the
client's blocks up to those sizes) is one part, committed atomically; the writer keeps
every INSERT within ``TASKPULSE_INSERT_MAX_ROWS`` / ``TASKPULSE_INSERT_MAX_BYTES``.  Each table's write
watermark lives inside its own rows (``src_*`` columns, read through the
``src_log_watermarks`` projection, or the ``src_offsets`` map of rollups), so data and
watermark are committed together: that is what makes replays after a crash exact.
``src_log`` names the log the offsets count in (``pipeline.core.ingest.logs``).

Migrations (``ingest_steps``): step 1 creates the tables as they are now; later steps bring
tables an older release created up to them (``ADD COLUMN IF NOT EXISTS`` …).  Retention:
``ttl_expressions`` from ``TASKPULSE_TTL_*`` (``pipeline.core.migrations``).
"""

from __future__ import annotations

from pipeline.core.ingest.aggregates import ZERO_KEY, SketchMapping
from pipeline.core.migrations import Retention, Step, Stmt, days_ttl, tiered_ttl


def _src_columns() -> str:
    return """    src_topic LowCardinality(String),
    src_partition UInt32,
    src_offset Int64,
    src_index UInt32,
    src_log LowCardinality(String) DEFAULT '',"""


def _src_projection() -> str:
    return """    PROJECTION src_log_watermarks
    (
        SELECT src_topic, src_partition, src_log, max(src_offset)
        GROUP BY src_topic, src_partition, src_log
    )"""


#: tables whose rows carry ``src_*`` columns (and the watermark projection)
SRC_TABLES = ("events", "dlq")


def ttl_expressions(retention: Retention) -> dict[str, str]:
    """The TTL each ingest table should have (``TASKPULSE_TTL_*``)."""
    r = retention
    return {
        "events": days_ttl("event_time", r.events),
        "rollups": tiered_ttl("window_start", "granularity", r.rollup_days()),
        "dlq": days_ttl("received_at", r.dlq),
        "dlq_replays": days_ttl("replayed_at", r.dlq),
    }


def ingest_steps(db: str, relative_accuracy: float, retention: Retention) -> list[Step]:
    """The ingest domain's migration steps (numbers shared with the other domains)."""
    return [
        Step.of(1, "ingest tables (events, rollups, dlq), sketch functions, rollup_stats",
                ingest_ddl(db, relative_accuracy, retention)),
        Step.of(4, "log identities: src_log and the src_log_watermarks projection on events and dlq",
                _log_identity_statements(db)),
        Step.of(6, "dlq.original_cut: entries whose original was cut are never replayed",
                [f"ALTER TABLE {db}.dlq ADD COLUMN IF NOT EXISTS original_cut Bool DEFAULT false AFTER original"]),
        Step.of(7, "dlq_replays: what `taskpulse dlq replay` re-published, one row per DLQ entry",
                [_dlq_replays_ddl(db, retention)]),
        Step.of(11, "dlq.original_redacted: entries whose original was pseudonymised / redacted are never replayed",
                [f"ALTER TABLE {db}.dlq ADD COLUMN IF NOT EXISTS original_redacted Bool DEFAULT false "
                 "AFTER original_cut"]),
        Step.of(13, "events: vertical merges (one column at a time: a merge of a few 20,000-row parts no longer "
                "holds every column's buffers of every part at once, ~190 MiB in the worker)",
                [Stmt(f"ALTER TABLE {db}.events MODIFY SETTING vertical_merge_algorithm_min_rows_to_activate = 1, "
                      "vertical_merge_algorithm_min_columns_to_activate = 1", mergetree_table="events")]),
    ]  # fmt: skip


def _log_identity_statements(db: str) -> list[Stmt]:
    """From a release before log identities: ``src_log`` and the projection that reads
    watermarks per log (on a cluster the projections go on the ``*_local`` tables)."""
    out: list[Stmt] = []
    for table in SRC_TABLES:
        out += [
            Stmt(f"ALTER TABLE {db}.{table} ADD COLUMN IF NOT EXISTS src_log LowCardinality(String) "
                 "DEFAULT '' AFTER src_index"),
            Stmt(f"ALTER TABLE {db}.{table} ADD PROJECTION IF NOT EXISTS src_log_watermarks "
                 "(SELECT src_topic, src_partition, src_log, max(src_offset) "
                 "GROUP BY src_topic, src_partition, src_log)", table),
            Stmt(f"ALTER TABLE {db}.{table} DROP PROJECTION IF EXISTS src_watermarks", table),
        ]  # fmt: skip
    return out


def _dlq_replays_ddl(db: str, retention: Retention) -> str:
    """One row per replayed DLQ entry (``entry_id``, see ``core.ingest.queries``): where its
    original was published again.  An entry with a row is never replayed again."""
    return f"""CREATE TABLE IF NOT EXISTS {db}.dlq_replays
(
    entry_id UInt64,
    replayed_at DateTime64(3, 'UTC'),
    reason LowCardinality(String),
    event_id String,
    src_topic LowCardinality(String),
    src_partition UInt32,
    src_offset Int64,
    src_index UInt32,
    src_log LowCardinality(String),
    topic LowCardinality(String),
    partition UInt32,
    offset Int64,
    replayed_by String
)
ENGINE = ReplacingMergeTree(replayed_at)
ORDER BY entry_id
TTL {ttl_expressions(retention)["dlq_replays"]}"""


def ingest_ddl(database: str, relative_accuracy: float, retention: Retention) -> list[str]:
    """The ingest tables (``events``, ``rollups``, ``dlq``) and their views as they are now, in
    order; each statement is idempotent (IF NOT EXISTS / OR REPLACE)."""
    m = SketchMapping(relative_accuracy)
    db = database
    ttl = ttl_expressions(retention)
    return [
        f"""CREATE TABLE IF NOT EXISTS {db}.events
(
    id String,
    event_time DateTime64(3, 'UTC'),
    timestamp_raw String,
    event_type LowCardinality(String),
    entity_type LowCardinality(String),
    entity_id String,
    agent LowCardinality(String),
    task_type LowCardinality(String),
    outcome LowCardinality(String),
    duration_ms Nullable(Float64),
    triggered_by String,
    correlation_id String,
    session_id String,
    tags Array(String),
    previous_state String,
    current_state String,
    metadata String,
    metrics String,
    extra String,
    ingested_at DateTime64(3, 'UTC'),
{_src_columns()}
    INDEX ingested_at_idx ingested_at TYPE minmax GRANULARITY 1,
    INDEX id_idx id TYPE bloom_filter(0.01) GRANULARITY 4,
{_src_projection()}
)
ENGINE = MergeTree
ORDER BY (entity_type, event_type, event_time, id)
TTL {ttl["events"]}""",
        f"""CREATE TABLE IF NOT EXISTS {db}.rollups
(
    granularity LowCardinality(String),
    window_start DateTime('UTC'),
    entity_type LowCardinality(String),
    event_type LowCardinality(String),
    agent LowCardinality(String),
    task_type LowCardinality(String),
    outcome LowCardinality(String),
    count SimpleAggregateFunction(sum, UInt64),
    successes SimpleAggregateFunction(sum, UInt64),
    failures SimpleAggregateFunction(sum, UInt64),
    duration_count SimpleAggregateFunction(sum, UInt64),
    duration_sum SimpleAggregateFunction(sum, Float64),
    duration_min SimpleAggregateFunction(min, Nullable(Float64)),
    duration_max SimpleAggregateFunction(max, Nullable(Float64)),
    duration_sketch SimpleAggregateFunction(sumMap, Map(Int16, UInt64)),
    src_offsets SimpleAggregateFunction(maxMap, Map(String, Int64)),
    updated_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (granularity, window_start, entity_type, event_type, agent, task_type, outcome)
TTL {ttl["rollups"]}""",
        f"""CREATE TABLE IF NOT EXISTS {db}.dlq
(
    received_at DateTime64(3, 'UTC'),
    reason LowCardinality(String),
    detail String,
    event_id String,
    original String,
    original_cut Bool DEFAULT false,
    original_redacted Bool DEFAULT false,
{_src_columns()}
{_src_projection()}
)
ENGINE = MergeTree
ORDER BY (received_at, reason)
TTL {ttl["dlq"]}""",
        # tpQuantile(sumMap(duration_sketch), 0.95): the q-quantile (ms) of a merged sketch,
        # rank floor(q * (n - 1)) as in pipeline.core.ingest.aggregates.sketch_quantile.
        # tpSketchValue(key): the value (ms) a sketch bucket stands for.
        f"""CREATE FUNCTION IF NOT EXISTS tpSketchValue AS (k) ->
    if(k = {ZERO_KEY}, 0., pow(2., k / {m.multiplier!r}) * {2.0 / (1 + m.gamma)!r})""",
        """CREATE FUNCTION IF NOT EXISTS tpQuantile AS (sketch, q) ->
    if(empty(sketch), nan,
       tpSketchValue(arrayElement(mapKeys(sketch),
           arrayFirstIndex(c -> c > floor(q * (arraySum(mapValues(sketch)) - 1)),
                           arrayCumSum(mapValues(sketch))))))""",
        f"""CREATE VIEW IF NOT EXISTS {db}.rollup_stats AS
SELECT
    r.granularity AS granularity, r.window_start AS window_start,
    r.entity_type AS entity_type, r.event_type AS event_type, r.agent AS agent,
    r.task_type AS task_type, r.outcome AS outcome,
    sum(r.count) AS count,
    sum(r.successes) AS successes,
    sum(r.failures) AS failures,
    sum(r.duration_count) AS duration_count,
    if(sum(r.duration_count) = 0, NULL, sum(r.duration_sum) / sum(r.duration_count)) AS avg_ms,
    min(r.duration_min) AS min_ms,
    max(r.duration_max) AS max_ms,
    tpQuantile(sumMap(r.duration_sketch), 0.50) AS p50_ms,
    tpQuantile(sumMap(r.duration_sketch), 0.95) AS p95_ms,
    tpQuantile(sumMap(r.duration_sketch), 0.99) AS p99_ms
FROM {db}.rollups AS r
GROUP BY r.granularity, r.window_start, r.entity_type, r.event_type, r.agent, r.task_type,
    r.outcome""",
    ]

