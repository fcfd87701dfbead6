"""Periodic reports: periods, findings, markdown."""

from __future__ import annotations

import pytest

from pipeline.core.tasks.report import Period, findings, period, queries, render

NOW = 1_762_164_000_000  # 2025-11-03T10:00:00Z
DAY = 86_400_000
MIDNIGHT = NOW - NOW % DAY


@pytest.mark.parametrize(("name", "days"), [("daily", 1), ("weekly", 7), ("monthly", 30)])
def test_periods_are_whole_utc_days_ending_at_midnight(name: str, days: int) -> None:
    p = period(name, NOW)
    assert (p.start_ms, p.end_ms) == (MIDNIGHT - days * DAY, MIDNIGHT)
    assert (p.prev.start_ms, p.prev.end_ms) == (MIDNIGHT - 2 * days * DAY, MIDNIGHT - days * DAY)


def test_an_unknown_period_says_what_to_use() -> None:
    with pytest.raises(ValueError, match="daily, weekly or monthly"):
        period("hourly", NOW)


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
