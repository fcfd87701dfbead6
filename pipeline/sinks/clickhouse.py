"""ClickHouse through clickhouse-connect: an HTTP server, or chDB in-process (``chdb:///path``).

Blocking calls; callers run them off the event loop.  Rows go in as tuples (Native, encoded
by the client), or as JSONEachRow lines that ClickHouse parses itself (``JsonRows``: the
``events`` table, fed from the normalized JSON the processor already made).  Connection-level failures become
``SinkUnavailable`` (retry the same batch later); refusals of the data itself (a value a
column or the client's serializer cannot hold) become ``SinkRejected``, which the writer
isolates row by row with ``refused_rows`` against each table's ``Null``-engine twin (so
finding the rows writes nothing); anything no row split can cure is ``SinkStructural``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.binding import finalize_query
from clickhouse_connect.driver.exceptions import (
    ClickHouseError,
    DatabaseError,
    DataError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
)

from pipeline.core import schema_queries
from pipeline.core.ingest import queries as ingest_queries
from pipeline.core.ingest.dedup import Origin
from pipeline.core.ingest.logs import StoredMarks, TPLog, parse_src_key
from pipeline.core.ingest.rows import DLQ_COLUMNS, EVENT_JSON, ROLLUP_COLUMNS, JsonRows
from pipeline.core.isolate import isolate
from pipeline.core.migrations import MIGRATIONS_TABLE, Retention, TableTTL, plan, status_json, ttl_of
from pipeline.core.schema import bootstrap_statements, migration_steps, probe_ddl, ttl_targets
from pipeline.core.sql_guard import (
    TABLE_FUNCTIONS_QUERY,
    QueryRefused,
    ast_json_query,
    check_ast_text,
    check_json_ast,
    explain_ast_query,
)
from pipeline.errors import (
    ConfigError,
    SchemaMismatch,
    SinkBackpressure,
    SinkRejected,
    SinkStructural,
    SinkUnavailable,
)
from pipeline.settings import Settings, redact

log = logging.getLogger(__name__)

#: Words in an error message that mean "the server is not there", whatever the class.
_UNAVAILABLE_HINTS = ("connection", "timed out", "timeout", "refused", "unreachable", "reset")


#: ClickHouse's own "slow down" answers (too many parts: merges are behind).
_BACKPRESSURE_HINTS = ("too many parts", "too_many_parts", "code: 252")
_BACKPRESSURE_CODES = frozenset({252})  # TOO_MANY_PARTS

#: Server error codes that a row's *value* causes (parse, type, range, size, constraint):
#: splitting the batch finds the rows.  Every other server code is structural (unknown
#: table or column, access, read-only, disk, memory, quota, timeouts, …): no split cures
#: it, so it is retried and reported instead of dead-lettering every row.
CONTENT_CODES = frozenset({
    6, 25, 26, 27, 38, 41, 53, 69, 70, 72, 117, 128, 131, 190, 321, 349, 395, 407, 469,
})  # fmt: skip
#: Server codes that mean the server or the network is not (yet) there.
_UNAVAILABLE_CODES = frozenset({159, 209, 210, 425})
#: Client-side exceptions that the serializer raises for a value it cannot encode (struct
#: range, pre-1970 DateTime, wrong Python type, unencodable text).
_CONTENT_EXCEPTIONS = (DataError, TypeError, ValueError, OverflowError, AttributeError, struct.error)
_CODE_RE = re.compile(r"\bCode:\s*(\d+)")
_COLUMN_RE = re.compile(r"column [`'\"]?([A-Za-z_][A-Za-z0-9_]*)")


#: JSON lines written to chDB's INSERT file at a time
_LINES_PER_WRITE = 1024

_WIRE_FORMAT = re.compile(r"\s*\bFORMAT (?:Native|Arrow|JSON\w*|TabSeparated\w*)\b")


def _message(exc: BaseException) -> str:
    """The error text, with its cause (the serializer's own words) when it has one, without
    the client's ``FORMAT Native`` (added to every query on the wire, never written by the user)."""
    text = _WIRE_FORMAT.sub("", str(exc)) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({type(cause).__name__}: {cause})"
    return text


def _classify(exc: Exception, what: str) -> Exception:
    """Map any exception of a ClickHouse call to the sink error that decides its handling."""
    text = redact(_message(exc))
    low = text.lower()
    code = getattr(exc, "code", None)
    if code is None and (found := _CODE_RE.search(text)):
        code = int(found.group(1))
    if code in _BACKPRESSURE_CODES or any(h in low for h in _BACKPRESSURE_HINTS):
        return SinkBackpressure(f"ClickHouse asks to slow down during {what}: {text[:300]}", retry_after=1.0)
    if isinstance(exc, OperationalError | OSError) or code in _UNAVAILABLE_CODES:
        return SinkUnavailable(f"ClickHouse unavailable during {what}: {text[:300]}")
    if code is None and any(h in low for h in _UNAVAILABLE_HINTS):
        return SinkUnavailable(f"ClickHouse unavailable during {what}: {text[:300]}")
    if isinstance(exc, ProgrammingError | NotSupportedError):
        # client-side: the insert does not match the table (column names or count)
        return SinkStructural(f"ClickHouse cannot take {what}: {text[:500]}")
    if code in CONTENT_CODES or (code is None and isinstance(exc, _CONTENT_EXCEPTIONS)):
        match = _COLUMN_RE.search(text)
        return SinkRejected(f"ClickHouse refused {what}: {text[:500]}", column=match.group(1) if match else None)
    return SinkStructural(f"ClickHouse cannot take {what}: {text[:500]}")


_ERRNO_RE = re.compile(r"\[Errno -?\d+\] ([^\"')(]+)")


def connection_cause(exc: BaseException) -> str:
    """The short reason of a connection failure (``Connection refused``, ``Name or service
    not known``…) instead of the HTTP client's nested retry message."""
    text = redact(_message(exc))
    found = _ERRNO_RE.search(text)
    if found:
        return found.group(1).strip().rstrip(".")
    for hint in ("timed out", "certificate verify failed", "refused"):
        if hint in text.lower():
            return hint
    return text[:160]


def chdb_lock_holder(path: Path) -> str | None:
    """Who holds the embedded database at ``path`` (chDB ``flock``s its ``status`` file,
    which names the holder's pid), or None when it is free.  For a process that has not
    opened chDB itself (the CLI): its own engine would hold the lock too."""
    import fcntl

    status = path / "status"
    try:
        with status.open("rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                first = fh.read(200).decode(errors="replace").splitlines()
                return first[0].strip() if first else "another process"
            fcntl.flock(fh, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def bind_parameters(sql: str, parameters: dict[str, Any]) -> str:
    """``sql`` with its ``%(name)s`` placeholders replaced by the values, quoted and escaped
    by clickhouse-connect (for a query sent as text: the worker's /api/sql)."""
    return str(finalize_query(sql, parameters))


def retention_from_settings(s: Settings) -> Retention:
    """The TTLs ``TASKPULSE_TTL_*`` ask for."""
    return Retention(
        events=s.ttl_events_days, dlq=s.ttl_dlq_days, rollups_1m=s.ttl_rollups_1m_days,
        rollups_5m=s.ttl_rollups_5m_days, rollups_1h=s.ttl_rollups_1h_days, rollups_1d=s.ttl_rollups_1d_days,
        tasks=s.ttl_tasks_days, task_executions=s.ttl_task_executions_days, alerts=s.ttl_alerts_days,
        audit=s.ttl_audit_days,
    )  # fmt: skip


def _utcnow() -> datetime:
    return datetime.now(UTC)


def probe_table(table: str) -> str:
    """The ``Null``-engine twin of ``table``: takes the same rows, stores nothing."""
    return f"_probe_{table}"


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


class ClickHouseStore:
    """The taskpulse tables in one ClickHouse database.

    The pipeline's client (writes and the roles' own queries) and, opened on first use, up
    to ``max_concurrent`` analyst clients (``analyst_query``): each its own session with
    ``readonly=1`` and the ``SqlLimits``.  chDB runs different sessions' calls concurrently,
    so an analyst query never holds up a write.
    """

    @classmethod
    def from_settings(
        cls, settings: Settings, *, reader: bool = False, limits: SqlLimits | None = None
    ) -> ClickHouseStore:
        """The only way the worker and the CLI open the store: the writer's, or (``reader``)
        the one analyst queries use: the read-only user of ``clickhouse_read_url`` when it is
        set, else the writer's connection."""
        s = settings
        url, password = s.effective_clickhouse_url, s.clickhouse_password
        if reader and s.clickhouse_read_url:
            url, password = s.clickhouse_read_url, s.clickhouse_read_password
        tls = tls_kwargs(
            url, s.clickhouse_ca_file, s.clickhouse_verify, s.clickhouse_client_cert, s.clickhouse_client_key
        )
        store = cls(url, s.clickhouse_database, password.get_secret_value(), limits or SqlLimits.from_settings(s), tls)
        store.relative_accuracy = s.sketch_relative_accuracy
        store.retention = retention_from_settings(s)
        return store

    def __init__(
        self, url: str, database: str = "taskpulse", password: str = "", limits: SqlLimits | None = None,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.database = database
        self.password = password
        self.tls = dict(tls or {})
        self.limits = limits or SqlLimits()
        #: the schema this store migrates to: sketch accuracy and TTLs (``from_settings``)
        self.relative_accuracy = 0.005
        self.retention = Retention()
        self._lock = threading.Lock()  # one call at a time on a client's session
        self._analyst_slots = threading.BoundedSemaphore(self.limits.max_concurrent)
        self._idle_analysts: list[Any] = []
        self._all_analysts: list[Any] = []
        self._pool_lock = threading.Lock()
        self._table_functions: frozenset[str] | None = None
        # The client logs every value it cannot serialize with a traceback; the writer
        # reports each refused row itself (DLQ entry, one warning), so keep those quiet.
        logging.getLogger("clickhouse_connect.driver.transform").setLevel(logging.CRITICAL)
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
            raise SinkUnavailable(
                f"cannot reach ClickHouse at {redact(url)}: {connection_cause(exc)}; check {hint}"
            ) from exc
        except (ClickHouseError, ValueError) as exc:
            raise ConfigError(
                f"cannot open ClickHouse at {redact(url)}: {exc}; check TASKPULSE_CLICKHOUSE_URL"
            ) from exc

    # ------------------------------------------------------------------ schema
    def _tables(self) -> dict[str, tuple[str, str]]:
        """Table → (engine, engine_full) of every table in the database."""
        return {str(n): (str(e), str(f)) for n, e, f in self.rows(*schema_queries.tables(self.database))}

    def _engine(self, table: str) -> str:
        return self._tables().get(table, ("", ""))[0]

    def applied_steps(self, tables: Mapping[str, tuple[str, str]] | None = None) -> dict[int, tuple[str, str]]:
        """Applied step version → (name, applied_at); empty for a fresh database or one an
        older release made before versioned migrations (every step then runs: each is
        idempotent)."""
        if MIGRATIONS_TABLE not in (self._tables() if tables is None else tables):
            return {}
        rows = self.rows(*schema_queries.applied_steps(self.database))
        return {int(v): (str(n), str(at)) for v, n, at in rows}

    def table_ttls(self, tables: Mapping[str, tuple[str, str]] | None = None) -> list[TableTTL]:
        """Each table's TTL against what the settings (``self.retention``) ask."""
        tables = self._tables() if tables is None else tables
        return [
            TableTTL(t, tables.get(t, ("", ""))[0], ttl_of(tables.get(t, ("", ""))[1]), wanted)
            for t, wanted in ttl_targets(self.retention).items()
        ]

    def schema_status(self) -> dict[str, Any]:
        """Applied and pending steps, unknown (newer) versions, TTLs vs settings, as JSON."""
        steps = migration_steps(self.database, self.relative_accuracy, self.retention)
        tables = self._tables()
        return status_json(self.database, steps, self.applied_steps(tables), self.table_ttls(tables))

    def migrate(self, relative_accuracy: float | None = None, applied_by: str = "taskpulse migrate") -> list[str]:
        """Bring the database to this code's schema: the pending steps in order (each recorded
        in ``schema_migrations``), ``ALTER TABLE … MODIFY TTL`` where a table's TTL differs
        from the settings, then the ``Null`` twins again.  Returns the statements run.
        Raises ``SchemaMismatch`` when the database is ahead of this code."""
        if relative_accuracy is not None:
            self.relative_accuracy = relative_accuracy
        db = self.database
        steps = migration_steps(db, self.relative_accuracy, self.retention)
        ran = list(bootstrap_statements(db))
        for stmt in ran:
            self.command(stmt)
        todo = plan(steps, self.applied_steps())
        if todo.ahead:
            raise SchemaMismatch(todo.ahead_message(db))
        for step in todo.pending:
            for one in step.statements:
                if one.mergetree_table and not self._engine(one.mergetree_table).endswith("MergeTree"):
                    continue  # a Distributed table: its storage is the operator's *_local table
                self.command(one.sql)
                ran.append(one.sql)
            self.insert(MIGRATIONS_TABLE, [(step.version, step.name, _utcnow(), applied_by)],
                        ["version", "name", "applied_at", "applied_by"])  # fmt: skip
            log.info("schema migration step %d applied: %s", step.version, step.name)
        ran += self.apply_retention()
        for stmt in probe_ddl(db):  # again: the Null twins follow every change of their table
            self.command(stmt)
            ran.append(stmt)
        return ran

    def apply_retention(self) -> list[str]:
        """``MODIFY TTL`` on every table whose TTL differs from ``self.retention``."""
        ran = []
        for t in self.table_ttls():
            if t.differs:
                stmt = schema_queries.modify_ttl(self.database, t.table, t.wanted)
                self.command(stmt)
                ran.append(stmt)
                log.warning("retention of %s changed: TTL %s (was %s)", t.table, t.wanted, t.actual or "none")
        return ran

    def ensure_schema(self, auto_migrate: bool, applied_by: str) -> list[str]:
        """At worker start: refuse a database ahead of this code; apply pending steps (and
        TTL changes) when ``auto_migrate``, else refuse a database behind it."""
        todo = plan(migration_steps(self.database, self.relative_accuracy, self.retention), self.applied_steps())
        if todo.ahead:
            raise SchemaMismatch(todo.ahead_message(self.database))
        if not auto_migrate:
            if todo.pending:
                raise SchemaMismatch(todo.behind_message(self.database))
            for t in self.table_ttls():
                if t.differs:
                    log.warning(
                        "the TTL of %s (%s) differs from the settings (%s); `taskpulse migrate` applies it",
                        t.table, t.actual or "none", t.wanted,
                    )  # fmt: skip
            for stmt in probe_ddl(self.database):
                self.command(stmt)
            return []
        return self.migrate(applied_by=applied_by)

    # ------------------------------------------------------------------ writes
    def insert(self, table: str, rows: Sequence[Any], columns: list[str] | JsonRows) -> None:
        """Insert ``rows``: tuples in the order of ``columns`` (Native, encoded by the client),
        or JSONEachRow lines that ``columns`` (a ``JsonRows``) maps to the table's columns."""
        if not rows:
            return
        # clickhouse-connect's InsertContext keeps a bound method of itself: a reference cycle
        # that would hold the rows (a batch's 20,000 tuples) until the cyclic collector's next
        # full pass, rare under the worker's GC thresholds.  It gets a copy of the list,
        # emptied once the call returns: the rows go with the caller's list.
        data: list[Any] = [] if isinstance(columns, JsonRows) else list(rows)
        try:
            with self._lock:
                if isinstance(columns, JsonRows):
                    self._insert_lines(table, rows, columns)
                else:
                    self.client.insert(f"{self.database}.{table}", data, column_names=columns)
        except Exception as exc:  # noqa: BLE001 - every failure is classified: outage, content or structure
            raise _classify(exc, f"insert into {table}") from exc
        finally:
            data.clear()

    def _insert_lines(self, table: str, lines: Sequence[bytes], spec: JsonRows) -> None:
        """One INSERT … SELECT over the lines: a server gets them as the request's body
        (``input()``); chDB, which has no request body, reads them from a file (as the client
        does with Native blocks for chDB)."""
        if not self.url.startswith("chdb"):
            body = b"\n".join(lines)
            self.client.command(ingest_queries.json_insert(self.database, table, spec), data=body)
            return
        fh = tempfile.NamedTemporaryFile(prefix="taskpulse-", suffix=".jsonl", delete=False)  # noqa: SIM115
        try:  # removed whatever fails, the write included (a full disk is retried: no file per attempt)
            with fh:
                # a slice at a time: the lines are not held a second time as one body (10 MiB a batch)
                for i in range(0, len(lines), _LINES_PER_WRITE):
                    fh.write(b"\n".join(lines[i : i + _LINES_PER_WRITE]) + b"\n")
            self.client.command(ingest_queries.json_insert(self.database, table, spec, fh.name))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(fh.name)

    def refused_rows(
        self, table: str, rows: Sequence[Any], columns: list[str] | JsonRows, max_probes: int = 100_000
    ) -> list[tuple[int, SinkRejected]]:
        """The rows of ``rows`` that ``table`` refuses for their content, each with the
        refusal (naming the column where it can be told).  Probes the table's ``Null``
        twin by halves: nothing is written.  Raises ``SinkStructural`` /
        ``SinkUnavailable`` when the probe itself cannot run."""
        twin = probe_table(table)

        def probe(lo: int, hi: int) -> SinkRejected | None:
            try:
                self.insert(twin, rows[lo:hi], columns)
            except SinkRejected as exc:
                return exc
            return None

        found = isolate(len(rows), probe, max_probes)
        out = []
        for i, exc in found:
            one = exc if exc.column else self._column_of(twin, rows[i], columns, exc)
            out.append((i, SinkRejected(str(one).replace(twin, table), column=one.column)))
        return out

    def _column_of(self, twin: str, row: Any, columns: list[str] | JsonRows, exc: SinkRejected) -> SinkRejected:
        """Which column of a refused row the engine refuses (one probe per column)."""
        probes: list[tuple[str, Any, list[str] | JsonRows]]
        if isinstance(columns, JsonRows):
            probes = [(col, row, columns.only(col)) for col in columns.columns]
        else:
            probes = [(col, (value,), [col]) for col, value in zip(columns, row, strict=False)]
        for col, one_row, one_column in probes:
            try:
                self.insert(twin, [one_row], one_column)
            except SinkRejected as one:
                return SinkRejected(str(one), column=col)
            except SinkStructural:
                continue  # e.g. a column that cannot be inserted alone
        return exc

    def insert_events(self, lines: Sequence[bytes]) -> None:
        self.insert("events", lines, EVENT_JSON)

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
        with self._analyst_session() as client:
            try:
                self._check(client, sql)
            except QueryRefused as exc:
                raise SinkRejected(str(exc)) from exc
            return client.query(sql)

    def read(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        """Run one of taskpulse's own read queries (the API's resources) on a read-only,
        limited analyst session, beside the pipeline's writes rather than behind them."""
        with self._analyst_session() as client:
            return client.query(sql, parameters=parameters)

    @contextlib.contextmanager
    def _analyst_session(self) -> Iterator[Any]:
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
            yield client
        except (ClickHouseError, OSError) as exc:
            raise _classify(exc, "query") from exc
        finally:
            if client is not None:
                with self._pool_lock:
                    self._idle_analysts.append(client)
            self._analyst_slots.release()

    def _check(self, client: Any, sql: str) -> None:
        if self._table_functions is None:
            names = client.query(TABLE_FUNCTIONS_QUERY).result_rows
            self._table_functions = frozenset(str(n) for (n,) in names)
        try:
            ast = client.query(*ast_json_query(sql)).result_rows[0][0]
        except DatabaseError as exc:
            if "SYNTAX_ERROR" in str(exc) or "Code: 62." in str(exc):
                raise
            # a statement parseQueryToJSON cannot serialise (DESCRIBE, INSERT … VALUES, SYSTEM, …)
            try:
                lines = [str(r[0]) for r in client.query(explain_ast_query(sql)).result_rows]
            except DatabaseError as explain_exc:
                raise QueryRefused(f"query refused: it could not be checked ({explain_exc})") from explain_exc
            check_ast_text(lines, self._table_functions)
            return
        check_json_ast(str(ast), self._table_functions)

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.query(sql, parameters).result_rows]

    def watermarks(self) -> StoredMarks:
        """Per sink table, the highest source offset written for each (topic, partition, log)."""
        db = self.database
        out: StoredMarks = {}
        for table in ("events", "dlq"):
            rows = self.rows(*ingest_queries.sink_watermarks(db, table))
            out[table] = {(t, int(p), str(lg)): int(o) for t, p, lg, o in rows}
        marks: dict[TPLog, int] = {}
        for (offsets,) in self.rows(*ingest_queries.rollup_watermarks(db)):
            for key, off in (offsets or {}).items():
                marks[parse_src_key(key)] = int(off)
        out["rollups"] = marks
        return out

    def recent_ids(self, limit: int) -> list[tuple[str, Origin]]:
        """The ``limit`` most recently ingested event ids with their origins, oldest first."""
        rows = self.rows(*ingest_queries.recent_ids(self.database, limit))
        rows.reverse()
        return [(r[0], (r[1], int(r[2]), int(r[3]), int(r[4]), str(r[5]))) for r in rows]

    def table_counts(self) -> dict[str, int]:
        """Rows per taskpulse table (from system.parts: cheap, approximate for merging engines)."""
        return {t: int(n) for t, n in self.rows(*schema_queries.table_counts(self.database))}

    def close(self) -> None:
        for client in (*self._all_analysts, self.client):
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing ClickHouse client failed", exc_info=True)


__all__ = ["ClickHouseStore", "DatabaseError", "SqlLimits"]
