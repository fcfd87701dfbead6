"""ClickHouse through clickhouse-connect: an HTTP server, or chDB in-process (``chdb:///path``).

Blocking calls; callers run them off the event loop.  Connection-level failures become
``SinkUnavailable`` (retry the same batch later); refusals of the data itself become
``SinkRejected``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.exceptions import (
    ClickHouseError,
    DatabaseError,
    OperationalError,
)

from pipeline.core.ddl import ddl_statements, upgrade_statements
from pipeline.core.dedup import Origin
from pipeline.core.logs import StoredMarks, TPLog, parse_src_key
from pipeline.core.rows import DLQ_COLUMNS, EVENT_COLUMNS, ROLLUP_COLUMNS
from pipeline.errors import ConfigError, SinkBackpressure, SinkRejected, SinkUnavailable
from pipeline.settings import mask_url

log = logging.getLogger(__name__)

#: Words in an error message that mean "the server is not there", whatever the class.
_UNAVAILABLE_HINTS = ("connection", "timed out", "timeout", "refused", "unreachable", "reset")


#: ClickHouse's own "slow down" answers (too many parts: merges are behind).
_BACKPRESSURE_HINTS = ("too many parts", "too_many_parts", "code: 252")


def _classify(exc: Exception, what: str) -> Exception:
    text = str(exc)
    if any(h in text.lower() for h in _BACKPRESSURE_HINTS):
        return SinkBackpressure(f"ClickHouse asks to slow down during {what}: {text[:300]}", retry_after=1.0)
    if isinstance(exc, OperationalError) or any(h in text.lower() for h in _UNAVAILABLE_HINTS):
        return SinkUnavailable(f"ClickHouse unavailable during {what}: {text[:300]}")
    return SinkRejected(f"ClickHouse refused {what}: {text[:500]}")


class ClickHouseStore:
    """The taskpulse tables in one ClickHouse database."""

    def __init__(self, url: str, database: str = "taskpulse", password: str = "") -> None:
        self.url = url
        self.database = database
        self._lock = threading.Lock()  # chDB: one engine per process, one call at a time
        try:
            kwargs: dict[str, Any] = {"dsn": url}
            if password:
                kwargs["password"] = password
            if not url.startswith("chdb"):
                kwargs["autogenerate_session_id"] = False
            self.client = clickhouse_connect.get_client(**kwargs)
        except OperationalError as exc:
            raise SinkUnavailable(
                f"cannot reach ClickHouse at {mask_url(url)}: {exc}; check "
                "TASKPULSE_CLICKHOUSE_URL, or leave it empty for the embedded chDB engine"
            ) from exc
        except (ClickHouseError, ValueError) as exc:
            raise ConfigError(
                f"cannot open ClickHouse at {mask_url(url)}: {exc}; check TASKPULSE_CLICKHOUSE_URL"
            ) from exc

    # ------------------------------------------------------------------ schema
    def migrate(self, relative_accuracy: float = 0.005) -> list[str]:
        """Apply the schema idempotently; returns the statements run."""
        stmts = ddl_statements(self.database, relative_accuracy)
        for stmt in stmts:
            self.command(stmt)
        engines = dict(
            self.rows("SELECT name, engine FROM system.tables WHERE database = {db:String}", {"db": self.database})
        )
        for table, stmt in upgrade_statements(self.database):
            if "PROJECTION" in stmt and not str(engines.get(table, "")).endswith("MergeTree"):
                continue  # a Distributed table: projections live on its *_local tables
            self.command(stmt)
            stmts.append(stmt)
        return stmts

    # ------------------------------------------------------------------ writes
    def insert(self, table: str, rows: Sequence[Sequence[Any]], columns: list[str]) -> None:
        if not rows:
            return
        try:
            with self._lock:
                self.client.insert(f"{self.database}.{table}", rows, column_names=columns)
        except (ClickHouseError, OSError) as exc:
            raise _classify(exc, f"insert into {table}") from exc

    def insert_events(self, rows: Sequence[Sequence[Any]]) -> None:
        self.insert("events", rows, EVENT_COLUMNS)

    def insert_rollups(self, rows: Sequence[Sequence[Any]]) -> None:
        self.insert("rollups", rows, ROLLUP_COLUMNS)

    def insert_dlq(self, rows: Sequence[Sequence[Any]]) -> None:
        self.insert("dlq", rows, DLQ_COLUMNS)

    # ------------------------------------------------------------------ reads
    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        try:
            with self._lock:
                return self.client.query(sql, parameters=parameters)
        except (ClickHouseError, OSError) as exc:
            raise _classify(exc, "query") from exc

    def command(self, sql: str) -> Any:
        try:
            with self._lock:
                return self.client.command(sql)
        except (ClickHouseError, OSError) as exc:
            raise _classify(exc, f"command {sql.split(chr(10))[0][:80]!r}") from exc

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.query(sql, parameters).result_rows]

    def watermarks(self) -> StoredMarks:
        """Per sink table, the highest source offset written for each (topic, partition, log)."""
        db = self.database
        out: StoredMarks = {}
        for table in ("events", "dlq"):
            sql = (
                f"SELECT src_topic, src_partition, src_log, max(src_offset) FROM {db}.{table} "
                "GROUP BY src_topic, src_partition, src_log"
            )
            out[table] = {(t, int(p), str(lg)): int(o) for t, p, lg, o in self.rows(sql)}
        marks: dict[TPLog, int] = {}
        for (offsets,) in self.rows(f"SELECT maxMap(src_offsets) FROM {db}.rollups"):
            for key, off in (offsets or {}).items():
                marks[parse_src_key(key)] = int(off)
        out["rollups"] = marks
        return out

    def recent_ids(self, limit: int) -> list[tuple[str, Origin]]:
        """The ``limit`` most recently ingested event ids with their origins, oldest first."""
        sql = (
            f"SELECT id, src_topic, src_partition, src_offset, src_index, src_log FROM {self.database}.events "
            "ORDER BY ingested_at DESC, src_offset DESC LIMIT {limit:UInt64}"
        )
        rows = self.rows(sql, {"limit": limit})
        rows.reverse()
        return [(r[0], (r[1], int(r[2]), int(r[3]), int(r[4]), str(r[5]))) for r in rows]

    def table_counts(self) -> dict[str, int]:
        """Rows per taskpulse table (from system.parts: cheap, approximate for merging engines)."""
        sql = (
            "SELECT table, sum(rows) FROM system.parts WHERE database = {db:String} AND active "
            "GROUP BY table"
        )
        return {t: int(n) for t, n in self.rows(sql, {"db": self.database})}

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            log.debug("closing ClickHouse client failed", exc_info=True)


__all__ = ["ClickHouseStore", "DatabaseError"]
