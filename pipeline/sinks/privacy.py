"""Privacy with I/O: the rules from the settings, the erasure list every writer checks,
``taskpulse privacy export`` / ``erase`` and the audit trail (pure part: ``core.privacy``).

- **Export** finds a person in every column of every table of the database (as stored: the
  pseudonym under the current and every previous key, or the raw id when no key is set).
- **Erase** deletes those rows with ClickHouse mutations (``ALTER TABLE … DELETE … SETTINGS
  mutations_sync=2``: waited for; a lightweight DELETE is refused on tables with
  projections), checks that nothing is left, and adds the person to ``erasures``, which the
  ingest and correlation writers re-read every ``TASKPULSE_ERASURE_REFRESH_S``: what still
  names the person in Kafka (a replay, a late correction) is dropped, never written back.
- **Audit** rows (``audit``) are written with the process's writer store, never the
  read-only one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.core.ingest.batch import BatchOutput
from pipeline.core.privacy import AUDIT_COLUMNS, Privacy, is_pseudonym, mentions, pseudonyms_of
from pipeline.settings import Settings, redact
from pipeline.sinks.clickhouse import ClickHouseStore

log = logging.getLogger(__name__)

#: tables that never hold a person's data (the audit names only pseudonyms it was given)
_SKIP_TABLES = frozenset({"schema_migrations", "erasures", "audit"})


def privacy_of(settings: Settings) -> Privacy:
    """The pseudonymisation and redaction rules of ``TASKPULSE_PII_*`` / ``TASKPULSE_REDACT*``."""
    return Privacy.build(
        settings.pii_key.get_secret_value() or None,
        [k.strip() for k in settings.pii_key_previous.get_secret_value().split(",") if k.strip()],
        [f.strip() for f in settings.pii_fields.split(",") if f.strip()],
        [f.strip() for f in settings.redact_fields.split(",") if f.strip()],
        settings.redact,
    )


def subjects_of(privacy: Privacy, user: str) -> list[str]:
    """What ``user`` (a raw id or a pseudonym) is stored as."""
    user = user.strip()
    if not user:
        raise ValueError("give the user's id (as the producer sent it) or its pseudonym (pn_…)")
    return pseudonyms_of(privacy.keys, user)


# --------------------------------------------------------------------------- erasure list


class ErasureList:
    """The erased subjects, re-read from ``erasures`` at most every ``refresh_s``."""

    def __init__(self, store: ClickHouseStore, refresh_s: float = 30.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.erased: frozenset[str] = frozenset()
        self.loaded_at = float("-inf")
        self.dropped = 0

    def load(self) -> None:
        try:
            rows = self.store.rows(f"SELECT DISTINCT subject FROM {self.store.database}.erasures")
        except Exception as exc:  # noqa: BLE001 - an older schema, or ClickHouse down: keep the list we have
            log.warning("cannot read the erasure list (kept the last one): %s", redact(str(exc))[:300])
            return
        self.erased = frozenset(str(r[0]) for r in rows)
        self.loaded_at = time.monotonic()

    async def refresh(self) -> None:
        if time.monotonic() - self.loaded_at >= self.refresh_s:
            await asyncio.to_thread(self.load)

    def drop_erased(self, out: BatchOutput) -> int:
        """Take the events and dead letters that name an erased person out of ``out`` (their
        offsets still count as written; rollups keep the counts, which name no one)."""
        if not self.erased:
            return 0
        erased, dropped = self.erased, 0
        parts = out.parts
        for part in [*parts, *([] if any(p is out for p in parts) else [out])]:
            kept = [a for a in part.events if not mentions(_payload(a), erased)]
            letters = [r for r in part.rejected if not mentions(r.original.decode("utf-8", "replace"), erased)]
            if any(p is part for p in parts):
                dropped += len(part.events) - len(kept) + len(part.rejected) - len(letters)
            part.events, part.rejected = kept, letters
        self.dropped += dropped
        if dropped:
            log.info("dropped %d events / dead letters naming an erased person (erasure list)", dropped)
        return dropped

    def keep_messages(self, messages: list[tuple[str, bytes, bytes]]) -> list[tuple[str, bytes, bytes]]:
        """The (topic, value, key) messages whose value names no erased person."""
        if not self.erased:
            return messages
        kept = [m for m in messages if not mentions(m[1].decode("utf-8", "replace"), self.erased)]
        self.dropped += len(messages) - len(kept)
        return kept

    def keep_rows(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The rows none of whose text cells names an erased person."""
        if not self.erased:
            return rows
        kept = [r for r in rows if not any(isinstance(v, str) and mentions(v, self.erased) for v in r)]
        if len(kept) < len(rows):
            self.dropped += len(rows) - len(kept)
            log.info("dropped %d rows naming an erased person (erasure list)", len(rows) - len(kept))
        return kept


def _payload(a: Any) -> str:
    return a.payload.decode("utf-8", "replace")


# --------------------------------------------------------------------------- export / erase


