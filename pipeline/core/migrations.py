"""Versioned schema migrations, the pure part: what a step is, the retention (TTL) a table
should have, and which steps a database still needs (``plan``).  A shared core module: each
domain's ``ddl.py`` declares its own steps next to the DDL they change; ``core.schema``
collects them in version order; the store (``sinks.clickhouse``) applies them and records
each in ``schema_migrations``.

A step is numbered once and never edited after a release: a later change is a new step.
Every statement of a step is idempotent (``IF NOT EXISTS``, ``OR REPLACE``), so a step that
ran half (a crash) or an unversioned database of an older release simply runs again.
Retention is not numbered: the TTL each table should have follows the settings
(``TASKPULSE_TTL_*``), and ``migrate`` modifies any table whose TTL differs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The table that records the applied steps (one row per step; a step applied twice by two
#: workers starting at once collapses to one row).
MIGRATIONS_TABLE = "schema_migrations"


def migrations_table_ddl(db: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {db}.{MIGRATIONS_TABLE}
(
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC'),
    applied_by String
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version"""


@dataclass(frozen=True)
class Stmt:
    """One statement of a step; ``mergetree_table``: it alters that table's storage
    (projections), so it runs only where the table is a MergeTree (on a cluster the
    operator runs it on the ``*_local`` table)."""

    sql: str
    mergetree_table: str = ""


@dataclass(frozen=True)
class Step:
    """One numbered migration step."""

    version: int
    name: str
    statements: tuple[Stmt, ...]

    @classmethod
    def of(cls, version: int, name: str, statements: Iterable[str | Stmt]) -> Step:
        return cls(version, name, tuple(s if isinstance(s, Stmt) else Stmt(s) for s in statements))


@dataclass(frozen=True)
class Retention:
    """Days each table keeps its rows (``TASKPULSE_TTL_*``); rollups per granularity."""

    events: int = 30
    dlq: int = 30
    rollups_1m: int = 7
    rollups_5m: int = 30
    rollups_1h: int = 90
    rollups_1d: int = 730
    tasks: int = 30
    task_executions: int = 730
    alerts: int = 365
    audit: int = 365

    def rollup_days(self) -> dict[str, int]:
        return {"1m": self.rollups_1m, "5m": self.rollups_5m, "1h": self.rollups_1h, "1d": self.rollups_1d}


def days_ttl(column: str, days: int) -> str:
    """The TTL expression of a table that keeps ``days`` days after ``column`` (written the
    way ClickHouse shows it in ``system.tables``, so what is there compares as text)."""
    return f"toDateTime({column}) + toIntervalDay({days})"


def tiered_ttl(column: str, tier_column: str, days: Mapping[str, int]) -> str:
    """The TTL expression of a table whose rows keep a number of days by tier (the last tier
    is the default)."""
    *first, (_, last) = days.items()
    tiers = ", ".join(f"{tier_column} = '{t}', {d}" for t, d in first)
    return f"{column} + toIntervalDay(multiIf({tiers}, {last}))"


_TTL_RE = re.compile(r"\bTTL (.+?)(?: SETTINGS |$)")


def ttl_of(engine_full: str) -> str:
    """The TTL expression in a table's ``system.tables.engine_full`` ('' when it has none)."""
    found = _TTL_RE.search(engine_full or "")
    return found.group(1).strip() if found else ""


def ttl_days(expression: str) -> str:
    """The days of a TTL expression, for people: ``30``, or ``1m: 7, 5m: 30, 1h: 90, else: 730``."""
    if not expression:
        return "none"
    tiers = re.findall(r"= '(\w+)', (\d+)", expression)
    if tiers:
        last = re.search(r", (\d+)\)\)\s*$", expression)
        return ", ".join([f"{t}: {d}" for t, d in tiers] + ([f"else: {last.group(1)}"] if last else []))
    flat = re.search(r"toIntervalDay\((\d+)\)", expression)
    return flat.group(1) if flat else expression


