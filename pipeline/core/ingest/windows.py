"""Tumbling event-time windows aligned to UTC: 1m, 5m, 1h, 1d.

Windows are defined by the event's own time, never the wall clock, so replayed history
and late events land in the window they belong to (Faust's windowed tables expire on
wall-clock time, which is why this lives here and not in Faust).
"""

from __future__ import annotations

#: Granularity name → window length in milliseconds.  Epoch 0 is UTC midnight, so
#: ``ts - ts % size`` is aligned to UTC minutes, hours and days.
GRANULARITIES: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "1h": 3_600_000,
    "1d": 86_400_000,
}

#: How long each tier is kept in ClickHouse (days).
RETENTION_DAYS: dict[str, int] = {"1m": 7, "5m": 30, "1h": 90, "1d": 730}


def window_start(ts_ms: int, size_ms: int) -> int:
    """Start (inclusive, ms) of the tumbling window of ``size_ms`` that holds ``ts_ms``."""
    return ts_ms - ts_ms % size_ms


def window_bounds(ts_ms: int, size_ms: int) -> tuple[int, int]:
    """``[start, end)`` of the window that holds ``ts_ms``."""
    start = window_start(ts_ms, size_ms)
    return start, start + size_ms


def windows_for(ts_ms: int) -> list[tuple[str, int]]:
    """(granularity, window start) of every tier for one event time."""
    return [(name, ts_ms - ts_ms % size) for name, size in GRANULARITIES.items()]


def is_late(ts_ms: int, size_ms: int, watermark_ms: int, allowed_lateness_ms: int) -> bool:
    """True when the window of ``ts_ms`` closed (``end + lateness``) before ``watermark_ms``.

    Rollups are written as mergeable partials, so a late event still updates its window;
    this only tells consumers (alerting) that a window they considered final changed.
    """
    return window_start(ts_ms, size_ms) + size_ms + allowed_lateness_ms <= watermark_ms
