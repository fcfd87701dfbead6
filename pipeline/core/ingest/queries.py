"""The ingest domain's queries, as text plus parameters (``%(name)s`` or ``{name:Type}``
placeholders, bound by the ClickHouse client; the database name is an identifier and is
formatted in): what the writer reads back at start (watermarks, recent event ids), the DLQ
listing and replay, and the clock check of ``taskpulse doctor``.  Pure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pipeline.core.ingest.replay import Filters
from pipeline.core.ingest.rows import JsonRows

Query = tuple[str, dict[str, Any]]

#: The SQL expression of a DLQ entry's id (over the ``dlq`` table's columns).
ENTRY_ID = "cityHash64(src_log, src_topic, src_partition, src_offset, src_index, original)"


def sink_watermarks(db: str, table: str) -> Query:
    """(topic, partition, log, highest offset) written to ``table`` (``events`` or ``dlq``)."""
    return (
        f"SELECT src_topic, src_partition, src_log, max(src_offset) FROM {db}.{table} "
        "GROUP BY src_topic, src_partition, src_log",
        {},
    )


def rollup_watermarks(db: str) -> Query:
    """The highest source offset per ``topic:partition:log`` key folded into ``rollups``."""
    return f"SELECT maxMap(src_offsets) FROM {db}.rollups", {}


def recent_ids(db: str, limit: int) -> Query:
    """(id, topic, partition, offset, index, log) of the ``limit`` most recently ingested events, newest first."""
    return (
        f"SELECT id, src_topic, src_partition, src_offset, src_index, src_log FROM {db}.events "
        "ORDER BY ingested_at DESC, src_offset DESC LIMIT {limit:UInt64}",
        {"limit": limit},
    )


#: How an INSERT of JSONEachRow lines reads them, pinned (not left to the server's defaults):
#: objects are taken as their text (the JSON columns), floats are parsed to the nearest double
#: (what orjson wrote: the value the Python float had), keys the table does not take are
#: skipped, and one thread parses a block of a few MiB.
JSON_INSERT_SETTINGS = (
    "input_format_json_read_objects_as_strings = 1, precise_float_parsing = 1, "
    "input_format_skip_unknown_fields = 1, input_format_parallel_parsing = 0"
)


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def json_insert(db: str, table: str, spec: JsonRows, path: str | None = None) -> str:
    """The INSERT of JSONEachRow lines into ``table`` as ``spec`` maps them: sent as the
    request's body (``input()``, a server over HTTP), or read from the file at ``path`` (chDB
    in process, which has no request body: the same SELECT over ``file()``)."""
    if path is None:
        source = f"input({_quoted(spec.structure)}) FORMAT JSONEachRow"
    else:
        source = f"file({_quoted(path)}, 'JSONEachRow', {_quoted(spec.structure)})"
    return (
        f"INSERT INTO {db}.{table} ({', '.join(spec.columns)}) SETTINGS {JSON_INSERT_SETTINGS} "
        f"SELECT {', '.join(spec.exprs)} FROM {source}"
    )


def clock(db: str) -> str:
    """(newest event time ms, events of the last day, the server's now ms): the doctor's clock check."""
    return (
        "SELECT toUnixTimestamp64Milli(max(event_time)), count(), toUnixTimestamp64Milli(now64(3)) "
        f"FROM {db}.events WHERE event_time > now64(3) - INTERVAL 1 DAY"
    )


def entries_query(db: str, f: Filters) -> Query:
    """The DLQ entries that match ``f``, oldest first (copies of one entry collapsed)."""
    where = ["1"]
    params: dict[str, Any] = {"limit": f.limit}
    if f.reason:
        where.append("reason = %(reason)s")
        params["reason"] = f.reason
    if f.topic:
        where.append("src_topic = %(topic)s")
        params["topic"] = f.topic
    if f.since_ms is not None:
        where.append("received_at >= fromUnixTimestamp64Milli(%(since)s, 'UTC')")
        params["since"] = int(f.since_ms)
    if f.entry_id is not None:
        where.append(f"{ENTRY_ID} = %(entry)s")
        params["entry"] = f.entry_id
    sql = (
        f"SELECT {ENTRY_ID} AS entry_id, toString(min(received_at)) AS first_received, any(reason), any(detail), "
        "any(event_id), any(original), max(original_cut), max(original_redacted), any(src_topic), any(src_partition), "
        "any(src_offset), "
        f"any(src_index), any(src_log) FROM {db}.dlq WHERE {' AND '.join(where)} "
        "GROUP BY entry_id ORDER BY first_received, entry_id LIMIT %(limit)s"
    )
    return sql, params


def replays_query(db: str, entry_ids: Iterable[int]) -> Query:
    """(entry_id, topic, partition, offset, replayed_at) of the entries already replayed."""
    return (
        f"SELECT entry_id, topic, partition, offset, toString(replayed_at) FROM {db}.dlq_replays FINAL "
        "WHERE entry_id IN %(ids)s",
        {"ids": list(entry_ids) or [0]},
    )


def outcome_query(db: str, published: Iterable[tuple[str, int, int]], since_ms: int) -> Query:
    """What the pipeline made of the replayed messages (topic, partition, offset): rows of
    ``events`` (accepted) and of ``dlq`` (rejected again, with the reason), written since the
    replay began."""
    keys = [f"{t}:{p}:{o}" for t, p, o in published] or [""]
    key = "concat(src_topic, ':', toString(src_partition), ':', toString(src_offset))"
    return (
        f"SELECT {key} AS k, '' AS reason, count() FROM {db}.events WHERE k IN %(keys)s "
        "AND ingested_at >= fromUnixTimestamp64Milli(%(since)s, 'UTC') GROUP BY k "
        f"UNION ALL SELECT {key} AS k, any(reason), count() FROM {db}.dlq WHERE k IN %(keys)s "
        "AND received_at >= fromUnixTimestamp64Milli(%(since)s, 'UTC') GROUP BY k",
        {"keys": keys, "since": int(since_ms)},
    )


def entity_events(db: str, entity_id: str, entity_type: str | None, cap: int) -> Query:
    """The newest ``cap`` raw events of one entity (``/api/v1/events``), newest first."""
    params: dict[str, Any] = {"id": entity_id, "cap": int(cap)}
    where = "entity_id = %(id)s"
    if entity_type:
        where += " AND entity_type = %(type)s"
        params["type"] = entity_type
    return (
        "SELECT id, event_time, event_type, entity_type, entity_id, agent, task_type, outcome, duration_ms, "
        "previous_state, current_state, metadata, metrics, extra, ingested_at "
        f"FROM {db}.events WHERE {where} ORDER BY event_time DESC, id DESC LIMIT %(cap)s",
        params,
    )