@dataclass
class Plan:
    """What a database needs: the steps not applied yet, and applied versions this code does
    not know (the database is ahead: a newer taskpulse migrated it)."""

    code_version: int
    db_version: int
    pending: list[Step] = field(default_factory=list)
    unknown: list[int] = field(default_factory=list)

    @property
    def ahead(self) -> bool:
        return bool(self.unknown)

    def ahead_message(self, database: str) -> str:
        return (
            f"the ClickHouse database {database!r} is at schema version {self.db_version}, ahead of this "
            f"taskpulse (it knows versions up to {self.code_version}; unknown: "
            f"{', '.join(map(str, self.unknown))}): a newer taskpulse migrated it. Run that release (or "
            "newer) here, or point TASKPULSE_CLICKHOUSE_DATABASE at another database"
        )

    def behind_message(self, database: str) -> str:
        names = ", ".join(f"{s.version} ({s.name})" for s in self.pending)
        return (
            f"the ClickHouse database {database!r} is at schema version {self.db_version}; this taskpulse "
            f"needs {self.code_version}: pending steps {names}. Run `taskpulse migrate` (or set "
            "TASKPULSE_AUTO_MIGRATE=true to let the worker apply them at start)"
        )


def plan(steps: Sequence[Step], applied: Iterable[int]) -> Plan:
    """The plan for a database whose applied versions are ``applied``."""
    done = set(applied)
    known = {s.version for s in steps}
    code = max(known, default=0)
    return Plan(
        code_version=code,
        db_version=max(done, default=0),
        pending=[s for s in steps if s.version not in done],
        unknown=sorted(done - known),
    )


@dataclass(frozen=True)
class TableTTL:
    """One table's TTL: what it has (``actual``) and what the settings ask (``wanted``)."""

    table: str
    engine: str
    actual: str
    wanted: str

    @property
    def managed(self) -> bool:
        """A table whose TTL migrate sets (a MergeTree here; on a cluster the Distributed
        table has none: its ``*_local`` table is the operator's)."""
        return self.engine.endswith("MergeTree")

    @property
    def differs(self) -> bool:
        return self.managed and self.actual != self.wanted


def status_json(
    database: str, steps: Sequence[Step], applied: Mapping[int, tuple[str, str]], ttls: Sequence[TableTTL]
) -> dict[str, Any]:
    """The schema status as JSON (``migrate --status``, ``/api/schema``, ``doctor``):
    ``applied``: version → (name, applied_at)."""
    p = plan(steps, applied)
    names = {s.version: s.name for s in steps}
    return {
        "database": database,
        "code_version": p.code_version,
        "db_version": p.db_version,
        "steps": [
            {"version": v, "name": names.get(v) or applied[v][0], "applied_at": applied[v][1] if v in applied else None,
             "state": "applied" if v in applied and v in names else "unknown to this taskpulse" if v in applied
             else "pending"}
            for v in sorted({*names, *applied})
        ],
        "pending": [s.version for s in p.pending],
        "unknown": p.unknown,
        "ttl": [
            {"table": t.table, "engine": t.engine, "actual": t.actual, "wanted": t.wanted,
             "actual_days": ttl_days(t.actual), "wanted_days": ttl_days(t.wanted),
             "state": "ok" if not t.differs else "differs" if t.managed else "not managed"}
            for t in ttls
        ],
    }  # fmt: skip


def check_steps(steps: Sequence[Step]) -> list[Step]:
    """``steps`` in version order; raises ``ValueError`` when versions repeat or leave gaps
    (two domains that took the same number)."""
    ordered = sorted(steps, key=lambda s: s.version)
    versions = [s.version for s in ordered]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration steps must be numbered 1..N without gaps or repeats: {versions}")
    return ordered


__all__ = [
    "MIGRATIONS_TABLE", "Plan", "Retention", "Step", "Stmt", "TableTTL", "check_steps", "days_ttl",
    "migrations_table_ddl", "plan", "status_json", "tiered_ttl", "ttl_days", "ttl_of",
]  # fmt: skip
