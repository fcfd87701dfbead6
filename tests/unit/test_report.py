"""Periodic reports: periods, findings, markdown."""

from __future__ import annotations

import pytest

from pipeline.core.tasks.queries import report_queries as queries
from pipeline.core.tasks.report import Period, findings, period, render

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


def test_advice_for_an_empty_period_fits_what_the_data_holds() -> None:
    empty = [0, 0, 0, 0, 0]
    assert "range from 2025-10-01" in findings(empty, [], 0, [40, "2025-10-01 10:00:00", "2025-10-02 11:00:00"])[0]
    assert "120 events arrived" in findings(empty, [], 120, [0, None, None])[0]
    assert "no event arrived" in findings(empty, [], 0, [0, None, None])[0]


def test_findings_flag_abandonment_failures_and_poor_agents() -> None:
    summary = [100, 60, 15, 12, 13]
    agents = [["coder", 20, 8, 0.4, 1000.0, 2], ["writer", 3, 1, 0.33, 900.0, 0], ["ops", 40, 39, 0.975, 50.0, 0]]
    got = findings(summary, agents)
    assert any(f.startswith("High abandonment: 12.0%") for f in got)
    assert any(f.startswith("Failure rate 27.0%") for f in got)
    assert [f for f in got if f.startswith("Agent")] == [
        "Agent coder succeeded in 40.0% of 20 tasks (< 50%): review its assignments."]  # fmt: skip
    assert findings([50, 50, 0, 0, 0], []) == ["No issues detected."]
    assert findings([0, 0, 0, 0, 0], [])[0].startswith("No task finished")


def test_render_fills_every_section() -> None:
    p = Period("weekly", MIDNIGHT - 7 * DAY, MIDNIGHT)
    assert set(queries("taskpulse", p)) >= {"summary", "summary_prev", "by_type", "agents", "dlq", "alerts"}
    answers = {
        "summary": [[10, 8, 1, 1, 0, 20_000.0, 45_000.0, 1500.0, 3, 1]],
        "summary_prev": [[5, 5, 0, 0, 0, 1.0, 1.0, 1.0, 0, 0]],
        "by_type": [["research", 10, 0.8, 15_000.0, 40_000.0]],
        "agents": [["researcher", 10, 8, 0.8, 15_000.0, 1]],
        "dlq": [["invalid_json", 4]], "system_errors": [[2]], "alerts": [["high", 1]],
        "top_errors": [["OOM", 1]],
    }  # fmt: skip
    md = render(p, answers)
    assert "# taskpulse weekly report" in md
    assert "- Tasks finished: 10 (+100% vs previous)" in md
    assert "| research | 10 | 80.0% | 15.0 s | 40.0 s |" in md
    assert "| researcher | 10 | 8 | 80.0% | 15.0 s | 1 |" in md
    assert "- Rejected input (DLQ): invalid_json 4" in md and "- Alerts fired: high 1" in md
    assert "- 1 × OOM" in md and "- No issues detected." in md
