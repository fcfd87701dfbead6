"""DDL of the alerting tables (``alerts``: every alert state change)."""

from __future__ import annotations


def alerts_ddl(db: str) -> list[str]:
    return []
