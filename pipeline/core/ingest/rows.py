"""Pipeline values → ClickHouse column names and row tuples."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import orjson

from pipeline.core import jsonbytes
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

_dumps = jsonbytes.dumps  # held until the INSERT: right-sized
_EMPTY_JSON = b"{}"


def event_rows(accepted: Iterable[Accepted]) -> list[tuple[object, ...]]:
    """One row per event.  Times go in as epoch milliseconds (a ``DateTime64(3)`` column
    takes the integer as is: no datetime object per event) and the JSON columns as the
    bytes orjson made (no decode to text and encode back)."""
    dumps = _dumps
    return [
        (
            e.id,
            e.event_time_ms,
            e.timestamp_raw,
            e.event_type,
            e.entity_type.value,
            e.entity_id,
            e.agent,
            e.task_type,
            e.outcome,
            e.duration_ms,
            md.get("triggered_by") or "",
            md.get("correlation_id") or "",
            md.get("session_id") or "",
            md.get("tags") or [],
            dumps(e.previous_state) if e.previous_state else _EMPTY_JSON,
            dumps(e.current_state) if e.current_state else _EMPTY_JSON,
            dumps(md) if md else _EMPTY_JSON,
            dumps(e.metrics) if e.metrics else _EMPTY_JSON,
            dumps(e.extra) if e.extra else _EMPTY_JSON,
            e.ingested_ms,
            a.topic,
            a.partition,
            a.offset,
            a.index,
            a.log,
        )
        for a in accepted
        for e in (a.event,)
        for md in (e.metadata,)
    ]


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
