"""ClickHouse through clickhouse-connect: an HTTP server, or chDB in-process (``chdb:///path``).

Blocking calls; callers run them off the event loop.  Connection-level failures become
``SinkUnavailable`` (retry the same batch later); refusals of the data itself become
``SinkRejected``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.exceptions import (
    ClickHouseError,
    DatabaseError,
    OperationalError,
)

from pipeline.core.batch import TP
from pipeline.core.ddl import ddl_statements
from pipeline.core.dedup import Origin
from pipeline.core.rows import DLQ_COLUMNS, EVENT_COLUMNS, ROLLUP_COLUMNS
from pipeline.core.sql_guard import QueryRefused, check_ast_text, check_json_ast
from pipeline.errors import ConfigError, SinkBackpressure, SinkRejected, SinkUnavailable
from pipeline.settings import Settings, redact

log = logging.getLogger(__name__)

#: Words in an error message that mean "the server is not there", whatever the class.
_UNAVAILABLE_HINTS = ("connection", "timed out", "timeout", "refused", "unreachable", "reset")


#: ClickHouse's own "slow down" answers (too many parts: merges are behind).
_BACKPRESSURE_HINTS = ("too many parts", "too_many_parts", "code: 252")


def _classify(exc: Exception, what: str) -> Exception:
    text = redact(str(exc))
    if any(h in text.lower() for h in _BACKPRESSURE_HINTS):
        return SinkBackpressure(f"ClickHouse asks to slow down during {what}: {text[:300]}", retry_after=1.0)
    if isinstance(exc, OperationalError) or any(h in text.lower() for h in _UNAVAILABLE_HINTS):
        return SinkUnavailable(f"ClickHouse unavailable during {what}: {text[:300]}")
    return SinkRejected(f"ClickHouse refused {what}: {text[:500]}")


@dataclass(frozen=True)
class SqlLimits:
    """The limits of analyst queries (``TASKPULSE_SQL_*``)."""

    max_execution_s: float = 30.0
    max_result_rows: int = 100_000
    max_result_bytes: int = 64 * 1024 * 1024
    max_memory_bytes: int = 2 * 1024**3
    max_concurrent: int = 2
    max_threads: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlLimits:
        """The limits ``TASKPULSE_SQL_*`` ask for (threads: half the cores unless set)."""
        return cls(
            settings.sql_max_execution_s, settings.sql_max_result_rows, settings.sql_max_result_bytes,
            settings.sql_max_memory_bytes, settings.sql_max_concurrent,
            settings.sql_max_threads or max(1, (os.cpu_count() or 2) // 2),
        )  # fmt: skip

    def session_settings(self) -> dict[str, Any]:
        """The analyst session's settings; ``readonly`` comes last: once it is set, neither
        the session nor a query can change any setting (``SETTINGS readonly=0`` included)."""
        return {
            "max_execution_time": self.max_execution_s,
            "timeout_overflow_mode": "throw",
            "max_result_rows": self.max_result_rows,
            "max_result_bytes": self.max_result_bytes,
            "result_overflow_mode": "throw",
            "max_memory_usage": self.max_memory_bytes,
            "max_threads": self.max_threads,
            "readonly": 1,
        }


def tls_kwargs(url: str, ca_file: str = "", verify: bool = True, client_cert: str = "", client_key: str = "") -> dict[str, Any]:  # noqa: E501
    """clickhouse-connect's TLS arguments for an ``https://`` URL (nothing for http or chDB):
    the server certificate is verified against ``ca_file`` (or the system's CAs).

    ``interface="https"`` is explicit because clickhouse-connect ignores a DSN's scheme: it
    infers TLS from the port only (443 / 8443), so ``https://host:9440`` would otherwise be
    plain HTTP, password included."""
    if not url.lower().startswith("https://"):
        return {}
    for setting, path in (("CA_FILE", ca_file), ("CLIENT_CERT", client_cert), ("CLIENT_KEY", client_key)):
        if path and not Path(path).is_file():
            raise ConfigError(f"TASKPULSE_CLICKHOUSE_{setting}: {path} is not a readable file")
    out: dict[str, Any] = {"interface": "https", "verify": verify}
    if ca_file:
        out["ca_cert"] = ca_file
    if client_cert:
        out["client_cert"] = client_cert
        if client_key:
            out["client_cert_key"] = client_key
    return out


def store_from_settings(
    settings: Settings, *, reader: bool = False, limits: SqlLimits | None = None
) -> ClickHouseStore:
    """The writer's store, or (``reader``) the one analyst queries use: the read-only user of
    ``clickhouse_read_url`` when it is set, else the writer's connection."""
    s = settings
    url, password = s.effective_clickhouse_url, s.clickhouse_password
    if reader and s.clickhouse_read_url:
        url, password = s.clickhouse_read_url, s.clickhouse_read_password
    tls = tls_kwargs(url, s.clickhouse_ca_file, s.clickhouse_verify, s.clickhouse_client_cert, s.clickhouse_client_key)
    return ClickHouseStore(
        url, s.clickhouse_database, password.get_secret_value(), limits or SqlLimits.from_settings(s), tls
    )


class ClickHouseStore:
    """The taskpulse tables in one ClickHouse database.

    The pipeline's client (writes and the roles' own queries) and, opened on first use, up
    to ``max_concurrent`` analyst clients (``analyst_query``): each its own session with
    ``readonly=1`` and the ``SqlLimits``.  chDB runs different sessions' calls concurrently,
    so an analyst query never holds up a write.
    """

    def __init__(
        self, url: str, database: str = "taskpulse", password: str = "", limits: SqlLimits | None = None,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.database = database
        self.password = password
        self.tls = dict(tls or {})
        self.limits = limits or SqlLimits()
        self._lock = threading.Lock()  # one call at a time on a client's session
        self._analyst_slots = threading.BoundedSemaphore(self.limits.max_concurrent)
        self._idle_analysts: list[Any] = []
        self._all_analysts: list[Any] = []
        self._pool_lock = threading.Lock()
        self._table_functions: frozenset[str] | None = None
        self.client = self._open()

    def _open(self, settings: dict[str, Any] | None = None) -> Any:
        url = self.url
        try:
            kwargs: dict[str, Any] = {"dsn": url, **self.tls}
            if self.password:
                kwargs["password"] = self.password
            if not url.startswith("chdb"):
                kwargs["autogenerate_session_id"] = False
            if settings:
                kwargs["settings"] = settings
            return clickhouse_connect.get_client(**kwargs)
        except OperationalError as exc:
            hint = (
                "TASKPULSE_CLICKHOUSE_CA_FILE (the CA that signed the server certificate)"
                if "certificate" in str(exc).lower()
                else "TASKPULSE_CLICKHOUSE_URL, or leave it empty for the embedded chDB engine"
            )
            raise SinkUnavailable(f"cannot reach ClickHouse at {redact(url)}: {exc}; check {hint}") from exc
        except (ClickHouseError, ValueError) as exc:
            raise ConfigError(
                f"cannot open ClickHouse at {redact(url)}: {exc}; check TASKPULSE_CLICKHOUSE_URL"
            ) from exc

    # ------------------------------------------------------------------ schema
    def migrate(self, relative_accuracy: float = 0.005) -> list[str]:
        """Apply the schema idempotently; returns the statements run."""
        stmts = ddl_statements(self.database, relative_accuracy)
        for stmt in stmts:
            self.command(stmt)
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

    # ------------------------------------------------------------------ analyst queries
    def analyst_query(self, sql: str) -> Any:
        """Run an analyst's query: checked (``core.sql_guard``), then run on the read-only,
        limited session.  ``QueryRefused`` (a ``SinkRejected``) names what is not allowed; a
        query waits for the one before it at most its own time limit."""
        if not self._analyst_slots.acquire(timeout=self.limits.max_execution_s):
            raise SinkRejected(
                f"{self.limits.max_concurrent} analyst queries have been running for "
                f"{self.limits.max_execution_s:g}s; try again"
            )
        client: Any = None
        try:
            with self._pool_lock:
                client = self._idle_analysts.pop() if self._idle_analysts else None
            if client is None:
                client = self._open(self.limits.session_settings())
                with self._pool_lock:
                    self._all_analysts.append(client)
            self._check(client, sql)
            return client.query(sql)
        except QueryRefused as exc:
            raise SinkRejected(str(exc)) from exc
        except (ClickHouseError, OSError) as exc:
            raise _classify(exc, "query") from exc
        finally:
            if client is not None:
                with self._pool_lock:
                    self._idle_analysts.append(client)
            self._analyst_slots.release()

    def _check(self, client: Any, sql: str) -> None:
        if self._table_functions is None:
            names = client.query("SELECT lower(name) FROM system.table_functions").result_rows
            self._table_functions = frozenset(str(n) for (n,) in names)
        try:
            ast = client.query("SELECT parseQueryToJSON({q:String})", parameters={"q": sql}).result_rows[0][0]
        except DatabaseError as exc:
            if "SYNTAX_ERROR" in str(exc) or "Code: 62." in str(exc):
                raise
            # a statement parseQueryToJSON cannot serialise (DESCRIBE, INSERT … VALUES, SYSTEM, …)
            try:
                lines = [str(r[0]) for r in client.query(f"EXPLAIN AST {sql}").result_rows]
            except DatabaseError as explain_exc:
                raise QueryRefused(f"query refused: it could not be checked ({explain_exc})") from explain_exc
            check_ast_text(lines, self._table_functions)
            return
        check_json_ast(str(ast), self._table_functions)

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.query(sql, parameters).result_rows]

    def watermarks(self) -> dict[str, dict[TP, int]]:
        """Per sink table, the highest source offset written for each (topic, partition)."""
        db = self.database
        out: dict[str, dict[TP, int]] = {}
        for table in ("events", "dlq"):
            sql = (
                f"SELECT src_topic, src_partition, max(src_offset) FROM {db}.{table} "
                "GROUP BY src_topic, src_partition"
            )
            out[table] = {(t, int(p)): int(o) for t, p, o in self.rows(sql)}
        marks: dict[TP, int] = {}
        for (offsets,) in self.rows(f"SELECT maxMap(src_offsets) FROM {db}.rollups"):
            for key, off in (offsets or {}).items():
                topic, _, part = key.rpartition(":")
                marks[(topic, int(part))] = int(off)
        out["rollups"] = marks
        return out

    def recent_ids(self, limit: int) -> list[tuple[str, Origin]]:
        """The ``limit`` most recently ingested event ids with their origins, oldest first."""
        sql = (
            f"SELECT id, src_topic, src_partition, src_offset, src_index FROM {self.database}.events "
            "ORDER BY ingested_at DESC, src_offset DESC LIMIT {limit:UInt64}"
        )
        rows = self.rows(sql, {"limit": limit})
        rows.reverse()
        return [(r[0], (r[1], int(r[2]), int(r[3]), int(r[4]))) for r in rows]

    def table_counts(self) -> dict[str, int]:
        """Rows per taskpulse table (from system.parts: cheap, approximate for merging engines)."""
        sql = (
            "SELECT table, sum(rows) FROM system.parts WHERE database = {db:String} AND active "
            "GROUP BY table"
        )
        return {t: int(n) for t, n in self.rows(sql, {"db": self.database})}

    def close(self) -> None:
        for client in (*self._all_analysts, self.client):
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing ClickHouse client failed", exc_info=True)


__all__ = ["ClickHouseStore", "DatabaseError", "SqlLimits"]
