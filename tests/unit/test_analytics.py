"""Analytics, the pure parts: usage and the price table, task cost, forecasts and their
measured error, report sections per type (with "not tracked"), the schedule, filters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.core.analytics import forecast as fc
from pipeline.core.analytics import kpis
from pipeline.core.analytics import report as rep
from pipeline.core.analytics.queries import parse_filters
from pipeline.core.cost import PriceTableError, parse_prices, task_cost, usage_of
from pipeline.core.periods import Period
from pipeline.core.tasks.lifecycle import compact, derive
from pipeline.reports import due, scheduled_period

H = fc.HOUR_MS
PRICES = parse_prices("currency: EUR\nmodels:\n  m1: {input_per_1m: 2, output_per_1m: 8}\n  m2: {input_per_1k: 1}\n")


def test_price_table_reads_yaml_json_and_names_bad_entries():
    assert PRICES.currency == "EUR"
    assert PRICES.price("m1", 1_000_000, 500_000) == pytest.approx(2 + 4)
    assert PRICES.price("m2", 1000, 0) == pytest.approx(1)
    assert PRICES.price("other", 1, 1) is None
    assert parse_prices('{"models": {"x": {"input_per_1m": 1}}}').currency == "USD"
    assert parse_prices("").models == {}
    with pytest.raises(PriceTableError, match=r"models\.x\.input_per_1m must be a number"):
        parse_prices('{"models": {"x": {"input_per_1m": "lots"}}}')
    with pytest.raises(PriceTableError, match="models.x must be a mapping"):
        parse_prices('{"models": {"x": 3}}')


@pytest.mark.parametrize(("metrics", "usage"), [
    ({"cost": 0.5, "currency": "USD"}, {"cost": 0.5, "cur": "USD"}),
    ({"model": "m1", "input_tokens": 10, "output_tokens": 5}, {"tok": {"m1": [10, 5]}}),
    ({"model": "m1", "prompt_tokens": 10, "completion_tokens": 5}, {"tok": {"m1": [10, 5]}}),
    ({"tokens": {"m1": {"input": 3, "output": 4}, "m2": 7}}, {"tok": {"m1": [3, 4], "m2": [7, 0]}}),
    ({"model": "m1", "total_tokens": 9}, {"tok": {"m1": [9, 0]}}),
    ({"cost": -1, "input_tokens": "x"}, {}),
    ({"cost": True}, {}),
    ({}, {}),
    (None, {}),
])  # fmt: skip
def test_usage_shapes(metrics: Any, usage: dict[str, Any]):
    assert usage_of(metrics) == usage


def test_task_cost_prices_tokens_takes_reported_cost_at_its_word_and_counts_unpriced():
    spent = task_cost([
        {"tok": {"m1": [1_000_000, 0]}},                   # priced: 2 EUR
        {"cost": 0.25, "cur": "EUR", "tok": {"m1": [5, 5]}},  # reported: not priced again
        {"tok": {"unknown": [100, 20]}},                   # no price: counted, not guessed
    ], PRICES)  # fmt: skip
    assert spent.cost == pytest.approx(2.25)
    assert (spent.currency, spent.tokens, spent.unpriced_tokens) == ("EUR", 1_000_130, 120)
    assert task_cost([], PRICES).cost is None
    assert task_cost([{"tok": {"m1": [5, 0]}}], None).cost is None  # no table: tokens have no price


def test_a_tasks_record_sums_each_events_usage_once():
    entries = [
        compact("e1", "task.created", 0, {"task_type": "t"}, {}),
        compact("e2", "task.started", 10, {"agent_id": "a"}, {}, metrics={"model": "m1", "input_tokens": 1000}),
        compact("e3", "task.completed", 20, {"success": True}, {}, metrics={"cost": 0.5, "currency": "EUR"}),
    ]
    record = derive("t1", entries).record(1, PRICES)
    assert record.cost == pytest.approx(0.5 + 1000 * 2e-6)
    assert (record.currency, record.tokens, record.unpriced_tokens) == ("EUR", 1000, 0)
    assert derive("t2", entries[:1] + [compact("e9", "task.completed", 5, {}, {})]).record(1).cost is None


def test_seasonal_mean_repeats_the_daily_shape_and_beats_the_naive_baseline_on_it():
    # 10 days where hour h of each day has h tasks: the forecast is exact, the naive is not
    start = 1_700_006_400_000 - 1_700_006_400_000 % (24 * H)
    history = [(start + i * H, float(i % 24)) for i in range(240)]
    f = fc.volume_forecast(history, hours_ahead=6)
    assert [v for _, v in f.points] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert f.points[0][0] == history[-1][0] + H
    assert (f.holdout_hours, f.mae) == (24, 0.0)
    assert f.baseline_mae is not None and f.baseline_mae > 5
    short = fc.volume_forecast(history[:6], hours_ahead=2)  # less than a day: the mean
    assert [v for _, v in short.points] == [2.5, 2.5]
    assert fc.volume_forecast([], 3).points == []


def test_hourly_series_fills_quiet_hours_with_zero():
    rows = [(2 * H, "a", 3), (2 * H, "b", 1), (4 * H, "a", 2)]
    assert fc.hourly_series(rows, H + 5, 5 * H) == [(H, 0.0), (2 * H, 4.0), (3 * H, 0.0), (4 * H, 2.0)]


def test_ewma_completion_and_its_one_step_ahead_error_on_held_out_tasks():
    rows = [("code", i, 1000.0) for i in range(8)] + [("docs", 0, 10.0), ("docs", 1, 30.0)]
    out = {f.task_type: f for f in fc.ewma_forecasts(rows, alpha=0.5, warmup=1)}
    assert out["code"].expected_ms == 1000.0 and out["code"].mae_ms == 0.0 and out["code"].holdout == 2
    assert out["docs"].expected_ms == 20.0
    assert (out["docs"].holdout, out["docs"].mae_ms) == (1, 20.0)  # predicted 10, was 30
    assert out["docs"].relative_mae == pytest.approx(20 / 30)


def test_group_eta_divides_remaining_work_over_the_executing_tasks():
    forecasts = [fc.CompletionForecast("code", 10, 60_000.0), fc.CompletionForecast("docs", 10, 20_000.0)]
    now = 1_000_000
    rows = [("code", "EXECUTING", now - 20_000), ("code", "EXECUTING", now - 90_000), ("docs", "QUEUED", None),
            ("new", "QUEUED", None)]  # fmt: skip
    eta = fc.group_eta("g", rows, forecasts, now)
    # 40 s + 0 s left, 20 s docs, 40 s for the unknown type (the mean): 100 s over 2 lanes
    assert (eta.open_tasks, eta.executing, eta.remaining_work_ms) == (4, 2, 100_000.0)
    assert eta.eta_ms == now + 50_000 and eta.unknown_types == ["new"]
    assert fc.group_eta("g", [], forecasts, now).open_tasks == 0
    assert fc.group_eta("g", rows, [], now).eta_ms is None


def _empty_input(p: Period) -> rep.ReportInput:
    nothing = kpis.summarize(p, {})
    return rep.ReportInput(p, nothing, nothing, [], [], [], [], [], [], [], 0, [], [])


@pytest.mark.parametrize("kind", list(rep.SECTIONS))
def test_every_report_type_renders_its_seed_sections_and_says_what_is_not_tracked(kind: str):
    p = Period(kind, 0, 7 * 86_400_000)
    r = _empty_input(p)
    sections = rep.build(kind, r)
    assert [s.key for s in sections] == list(rep.SECTIONS[kind])
    md = rep.to_markdown(kind, r, sections)
    html = rep.to_html(kind, r, sections, {}, 0)
    assert all(f"## {s.title}" in md for s in sections)
    assert html.count("<section id=") == len(sections)
    assert "Not tracked:" in md  # nothing behind it: each such section names its feeding event
    assert "<script" not in html


def test_report_html_escapes_what_the_data_says():
    p = Period("custom", 0, 3_600_000)
    r = _empty_input(p)
    r.top_errors = [["<img src=x onerror=alert(1)>", 3]]
    r.kpis = {**r.kpis, "tasks_finished": 1}
    html = rep.to_html("daily", r, rep.build("daily", r), {}, 0)
    assert "<img src=x" not in html and "&lt;img src=x" in html


def test_recommendations_name_poorly_calibrated_agents_and_unpriced_tokens():
    p = Period("weekly", 0, 86_400_000)
    r = _empty_input(p)
    r.kpis = {**r.kpis, "tasks_finished": 20, "error_rate": 0.3, "unpriced_tokens": 500}
    r.agents = [{"agent": "bob", "tasks": 20, "success_rate": 0.4, "calibrated_tasks": 20, "brier_score": 0.4}]
    text = " ".join(rep.recommendations(r))
    assert "Error rate 30.0%" in text and "bob succeeded in 40.0%" in text and "Brier 0.400" in text
    assert "500 tokens have no price" in text


def test_schedule_runs_the_latest_due_time_once_and_monthly_covers_the_month_just_ended():
    at = datetime(2026, 12, 1, 9, 0, 30, tzinfo=UTC)
    schedules = {"daily": "0 6 * * *", "weekly": "0 8 * * MON", "monthly": "0 9 1 * *", "off": ""}
    got = due(schedules, datetime(2026, 12, 1, 8, 59, tzinfo=UTC), at)
    assert got == [("monthly", datetime(2026, 12, 1, 9, 0, tzinfo=UTC))]
    assert due(schedules, at, at) == []
    month = scheduled_period("monthly", got[0][1], "UTC")
    assert (month.start_ms, month.end_ms) == (int(datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000),
                                              int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000))  # fmt: skip
    daily = scheduled_period("daily", datetime(2026, 12, 1, 6, 0, tzinfo=UTC), "UTC")
    assert daily.end_ms - daily.start_ms == 86_400_000


def test_filters_are_name_value_pairs_of_known_names():
    assert parse_filters(["agent=coder", "task_type = research"]) == {"agent": "coder", "task_type": "research"}
    for bad in (["agent"], ["colour=red"], ["agent="]):
        with pytest.raises(ValueError, match="--filter"):
            parse_filters(bad)
