"""The store's own queries about the schema, as text plus parameters (``{name:Type}``
placeholders, bound by the ClickHouse client; the database name is an identifier and is
formatted in): the tables and their engines, the applied migration steps, the TTL change of
a table, and the rows per table.  Pure."""

from __future__ import annotations

from typing import Any

from pipeline.core.migrations import MIGRATIONS_TABLE

Query = tuple[str, dict[str, Any]]


def tables(db: str) -> Query:
    """(name, engine, engine_full) of every table in ``db``."""
    return "SELECT name, engine, engine_full FROM system.tables WHERE database = {db:String}", {"db": db}


def applied_steps(db: str) -> Query:
    """(version, name, applied_at text) of every applied migration step, in version order."""
    return (
        f"SELECT version, argMax(name, applied_at), toString(max(applied_at)) FROM {db}.{MIGRATIONS_TABLE} "
        "GROUP BY version ORDER BY version",
        {},
    )


def modify_ttl(db: str, table: str, ttl: str) -> str:
    """The statement that gives ``table`` the TTL expression ``ttl`` (from ``core.schema.ttl_targets``)."""
    return f"ALTER TABLE {db}.{table} MODIFY TTL {ttl}"


def table_counts(db: str) -> Query:
    """(table, rows) of every table in ``db``, from its active parts."""
    return (
        "SELECT table, sum(rows) FROM system.parts WHERE database = {db:String} AND active GROUP BY table",
        {"db": db},
    )
