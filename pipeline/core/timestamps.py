"""Every accepted timestamp form → UTC epoch milliseconds.

Accepted: ISO 8601 with any offset (``Z`` included), naive ISO (taken as UTC), and epoch
numbers (or numeric strings) in seconds, milliseconds, microseconds or nanoseconds, told
apart by magnitude.  Anything else raises ``TimestampError`` with a message that says why.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

# Magnitude bands for epoch numbers.  Seconds up to 1e11 reach the year 5138; anything
# from 1e11 is milliseconds (from 1973), from 1e14 microseconds, from 1e17 nanoseconds.
_MS_FROM = 1e11
_US_FROM = 1e14
_NS_FROM = 1e17
_NS_UNTIL = 1e20
#: 0001-01-01 .. 9999-12-31 in epoch ms: what ClickHouse DateTime64(3) and datetime hold.
_MIN_MS = -62135596800000
#: an epoch in ns until year 9999 has 20 digits; leave room for leading zeros
_MAX_EPOCH_DIGITS = 32
_MAX_MS = 253402300799999


class TimestampError(ValueError):
    """The value cannot be read as a point in time."""


def epoch_to_ms(value: float) -> int:
    """An epoch number in s / ms / µs / ns (by magnitude) → UTC milliseconds.

    Rounds half up, like the ISO path, so one instant gives one value however it is sent.
    """
    if isinstance(value, bool):
        raise TimestampError("a boolean is not a timestamp")
    if isinstance(value, int):
        if value < 0:
            raise TimestampError(f"epoch value {value!r} is negative")
        if value < _MS_FROM:
            return value * 1000
        if value < _US_FROM:
            return value
        if value < _NS_FROM:
            return (value + 500) // 1000
        if value < _NS_UNTIL:
            return (value + 500_000) // 1_000_000
        raise TimestampError(f"epoch value {value} is too large for any unit (s, ms, µs, ns)")
    if not math.isfinite(value):
        raise TimestampError(f"epoch value {value!r} is not a finite number")
    if value < 0:
        raise TimestampError(f"epoch value {value!r} is negative")
    if value < _MS_FROM:
        return math.floor(value * 1000 + 0.5)
    if value < _US_FROM:
        return math.floor(value + 0.5)
    if value < _NS_FROM:
        return math.floor(value / 1000 + 0.5)
    if value < _NS_UNTIL:
        return math.floor(value / 1_000_000 + 0.5)
    raise TimestampError(f"epoch value {value!r} is too large for any unit (s, ms, µs, ns)")


def iso_to_ms(text: str) -> int:
    """An ISO 8601 string → UTC milliseconds; a naive value is taken as UTC."""
    s = text.strip()
    if not s:
        raise TimestampError("empty timestamp string")
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise TimestampError(f"{text[:64]!r} is not ISO 8601 or an epoch number") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    # Integer arithmetic: exact to the microsecond, rounded half up to the millisecond.
    micros = (dt - _EPOCH) // _ONE_US
    return (micros + 500) // 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


def to_epoch_ms(value: object) -> int:
    """Any accepted timestamp form → UTC epoch milliseconds, or ``TimestampError``."""
    if type(value) is str and value[4:5] == "-" and not value[0].isspace() and not value[-1].isspace():
        ms = iso_to_ms(value)  # the common form first: ISO text as sent (no type chain)
    elif isinstance(value, bool):
        raise TimestampError("a boolean is not a timestamp")
    elif isinstance(value, int | float):
        ms = epoch_to_ms(value)
    elif isinstance(value, str):
        stripped = value.strip()
        # ISO dates have '-' after the year ("2025-…"); epoch strings are plain numbers.
        if len(stripped) > 4 and stripped[4] == "-":
            ms = iso_to_ms(stripped)
        elif stripped.isascii() and stripped.isdigit():
            if len(stripped) > _MAX_EPOCH_DIGITS:  # int() itself refuses beyond 4300 digits
                raise TimestampError(f"epoch value of {len(stripped)} digits is too large for any unit (s, ms, µs, ns)")
            ms = epoch_to_ms(int(stripped))
        elif stripped and stripped[0].isdigit() and _is_number(stripped):
            ms = epoch_to_ms(float(stripped))
        else:
            ms = iso_to_ms(stripped)
    else:
        raise TimestampError(f"a {type(value).__name__} is not a timestamp")
    if not _MIN_MS <= ms <= _MAX_MS:
        raise TimestampError(f"{value!r} lies outside the years 1 to 9999")
    return ms


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    # "2025" alone is a year in ISO terms but a number here; we read it as epoch seconds.
    return True


def ms_to_datetime(ms: int) -> datetime:
    """UTC milliseconds → an aware UTC datetime."""
    return _EPOCH + timedelta(milliseconds=ms)