def _tables(store: ClickHouseStore) -> list[tuple[str, list[str]]]:
    """(table, its text columns) of every table that stores rows (views skipped)."""
    db = store.database
    tables = [
        str(r[0]) for r in store.rows(
            "SELECT name FROM system.tables WHERE database = %(db)s AND engine LIKE '%%MergeTree' ORDER BY name",
            {"db": db},
        )
        if not str(r[0]).startswith("_probe_") and str(r[0]) not in _SKIP_TABLES
    ]  # fmt: skip
    out = []
    for t in tables:
        cols = [
            str(r[0]) for r in store.rows(
                "SELECT name FROM system.columns WHERE database = %(db)s AND table = %(t)s "
                "AND (type LIKE '%%String%%') ORDER BY position",
                {"db": db, "t": t},
            )
        ]  # fmt: skip
        if cols:
            out.append((t, cols))
    return out


def _condition(columns: Sequence[str], subjects: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """A WHERE that matches a row naming any subject: a pseudonym anywhere in a text cell, a
    raw id as a whole cell or a JSON string inside one."""
    parts, params = [], {}
    for i, s in enumerate(subjects):
        params[f"s{i}"] = s
        if is_pseudonym(s):
            needle = f"%(s{i})s"
            parts += [f"position(toString(`{c}`), {needle}) > 0" for c in columns]
        else:
            params[f"q{i}"] = orjson.dumps(s).decode()
            parts += [f"(toString(`{c}`) = %(s{i})s OR position(toString(`{c}`), %(q{i})s) > 0)" for c in columns]
    return " OR ".join(parts), params


def export(store: ClickHouseStore, privacy: Privacy, user: str) -> dict[str, Any]:
    """Everything stored about ``user``: table → rows (as column → value)."""
    subjects = subjects_of(privacy, user)
    tables: dict[str, list[dict[str, Any]]] = {}
    for table, cols in _tables(store):
        where, params = _condition(cols, subjects)
        result = store.query(f"SELECT * FROM {store.database}.`{table}` WHERE {where}", params)
        rows = [dict(zip(result.column_names, (_jsonable(v) for v in row), strict=True))
                for row in result.result_rows]  # fmt: skip
        if rows:
            tables[table] = rows
    return {"subjects": subjects, "tables": tables, "rows": sum(len(r) for r in tables.values())}


def erase(store: ClickHouseStore, privacy: Privacy, user: str, by: str, settle_s: float = 0.0) -> dict[str, Any]:
    """Put the person on the erasure list, wait ``settle_s`` (TASKPULSE_ERASURE_REFRESH_S: by
    then every writer has re-read the list, so nothing written after the deletes can name the
    person), then delete every row naming them from every table (mutations, waited for) and
    verify none is left."""
    subjects = subjects_of(privacy, user)
    db = store.database
    now = datetime.now(UTC)
    store.insert("erasures", [(s, now, by) for s in subjects], ["subject", "erased_at", "erased_by"])
    if settle_s > 0:
        time.sleep(settle_s + 0.5)
    deleted: dict[str, int] = {}
    for table, cols in _tables(store):
        where, params = _condition(cols, subjects)
        n = int(store.rows(f"SELECT count() FROM {db}.`{table}` WHERE {where}", params)[0][0])
        if not n:
            continue
        store.query(f"ALTER TABLE {db}.`{table}` DELETE WHERE {where} SETTINGS mutations_sync = 2", params)
        left = int(store.rows(f"SELECT count() FROM {db}.`{table}` WHERE {where}", params)[0][0])
        if left:
            raise RuntimeError(f"erasure of {table}: {left} rows still name the person after the mutation")
        deleted[table] = n
    return {"subjects": subjects, "deleted": deleted, "rows": sum(deleted.values())}


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


# --------------------------------------------------------------------------- audit


def audit(
    store: ClickHouseStore, who: str, role: str, action: str, target: str, rows: int, status: int = 200,
    detail: str = "",
) -> None:
    """One audit row, written by ``store`` (the writer).  A failure is logged, never raised."""
    try:
        store.insert(
            "audit", [(datetime.now(UTC), who, role, action, target[:2000], int(rows), int(status), detail[:2000])],
            AUDIT_COLUMNS,
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - the action itself already happened
        log.error("cannot write the audit row (%s %s by %s): %s", action, target[:200], who, redact(str(exc))[:300])


def audit_rows(
    store: ClickHouseStore, limit: int, since: str = "", who: str = "", action: str = ""
) -> list[dict[str, Any]]:
    """The audit trail, newest first."""
    where: list[str] = ["1"]
    params: dict[str, Any] = {"limit": limit}
    if since:
        where.append("at >= parseDateTime64BestEffort(%(since)s, 3, 'UTC')")
        params["since"] = since
    if who:
        where.append("who = %(who)s")
        params["who"] = who
    if action:
        where.append("action = %(action)s")
        params["action"] = action
    result = store.query(
        f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {store.database}.audit WHERE {' AND '.join(where)} "
        "ORDER BY at DESC LIMIT %(limit)s", params,
    )  # fmt: skip
    return [dict(zip(AUDIT_COLUMNS, (_jsonable(v) for v in r), strict=True)) for r in result.result_rows]

