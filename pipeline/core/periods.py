"""Reporting periods, defined once for every report and analytics view: ``daily`` is the last
24 hours, ``weekly`` the last 7 days, ``monthly`` the calendar month up to now (month
boundaries in a time zone, UTC unless one is given); each may end at another time instead
of now.  Pure: the current time is passed in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PERIOD_NAMES = ("daily", "weekly", "monthly")
_SPANS_MS = {"daily": 86_400_000, "weekly": 7 * 86_400_000}
_LABELS = {"daily": "last 24 hours", "weekly": "last 7 days", "monthly": "calendar month to date"}


@dataclass(frozen=True)
class Period:
    """``[start_ms, end_ms)`` in UTC epoch milliseconds, named, with the zone it is shown in."""

    name: str
    start_ms: int
    end_ms: int
    tz: str = "UTC"

    @property
    def prev(self) -> Period:
        """The span of the same length just before (what a report compares with)."""
        span = self.end_ms - self.start_ms
        return Period(self.name, self.start_ms - span, self.start_ms, self.tz)

    def describe(self) -> str:
        """``2026-11-29 09:12 → 2026-11-30 09:12 UTC (last 24 hours)``."""
        zone = zone_info(self.tz)

        def at(ms: int) -> str:
            return datetime.fromtimestamp(ms / 1000, tz=zone).strftime("%Y-%m-%d %H:%M")

        label = _LABELS.get(self.name, self.name)
        return f"{at(self.start_ms)} → {at(self.end_ms)} {self.tz} ({label})"


def zone_info(tz: str) -> ZoneInfo:
    """The IANA zone ``tz`` (``UTC``, ``Europe/Berlin``…); ValueError naming it otherwise."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}: use an IANA name such as UTC or Europe/Berlin") from exc


def period(name: str, now_ms: int, end_ms: int | None = None, tz: str = "UTC") -> Period:
    """The ``name`` period that ends at ``end_ms`` (default: now): the 24 hours or 7 days
    before it, or (monthly) the calendar month in ``tz`` that contains it, up to it."""
    if name not in PERIOD_NAMES:
        raise ValueError(f"unknown report period {name!r}: choose {', '.join(PERIOD_NAMES)}")
    end = now_ms if end_ms is None else end_ms
    zone = zone_info(tz)
    if name == "monthly":
        local = datetime.fromtimestamp(end / 1000, tz=zone)
        first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if first.timestamp() * 1000 >= end:  # ends exactly at a month boundary: the month before
            first = (first - timedelta(days=1)).replace(day=1)
        return Period(name, int(first.timestamp() * 1000), end, tz)
    return Period(name, end - _SPANS_MS[name], end, tz)
