"""to_epoch_ms: every accepted timestamp form → UTC epoch ms; everything else → TimestampError.

Expected values are literals computed independently (calendar.timegm) and commented.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.core.timestamps import TimestampError, ms_to_datetime, to_epoch_ms

#: 2025-11-03T00:00:00Z
DAY0 = 1_762_128_000_000
#: 2025-11-03T12:34:56Z
T = DAY0 + (12 * 3600 + 34 * 60 + 56) * 1000
assert T == 1_762_173_296_000


ACCEPTED = [
    # ISO 8601 with Z / offsets
    ("2025-11-03T12:34:56Z", T),
    ("2025-11-03T12:34:56+00:00", T),
    ("2025-11-03T12:34:56+02:00", T - 2 * 3_600_000),
    ("2025-11-03T12:34:56-05:30", T + 5 * 3_600_000 + 30 * 60_000),
    ("2025-11-03T00:30:00+14:00", DAY0 - 13 * 3_600_000 - 30 * 60_000),  # previous UTC day
    ("2025-11-03T12:34:56.123+02:00", T - 2 * 3_600_000 + 123),
    # naive ISO is UTC
    ("2025-11-03T12:34:56", T),
    ("2025-11-03 12:34:56", T),
    ("  2025-11-03T12:34:56Z\n", T),
    # fractional seconds: µs → ms rounded half up
    ("2025-11-03T12:34:56.1Z", T + 100),
    ("2025-11-03T12:34:56.123Z", T + 123),
    ("2025-11-03T12:34:56.123456Z", T + 123),
    ("2025-11-03T12:34:56.123499Z", T + 123),
    ("2025-11-03T12:34:56.123500Z", T + 124),
    ("2025-11-03T12:34:56.999500Z", T + 1000),  # rounds into the next second
    ("2025-11-03T23:59:59.999999Z", DAY0 + 86_400_000),  # ... and into the next day
    # date only: midnight UTC
    ("2025-11-03", DAY0),
    # epoch numbers, told apart by magnitude: the same instant in every unit
    (1_762_173_296, T),
    (1_762_173_296_000, T),
    (1_762_173_296_000_000, T),
    (1_762_173_296_000_000_000, T),
    (1_762_173_296_123, T + 123),
    (1_762_173_296_123_456, T + 123),
    (1_762_173_296_123_456_789, T + 123),
    # numeric strings
    ("1762173296", T),
    ("1762173296123", T + 123),
    ("1762173296123456", T + 123),
    ("1762173296123456789", T + 123),
    (" 1762173296 ", T),
    ("1762173296.5", T + 500),
    ("1.762173296e9", T),
    # floats with a fraction
    (1_762_173_296.123, T + 123),
    (1_762_173_296.5, T + 500),
    (1_762_173_296_123.4, T + 123),
    (1_762_173_296_123.6, T + 124),
    (1.762173296123e15, T + 123),
    # the unit bands' edges (documented: seconds below 1e11, then ms, µs from 1e14, ns from 1e17)
    (0, 0),
    (99_999_999_999, 99_999_999_999_000),  # seconds: the year 5138
    (100_000_000_000, 100_000_000_000),  # ms: 1973-03-03T09:46:40Z
    (100_000_000_000_000, 100_000_000_000),  # µs
    (100_000_000_000_000_000, 100_000_000_000),  # ns
    (99_999_999_999_999_000_000, 99_999_999_999_999),  # ns, just under 1e20
    # ISO before the epoch is still a point in time
    ("1969-12-31T23:59:59Z", -1000),
]


@pytest.mark.parametrize(("value", "expected"), ACCEPTED, ids=[repr(v) for v, _ in ACCEPTED])
def test_accepted_forms(value: object, expected: int) -> None:
    assert to_epoch_ms(value) == expected


@pytest.mark.parametrize(
    "forms",
    [
        # A sub-millisecond instant exactly half way between two ms: every form of it must
        # give the same ms (the ISO path documents "rounded half up").
        (
            "2025-11-03T12:34:56.122500Z",
            1_762_173_296_122_500,  # µs
            1_762_173_296_122_500_000,  # ns
            "1762173296122500",  # µs as a numeric string
        ),
        (
            "2025-11-03T12:34:56.123500Z",
            1_762_173_296_123_500,
            1_762_173_296_123_500_000,
            "1762173296123500",
        ),
        (
            "2025-11-03T12:34:56.123456Z",
            1_762_173_296_123_456,
            1_762_173_296_123_456_000,
            "1762173296123456",
        ),
    ],
    ids=["half-ms-even", "half-ms-odd", "below-half"],
)
def test_one_instant_gives_one_ms_in_every_exact_form(forms: tuple[object, ...]) -> None:
    results = {repr(f): to_epoch_ms(f) for f in forms}
    assert len(set(results.values())) == 1, f"one instant, different ms: {results}"


REJECTED = [
    "garbage",
    "yesterday",
    "",
    "   ",
    "2025-13-01",
    "2025-11-03T25:00:00Z",
    "2025-11-31",
    "12:34:56",
    "0x1A",
    "1,5",
    "-5",
    "-1762173296",
    "NaN",
    "nan",
    "inf",
    "Infinity",
    "1e400",  # a numeric string that overflows to inf
    "1" + "0" * 400,
    "1e20",
    "0001-01-01T00:00:00+01:00",  # before the year 1 in UTC
    True,
    False,
    None,
    {},
    {"timestamp": T},
    [T],
    b"1762173296",
    float("nan"),
    float("inf"),
    float("-inf"),
    -1,
    -0.5,
    -1_762_173_296_000,
    1e20,
    100_000_000_000_000_000_000,  # 1e20 as an int: too large for ns
    10**25,
    1e300,
    10**400,  # larger than any float
]


def _id(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value > 10**30:
        return f"10**{len(str(value)) - 1}"
    return repr(value)[:40]


@pytest.mark.parametrize("value", REJECTED, ids=[_id(v) for v in REJECTED])
def test_rejected_values_raise_timestamp_error(value: object) -> None:
    with pytest.raises(TimestampError) as info:
        to_epoch_ms(value)
    assert str(info.value), "the error must say why"


def test_timestamp_error_is_a_value_error() -> None:
    # Callers that guard with ``except ValueError`` keep working.
    assert issubclass(TimestampError, ValueError)


@pytest.mark.parametrize(
    ("ms", "iso"),
    [
        (0, "1970-01-01T00:00:00+00:00"),
        (DAY0, "2025-11-03T00:00:00+00:00"),
        (T + 123, "2025-11-03T12:34:56.123000+00:00"),
        (-1000, "1969-12-31T23:59:59+00:00"),
    ],
)
def test_ms_to_datetime(ms: int, iso: str) -> None:
    dt = ms_to_datetime(ms)
    assert dt.utcoffset() == timedelta(0)
    assert dt.isoformat() == iso


# --------------------------------------------------------------------------- properties

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: From here on, ms / µs / ns epochs are above their band floors (1e11 ms = 1973-03-03).
_BANDS_FROM_MS = 100_000_000_000

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
aware_datetimes = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets)


def _micros(dt: datetime) -> int:
    d = dt - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


@settings(max_examples=300)
@given(aware_datetimes)
@example(datetime(2025, 11, 3, 12, 34, 56, 999_500, tzinfo=UTC))
@example(datetime(1973, 3, 3, 9, 46, 40, tzinfo=UTC))
@example(datetime(2199, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-14))))
def test_every_form_of_an_instant_agrees(dt: datetime) -> None:
    micros = _micros(dt)
    expected = (micros + 500) // 1000  # half up, integer arithmetic

    assert to_epoch_ms(dt.isoformat()) == expected
    assert to_epoch_ms(dt.isoformat().replace("+00:00", "Z")) == expected
    # naive ISO of the same UTC wall clock
    assert to_epoch_ms(dt.astimezone(UTC).replace(tzinfo=None).isoformat()) == expected
    # epoch seconds (float with fraction, and as a numeric string): within float rounding
    assert abs(to_epoch_ms(micros / 1_000_000) - expected) <= 1
    assert abs(to_epoch_ms(repr(micros / 1_000_000)) - expected) <= 1
    if micros % 1_000_000 == 0:
        assert to_epoch_ms(micros // 1_000_000) == expected
    if expected >= _BANDS_FROM_MS:
        # integer ms is exact; µs / ns differ from the ISO reading by rounding at most
        assert to_epoch_ms(expected) == expected
        assert to_epoch_ms(str(expected)) == expected
        assert abs(to_epoch_ms(micros) - expected) <= 1
        assert abs(to_epoch_ms(micros * 1000) - expected) <= 1

    # ms_to_datetime round-trips: the same instant, rounded to the ms, in UTC
    back = ms_to_datetime(expected)
    assert back.utcoffset() == timedelta(0)
    assert abs(back - dt) <= timedelta(microseconds=500)
    assert back.microsecond % 1000 == 0
    assert to_epoch_ms(back.isoformat()) == expected


@settings(max_examples=200)
@given(st.integers(min_value=_BANDS_FROM_MS, max_value=100_000_000_000_000 - 1))
def test_ms_round_trip_through_datetime(ms: int) -> None:
    # every ms of the ms band (1973-03-03 .. 5138) reads back as itself
    assert to_epoch_ms(ms_to_datetime(ms).isoformat()) == ms
    assert to_epoch_ms(ms) == ms
    assert to_epoch_ms(float(ms)) == ms


@settings(max_examples=200)
@given(
    st.one_of(
        st.text(max_size=40),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(),
        st.none(),
        st.booleans(),
    )
)
def test_never_raises_anything_but_timestamp_error(value: object) -> None:
    try:
        ms = to_epoch_ms(value)
    except TimestampError:
        return
    assert isinstance(ms, int)
    assert not isinstance(ms, bool)
    assert math.isfinite(ms)
    # whatever is accepted is a representable point in time
    ms_to_datetime(ms)


@pytest.mark.parametrize("tz", ["EST+5", "IST-5:30", "UTC0"])
def test_naive_iso_is_utc_whatever_the_machine_timezone(tz: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        assert to_epoch_ms("2025-11-03T12:34:56") == T
        assert to_epoch_ms("2025-11-03") == DAY0
        assert ms_to_datetime(T).hour == 12
    finally:
        monkeypatch.undo()
        time.tzset()
