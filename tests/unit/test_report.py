"""Periodic reports: periods and the advice (recommendations) the report gives."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.core.analytics import kpis
from pipeline.core.analytics.report import ReportInput, recommendations
from pipeline.core.periods import Period, period

NOW = 1_762_164_000_000  # 2025-11-03T10:00:00Z
DAY = 86_400_000
MIDNIGHT = NOW - NOW % DAY


@pytest.mark.parametrize(("name", "days"), [("daily", 1), ("weekly", 7)])
def test_daily_and_weekly_end_now_so_a_fresh_install_has_data(name: str, days: int) -> None:
    p = period(name, NOW)
    assert (p.start_ms, p.end_ms) == (NOW - days * DAY, NOW)
    assert (p.prev.start_ms, p.prev.end_ms) == (NOW - 2 * days * DAY, NOW - days * DAY)


def test_monthly_is_the_calendar_month_to_date_in_the_given_zone() -> None:
    p = period("monthly", NOW)
    assert p.start_ms == 1_761_955_200_000  # 2025-11-01T00:00:00Z
    assert p.end_ms == NOW
    berlin = period("monthly", NOW, tz="Europe/Berlin")
    assert berlin.start_ms == 1_761_955_200_000 - 3_600_000  # 2025-11-01T00:00+01:00
    assert berlin.describe() == "2025-11-01 00:00 → 2025-11-03 11:00 Europe/Berlin (calendar month to date)"
    # ending exactly on a month boundary: the whole month before
    assert period("monthly", NOW, end_ms=1_761_955_200_000).start_ms == 1_759_276_800_000  # 2025-10-01


def test_a_period_says_what_it_covers() -> None:
    assert period("daily", NOW).describe() == "2025-11-02 10:00 → 2025-11-03 10:00 UTC (last 24 hours)"
    assert period("weekly", NOW, end_ms=MIDNIGHT).describe().startswith("2025-10-27 00:00 → 2025-11-03 00:00 UTC")


def test_an_unknown_period_or_zone_says_what_to_use() -> None:
    with pytest.raises(ValueError, match="daily, weekly, monthly"):
        period("hourly", NOW)
    with pytest.raises(ValueError, match="IANA"):
        period("daily", NOW, tz="Mars/Olympus")


def _input(finished: int = 0, **kpi: Any) -> ReportInput:
    p = Period("weekly", MIDNIGHT - 7 * DAY, MIDNIGHT)
    values = {**kpis.summarize(p, {}), "tasks_finished": finished, **kpi}
    return ReportInput(p, values, values, [], [], [], [], [], [0, 0, 0, 0], [], 0, [], [])


def test_advice_for_an_empty_period_fits_what_the_data_holds() -> None:
    r = _input()
    r.finished_span = [40, "2025-10-01 10:00:00", "2025-10-02 11:00:00"]
    assert "range from 2025-10-01" in recommendations(r)[0]
    r.finished_span, r.health = [0, None, None], [0, 0, 0, 120]
    assert "120 events arrived" in recommendations(r)[0]
    r.health = [0, 0, 0, 0]
    assert "no event arrived" in recommendations(r)[0]


def test_advice_flags_abandonment_failures_and_poor_agents() -> None:
    r = _input(100, abandoned_rate=0.12, error_rate=0.27)
    r.agents = [
        {"agent": "coder", "tasks": 20, "success_rate": 0.4, "calibrated_tasks": 0, "brier_score": None},
        {"agent": "writer", "tasks": 3, "success_rate": 0.33, "calibrated_tasks": 0, "brier_score": None},
        {"agent": "ops", "tasks": 40, "success_rate": 0.975, "calibrated_tasks": 0, "brier_score": None},
    ]
    got = recommendations(r)
    assert any(f.startswith("High abandonment: 12.0%") for f in got)
    assert any(f.startswith("Error rate 27.0%") for f in got)
    assert [f for f in got if f.startswith("Agent")] == [
        "Agent coder succeeded in 40.0% of 20 tasks: review what it is assigned."]  # fmt: skip
    assert recommendations(_input(50, error_rate=0.0)) == ["No issues detected."]
