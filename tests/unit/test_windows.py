"""Tumbling event-time windows aligned to UTC: 1m, 5m, 1h, 1d."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.ingest.windows import (
    GRANULARITIES,
    RETENTION_DAYS,
    is_late,
    window_bounds,
    window_start,
    windows_for,
)

#: 2025-11-03T00:00:00Z (a Monday)
DAY0 = 1_762_128_000_000
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def test_the_four_tiers_and_their_sizes() -> None:
    assert GRANULARITIES == {"1m": MIN, "5m": 5 * MIN, "1h": HOUR, "1d": DAY}
    assert set(RETENTION_DAYS) == set(GRANULARITIES)
    # coarser tiers are kept longer
    days = [RETENTION_DAYS[g] for g in ("1m", "5m", "1h", "1d")]
    assert days == sorted(days)


# 12:34:56.789 on DAY0
T = DAY0 + 12 * HOUR + 34 * MIN + 56_789

WINDOW_CASES = [
    # (granularity, ts, expected start)
    ("1m", T, DAY0 + 12 * HOUR + 34 * MIN),
    ("5m", T, DAY0 + 12 * HOUR + 30 * MIN),
    ("1h", T, DAY0 + 12 * HOUR),
    ("1d", T, DAY0),
    # exactly on a boundary: the window that starts there
    ("1m", DAY0 + 12 * HOUR + 35 * MIN, DAY0 + 12 * HOUR + 35 * MIN),
    ("5m", DAY0 + 12 * HOUR + 35 * MIN, DAY0 + 12 * HOUR + 35 * MIN),
    ("1h", DAY0 + 13 * HOUR, DAY0 + 13 * HOUR),
    ("1d", DAY0, DAY0),
    # one ms before a boundary: still the previous window
    ("1m", DAY0 + 12 * HOUR + 35 * MIN - 1, DAY0 + 12 * HOUR + 34 * MIN),
    ("5m", DAY0 + 12 * HOUR + 35 * MIN - 1, DAY0 + 12 * HOUR + 30 * MIN),
    ("1h", DAY0 + 13 * HOUR - 1, DAY0 + 12 * HOUR),
    ("1d", DAY0 - 1, DAY0 - DAY),
    ("1d", DAY0 + DAY - 1, DAY0),
    # one ms after
    ("1m", DAY0 + MIN + 1, DAY0 + MIN),
    ("1d", DAY0 + 1, DAY0),
    # the epoch itself
    ("1m", 0, 0),
    ("1d", 0, 0),
    ("1d", DAY - 1, 0),
]


@pytest.mark.parametrize(("gran", "ts", "start"), WINDOW_CASES)
def test_window_start_and_bounds(gran: str, ts: int, start: int) -> None:
    size = GRANULARITIES[gran]
    assert window_start(ts, size) == start
    assert window_bounds(ts, size) == (start, start + size)


@pytest.mark.parametrize(
    ("ts", "expected_day"),
    [
        (T, "2025-11-03T00:00:00+00:00"),
        (DAY0 - 1, "2025-11-02T00:00:00+00:00"),
        # 23:30 at -05:00 on the 2nd is 04:30Z on the 3rd: the UTC day counts
        (DAY0 + 4 * HOUR + 30 * MIN, "2025-11-03T00:00:00+00:00"),
    ],
)
def test_a_day_window_starts_at_utc_midnight(ts: int, expected_day: str) -> None:
    assert utc(window_start(ts, GRANULARITIES["1d"])).isoformat() == expected_day


def test_windows_for_gives_every_tier() -> None:
    assert windows_for(T) == [
        ("1m", DAY0 + 12 * HOUR + 34 * MIN),
        ("5m", DAY0 + 12 * HOUR + 30 * MIN),
        ("1h", DAY0 + 12 * HOUR),
        ("1d", DAY0),
    ]


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=253_402_300_799_999))
def test_windows_hold_their_event_and_are_utc_aligned(ts: int) -> None:
    tiers = dict(windows_for(ts))
    assert list(tiers) == list(GRANULARITIES)
    for gran, size in GRANULARITIES.items():
        start, end = window_bounds(ts, size)
        assert tiers[gran] == start == window_start(ts, size)
        assert start <= ts < end
        assert end - start == size
    # aligned to the UTC calendar, checked with datetime (no modulo)
    m1, m5, h1, d1 = (utc(tiers[g]) for g in ("1m", "5m", "1h", "1d"))
    assert (m1.second, m1.microsecond) == (0, 0)
    assert m1 == utc(ts).replace(second=0, microsecond=0)
    assert m5.minute % 5 == 0 and (m5.second, m5.microsecond) == (0, 0)
    assert h1 == utc(ts).replace(minute=0, second=0, microsecond=0)
    assert d1 == utc(ts).replace(hour=0, minute=0, second=0, microsecond=0)
    # finer windows nest inside coarser ones
    assert tiers["1d"] <= tiers["1h"] <= tiers["5m"] <= tiers["1m"] <= ts


SIZE = MIN
LATENESS = 5_000
W_START = DAY0 + 10 * MIN
W_END = W_START + SIZE

LATE_CASES = [
    # (ts, watermark, lateness, late?)
    (W_START, W_START, 0, False),  # the watermark is inside the window
    (W_START, W_END - 1, 0, False),
    (W_START, W_END, 0, True),  # window end reached: closed
    (W_END - 1, W_END, 0, True),  # last ms of the window, window closed
    (W_END, W_END, 0, False),  # first ms of the next window
    (W_START, W_END + LATENESS - 1, LATENESS, False),  # inside the allowed lateness
    (W_START, W_END + LATENESS, LATENESS, True),
    (W_START - 1, W_END, LATENESS, True),  # the previous window, closed long ago
    (W_START + 30_000, W_START - 3 * HOUR, 0, False),  # watermark behind the event
    (W_START, W_START + 2 * HOUR, 0, True),  # hours late
]


@pytest.mark.parametrize(("ts", "watermark", "lateness", "late"), LATE_CASES)
def test_is_late(ts: int, watermark: int, lateness: int, late: bool) -> None:
    assert is_late(ts, SIZE, watermark, lateness) is late


@pytest.mark.parametrize("gran", list(GRANULARITIES))
def test_is_late_per_tier(gran: str) -> None:
    size = GRANULARITIES[gran]
    ts = T
    end = window_start(ts, size) + size
    assert not is_late(ts, size, end - 1, 0)
    assert is_late(ts, size, end, 0)
    assert not is_late(ts, size, end + 999, 1000)
    assert is_late(ts, size, end + 1000, 1000)
