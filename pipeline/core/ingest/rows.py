"""Pipeline values → ClickHouse column names and rows: tuples (Native), or for ``events``
JSONEachRow lines made from the normalized JSON the processor already wrote."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import orjson

from pipeline.core.ingest.aggregates import Measures, RollupKey
from pipeline.core.ingest.batch import Accepted
from pipeline.core.ingest.logs import TP, src_key
from pipeline.core.timestamps import ms_to_datetime
from pipeline.events import Rejected

EVENT_COLUMNS = [
    "id", "event_time", "timestamp_raw", "event_type", "entity_type", "entity_id", "agent",
    "task_type", "outcome", "duration_ms", "triggered_by", "correlation_id", "session_id",
    "tags", "previous_state", "current_state", "metadata", "metrics", "extra", "ingested_at",
    "src_topic", "src_partition", "src_offset", "src_index", "src_log",
]  # fmt: skip

ROLLUP_COLUMNS = [
    "granularity", "window_start", "entity_type", "event_type", "agent", "task_type",
    "outcome", "count", "successes", "failures", "duration_count", "duration_sum",
    "duration_min", "duration_max", "duration_sketch", "src_offsets", "updated_at",
]  # fmt: skip

DLQ_COLUMNS = [
    "received_at", "reason", "detail", "event_id", "original", "original_cut", "original_redacted",
    "src_topic", "src_partition", "src_offset", "src_index", "src_log",
]  # fmt: skip

@dataclass(frozen=True)
class JsonRows:
    """How a table takes its rows as JSONEachRow lines (``rows`` of ``ClickHouseStore.insert``):
    ``structure`` declares the keys of a line and their types (as ``input()`` takes them),
    ``exprs`` computes each of ``columns`` from those keys.  ClickHouse parses and converts the
    lines in C++ (outside the GIL), where Native rows are encoded value by value in Python."""

    columns: tuple[str, ...]
    exprs: tuple[str, ...]
    structure: str

    def only(self, column: str) -> JsonRows:
        """The same lines, written to ``column`` alone (to tell which column a row breaks)."""
        i = self.columns.index(column)
        return JsonRows((column,), (self.exprs[i],), self.structure)


#: An event's line is its normalized JSON (``Accepted.payload``: the NormalizedEvent's fields
#: as orjson wrote them) with its source appended.  The JSON columns take the objects'
#: text as it stands in the line (``input_format_json_read_objects_as_strings``): the same
#: bytes as ``orjson.dumps`` of each dict, not parsed and written again.
_EVENT_KEYS = (
    ("id", "String"), ("event_time_ms", "Int64"), ("timestamp_raw", "String"), ("event_type", "String"),
    ("entity_type", "String"), ("entity_id", "String"), ("agent", "String"), ("task_type", "String"),
    ("outcome", "String"), ("duration_ms", "Nullable(Float64)"), ("previous_state", "String"),
    ("current_state", "String"), ("metadata", "String"), ("metrics", "String"), ("extra", "String"),
    ("ingested_ms", "Int64"), ("src_topic", "String"), ("src_partition", "UInt32"), ("src_offset", "Int64"),
    ("src_index", "UInt32"), ("src_log", "String"),
)  # fmt: skip
_EVENT_EXPRS = {
    "event_time": "fromUnixTimestamp64Milli(event_time_ms, 'UTC')",
    "ingested_at": "fromUnixTimestamp64Milli(ingested_ms, 'UTC')",
    "triggered_by": "JSONExtractString(metadata, 'triggered_by')",
    "correlation_id": "JSONExtractString(metadata, 'correlation_id')",
    "session_id": "JSONExtractString(metadata, 'session_id')",
    "tags": "JSONExtract(metadata, 'tags', 'Array(String)')",
}
EVENT_JSON = JsonRows(
    tuple(EVENT_COLUMNS),
    tuple(_EVENT_EXPRS.get(c, c) for c in EVENT_COLUMNS),
    ", ".join(f"{key} {type_}" for key, type_ in _EVENT_KEYS),
)


def event_lines(accepted: Iterable[Accepted]) -> list[bytes]:
    """One JSONEachRow line per event (``EVENT_JSON``): its payload, the normalized JSON the
    processor made once for the normalized topic, with the ``src_*`` keys added before the
    closing brace.  No dict is walked or serialized again per event."""
    tails: dict[tuple[str, int, str], bytes] = {}
    lines = []
    for a in accepted:
        payload = a.payload
        where = (a.topic, a.partition, a.log)
        tail = tails.get(where)
        if tail is None:
            tail = tails[where] = b',"src_topic":%b,"src_partition":%d,"src_log":%b,"src_offset":' % (
                orjson.dumps(a.topic), a.partition, orjson.dumps(a.log)
            )
        lines.append(b'%b%b%d,"src_index":%d}' % (payload[:-1], tail, a.offset, a.index))
    return lines


def marker_of(offsets: dict[TP, int], logs: dict[str, str]) -> dict[str, int]:
    """The rollups watermark as stored: ``topic:partition@log`` → highest offset written."""
    return {src_key(tp[0], tp[1], logs.get(tp[0], "")): off for tp, off in offsets.items()}


def rollup_rows(
    rollups: dict[RollupKey, Measures], offsets: dict[TP, int], now: datetime, logs: dict[str, str]
) -> list[tuple[object, ...]]:
    """One row per (granularity, window, dims).  The newest window's row carries the
    batch's source offsets (the rollups watermark, keyed ``topic:partition@log``), so it is
    inserted atomically with them.
    """
    rows: list[tuple[object, ...]] = []
    if not rollups:
        return rows
    marker_key = max(rollups, key=lambda k: k[1])
    marker = marker_of(offsets, logs)
    for key, m in rollups.items():
        gran, start_ms, dims = key
        has = m.duration_count > 0
        rows.append(
            (
                gran,
                ms_to_datetime(start_ms),
                *dims,
                m.count,
                m.successes,
                m.failures,
                m.duration_count,
                m.duration_sum,
                m.duration_min if has else None,
                m.duration_max if has else None,
                m.sketch,
                marker if key == marker_key else {},
                now,
            )
        )
    return rows


_MARKER_COLUMN = ROLLUP_COLUMNS.index("src_offsets")
#: The granularity of a row that only carries the rollups watermark (every measure zero):
#: written when every row of a batch's rollups was refused; no query of a real tier reads it.
MARKER_GRANULARITY = "marker"


def rows_without(
    rows: list[tuple[object, ...]], refused: set[int], offsets: dict[TP, int], now: datetime,
    logs: dict[str, str],
) -> list[tuple[object, ...]]:
    """The rollup rows to write once the rows at ``refused`` are taken out.  The batch's
    source offsets (the rollups watermark) must still be written: if the row that carried
    them is refused they move to the last kept row, or to a zero row of its own."""
    kept = [r for i, r in enumerate(rows) if i not in refused]
    if not offsets or any(rows[i][_MARKER_COLUMN] for i in range(len(rows)) if i not in refused):
        return kept
    marker = marker_of(offsets, logs)
    if kept:
        last = kept[-1]
        kept[-1] = (*last[:_MARKER_COLUMN], marker, *last[_MARKER_COLUMN + 1 :])
        return kept
    window = now.replace(second=0, microsecond=0)
    return [
        (MARKER_GRANULARITY, window, "", "", "", "", "", 0, 0, 0, 0, 0.0, None, None, {}, marker, now)
    ]


def rollup_json(key: RollupKey, m: Measures) -> bytes:
    """A rollup row as JSON (the ``original`` of its DLQ entry when it is refused)."""
    gran, start_ms, dims = key
    doc = {"granularity": gran, "window_start_ms": start_ms, "dims": list(dims), "count": m.count,
           "successes": m.successes, "failures": m.failures, "duration_count": m.duration_count,
           "duration_sum": m.duration_sum}  # fmt: skip
    return orjson.dumps(doc)


def _text(value: str) -> str:
    """Text any column takes: lone surrogates (from hostile input) replaced."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode()
    return value


def dlq_rows(
    rejected: Iterable[Rejected], now: datetime, logs: dict[str, str] | None = None
) -> list[tuple[object, ...]]:
    """DLQ rows; ``logs`` (topic → log identity) for rejections read from raw topics."""
    logs = logs or {}
    return [
        (
            now,
            r.reason.value,
            _text(r.detail),
            _text(r.event_id or ""),
            r.original,
            r.original_cut,
            r.original_redacted,
            r.source.topic,
            r.source.partition,
            r.source.offset,
            r.source.index,
            logs.get(r.source.topic, ""),
        )
        for r in rejected
    ]
