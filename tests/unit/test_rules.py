"""Alert rules: the YAML file's validation (errors name the file, the rule and the field),
the shipped defaults, threshold and anomaly evaluation, and the queries behind measures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline.cli import cli
from pipeline.core.alerts.queries import latest_states_query, rule_query
from pipeline.core.alerts.rules import (
    MEASURES,
    Anomaly,
    Rule,
    RulesError,
    compare,
    ewma_baseline,
    observe,
    parse_duration,
    parse_rules,
    render,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "alerts" / "rules.yml"


def rule(**kw: object) -> Rule:
    return Rule.model_validate({"name": "r", "measure": "failure_rate", **kw})


# --------------------------------------------------------------------------- the file


def test_shipped_rules_file_is_valid_and_has_the_seed_defaults() -> None:
    rf = parse_rules(SHIPPED.read_text(), str(SHIPPED))
    by_name = {r.name: r for r in rf.rules}
    expected = {
        "high_failure_rate": ("failure_rate", ">", 0.2, "high"),
        "queue_depth_high": ("queue_depth", ">", 100, "high"),
        "slow_responses": ("p95_duration_ms", ">", 5000, "high"),
        "agents_unavailable": ("agents_offline_fraction", ">", 0.5, "high"),
        "agent_overload": ("agent_active_tasks", ">", 10, "medium"),
        "approaching_deadline": ("time_to_deadline_s", "<", 3600, "medium"),
        "abandoned_tasks": ("abandoned_tasks", ">", 0, "medium"),
    }
    for name, (measure, op, threshold, severity) in expected.items():
        r = by_name[name]
        assert (r.measure, r.op, r.threshold, r.severity) == (measure, op, threshold, severity), name
    assert by_name["agent_overload"].group_by == ["agent"]
    assert by_name["dlq_rate_high"].measure == "dlq_rate_per_minute"
    assert by_name["failure_spike"].type == "anomaly"
    for sev in ("critical", "high", "medium"):
        assert "alertmanager" in rf.notifiers_for(sev) and "webhook" in rf.notifiers_for(sev)
    assert rf.notifiers_for("low") == ["log"]


def test_every_shipped_rule_has_a_query() -> None:
    rf = parse_rules(SHIPPED.read_text())
    for r in rf.rules:
        sql, params = rule_query(r, "taskpulse", 1_700_000_000_000)
        assert sql.startswith("SELECT") and params["now_ms"] == 1_700_000_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules: [{name: a, measure: nope}]", "f.yml: rule 'a' (rules[0]): unknown measure 'nope'"),
        ("rules: [{name: a, measure: count, threshold: x}]", "f.yml: rule 'a' (rules[0]), field 'threshold'"),
        ("rules: [{name: a, measure: count}, {name: b, measure: count, for: soon}]",
         "f.yml: rule 'b' (rules[1]), field 'for': 'soon' is not a duration"),
        ("rules: [{name: a, measure: count, severity: urgent}]", "rule 'a' (rules[0]), field 'severity'"),
        ("rules: [{name: a, measure: count, tresh: 1}]", "rule 'a' (rules[0]), field 'tresh': Extra inputs"),
        ("rules: [{name: a, measure: queue_depth, group_by: [agent]}]", "measure 'queue_depth' has no label 'agent'"),
        ("rules: [{name: a, measure: queue_depth, type: anomaly}]", "anomaly rules need a rollup measure"),
        ("rules: [{name: a, measure: count, annotations: {summary: '{nope}'}}]", "annotations.summary uses {nope}"),
        ("rules: [{name: a, measure: count}, {name: a, measure: count}]", "two rules are named 'a'"),
        ("rules: [{name: a, measure: count}]\nrouting: {high: [pager]}", "f.yml: field 'routing.high.0'"),
        ("rules: [{name: 'bad name', measure: count}]", "field 'name'"),
        ("rules: {name: a}", "f.yml: field 'rules': Input should be a valid list"),
        ("- just a list", "f.yml: expected a mapping"),
        ("rules: [unclosed", "f.yml: not valid YAML"),
    ],
)
def test_invalid_files_are_refused_naming_file_rule_and_field(text: str, expected: str) -> None:
    with pytest.raises(RulesError) as exc:
        parse_rules(text, "f.yml")
    assert expected in str(exc.value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(0, 0.0), (90, 90.0), (1.5, 1.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("250ms", 0.25), ("2d", 172800.0),
     ("10", 10.0)],
)  # fmt: skip
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-5s", True, None, "5 minutes", float("inf")])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_rule_defaults_and_templates() -> None:
    r = rule(threshold=0.2, **{"for": "1m"})
    assert (r.window, r.op, r.for_, r.severity, r.min_count) == ("5m", ">", 60.0, "medium", 1)
    assert render("{rule} is {value} > {threshold} {unknown}", {"rule": "r", "value": "0.5", "threshold": "0.2"}) == (
        "r is 0.5 > 0.2 {unknown}"
    )


def test_cli_check_accepts_the_shipped_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["alerts", "check", str(SHIPPED)])
    assert ok.exit_code == 0, ok.output
    assert "OK, 9 rules" in ok.output
    bad = tmp_path / "bad.yml"
    bad.write_text("rules:\n  - name: x\n    measure: failure_rate\n    threshold: high\n")
    res = runner.invoke(cli, ["alerts", "check", str(bad)])
    assert res.exit_code == 2
    missing = runner.invoke(cli, ["alerts", "check", str(tmp_path / "nope.yml")])
    assert missing.exit_code == 2


# --------------------------------------------------------------------------- threshold rules


@pytest.mark.parametrize(
    ("value", "op", "threshold", "expected"),
    [(0.3, ">", 0.2, True), (0.2, ">", 0.2, False), (0.2, ">=", 0.2, True), (1, "<", 2, True), (2, "<=", 2, True),
     (3, "==", 3, True), (3, "!=", 3, False)],
)  # fmt: skip
def test_compare(value: float, op: str, threshold: float, expected: bool) -> None:
    assert compare(value, op, threshold) is expected


def test_threshold_observations_respect_min_count_and_groups() -> None:
    r = rule(threshold=0.2, min_count=10, group_by=["agent"])
    obs = observe(r, [("a1", 0.5, 20), ("a2", 0.5, 5), ("a3", 0.1, 50), ("a4", math.nan, 0)], 0)
    assert [(o.labels, o.breached) for o in obs] == [
        ({"agent": "a1"}, True),
        ({"agent": "a2"}, False),  # too few tasks to judge
        ({"agent": "a3"}, False),
        ({"agent": "a4"}, False),  # no data: NaN is no breach
    ]
    assert obs[3].value is None


@pytest.mark.parametrize(
    ("measure", "rows", "breached"),
    [
        ("queue_depth", [(150.0, 1)], True),
        ("queue_depth", [(20.0, 1)], False),
        ("agents_offline_fraction", [(0.6, 5)], True),
        ("agents_offline_fraction", [(math.nan, 0)], False),
        ("time_to_deadline_s", [(1200.0, 3)], True),
        ("time_to_deadline_s", [(0.0, 0)], False),  # no task has a deadline
        ("abandoned_tasks", [(2.0, 1)], True),
        ("dlq_rate_per_minute", [(30.0, 1)], True),
    ],
)
def test_state_measures_with_the_shipped_thresholds(
    measure: str, rows: list[tuple[float, int]], breached: bool
) -> None:
    rf = parse_rules(SHIPPED.read_text())
    r = next(x for x in rf.rules if x.measure == measure)
    assert [o.breached for o in observe(r, rows, 0)] == [breached]


def test_agent_overload_is_per_agent() -> None:
    rf = parse_rules(SHIPPED.read_text())
    r = next(x for x in rf.rules if x.name == "agent_overload")
    obs = observe(r, [("busy", 14.0, 1), ("calm", 3.0, 1)], 0)
    assert [(o.labels["agent"], o.breached) for o in obs] == [("busy", True), ("calm", False)]


# --------------------------------------------------------------------------- anomaly rules

MIN = 60_000


def anomaly_rule(**kw: object) -> Rule:
    a = {"baseline_windows": 10, "alpha": 0.3, "z": 4, "min_samples": 5, "min_stddev": 2, **kw}
    return Rule.model_validate(
        {"name": "spike", "type": "anomaly", "measure": "count", "window": "1m", "anomaly": a}
    )


def series(values: list[float], current: float | None, now: int) -> list[tuple[int, float, int]]:
    start = now - now % MIN
    rows = [(start - (len(values) - i) * MIN, v, int(v)) for i, v in enumerate(values)]
    if current is not None:
        rows.append((start, current, int(current)))
    return rows


NOW = 1_700_000_030_000


def test_anomaly_ignores_steady_noise() -> None:
    r = anomaly_rule()
    obs = observe(r, series([10, 8, 12, 9, 11, 10, 12, 8, 10, 11], 12, NOW), NOW)
    assert len(obs) == 1 and not obs[0].breached
    assert abs(obs[0].extra["z"]) < 4


def test_anomaly_fires_on_a_spike() -> None:
    obs = observe(anomaly_rule(), series([10, 8, 12, 9, 11, 10, 12, 8, 10, 11], 80, NOW), NOW)
    assert obs[0].breached and obs[0].value == 80 and obs[0].extra["z"] > 4


def test_a_spike_just_before_the_window_ended_still_fires_in_the_next_window() -> None:
    # the spike landed in the last seconds of the previous minute; this minute has just begun
    obs = observe(anomaly_rule(), series([10, 8, 12, 9, 11, 10, 12, 8, 10, 11, 80], 0, NOW), NOW)
    assert obs[0].breached and obs[0].value == 80
    # and a minute later it is over
    later = NOW + MIN
    assert not observe(anomaly_rule(), series([10, 8, 12, 9, 11, 10, 12, 8, 10, 11, 80, 0], 0, later),
                       later)[0].breached  # fmt: skip


def test_anomaly_needs_a_baseline_before_it_can_fire() -> None:
    obs = observe(anomaly_rule(), series([1, 2], 500, NOW), NOW)  # two windows < min_samples
    assert not obs[0].breached and "z" not in obs[0].extra


def test_anomaly_counts_quiet_minutes_as_zero_for_counts() -> None:
    # 6 minutes with data among 10: the 4 empty ones are zeros, so the baseline is lower
    values = [10, 0, 10, 0, 10, 0, 10, 0, 10, 10]
    rows = [r for r in series(values, 25, NOW) if r[1] > 0]
    obs = observe(anomaly_rule(), rows, NOW)
    assert obs[0].extra["baseline"] < 10


def test_anomaly_direction_down() -> None:
    r = anomaly_rule(direction="down")
    assert observe(r, series([50] * 10, 0, NOW), NOW)[0].breached
    assert not observe(anomaly_rule(), series([50] * 10, 0, NOW), NOW)[0].breached


def test_anomaly_ignores_rows_outside_the_baseline() -> None:
    rows = series([10] * 10, 11, NOW) + [(NOW - NOW % MIN - 30 * MIN, 10_000.0, 10_000)]
    assert not observe(anomaly_rule(), rows, NOW)[0].breached


@hsettings(max_examples=60)
@given(st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=50), st.floats(0.01, 1.0))
def test_ewma_of_a_constant_is_that_constant_with_zero_spread(values: list[float], alpha: float) -> None:
    c = values[0]
    b = ewma_baseline([c] * len(values), alpha)
    assert b is not None and b.mean == pytest.approx(c) and b.stddev == pytest.approx(0, abs=1e-9)
    b2 = ewma_baseline(values, alpha)
    assert b2 is not None and min(values) - 1e-9 <= b2.mean <= max(values) + 1e-9


def test_anomaly_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        Anomaly.model_validate({"alpha": 0})
    with pytest.raises(RulesError, match="belong to rules with type: anomaly"):
        parse_rules("rules: [{name: a, measure: count, anomaly: {z: 3}}]")


# --------------------------------------------------------------------------- queries


def test_queries_filter_group_and_use_the_callers_clock() -> None:
    r = rule(group_by=["agent", "task_type"], filter={"task_type": ["research", "code"]}, window="1m")
    sql, params = rule_query(r, "db", 123)
    assert "FROM db.rollups" in sql and "granularity = '1m'" in sql
    assert "GROUP BY agent, task_type" in sql
    assert "outcome IN ('success', 'failure')" in sql
    assert "now()" not in sql
    assert params == {"now_ms": 123, "f0": ["research", "code"]}


def test_every_measure_has_a_query() -> None:
    for name, spec in MEASURES.items():
        r = Rule.model_validate({"name": "x", "measure": name, "group_by": list(spec.labels[:1])})
        sql, _ = rule_query(r, "db", 0)
        assert f"FROM db.{spec.source}" in sql


def test_latest_states_query_reads_the_last_row_per_alert() -> None:
    sql = latest_states_query("db")
    assert "LIMIT 1 BY fingerprint" in sql and "state IN ('pending', 'firing')" in sql


# --------------------------------------------------------------------------- loading at worker start


def test_worker_start_loads_the_default_file_and_tolerates_its_absence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from pipeline.roles.alerts import load_rules
    from pipeline.settings import Settings

    monkeypatch.delenv("TASKPULSE_ALERT_RULES", raising=False)
    monkeypatch.chdir(ROOT)
    loaded = load_rules(Settings())
    assert loaded is not None and len(loaded.rules) == 9
    monkeypatch.chdir(tmp_path)  # no deploy/alerts/rules.yml here: idle, with a warning naming the variable
    assert load_rules(Settings()) is None
    assert "TASKPULSE_ALERT_RULES" in caplog.text


def test_worker_start_refuses_a_missing_explicit_file_or_a_bad_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.roles.alerts import load_rules
    from pipeline.settings import Settings

    monkeypatch.setenv("TASKPULSE_ALERT_RULES", str(tmp_path / "nope.yml"))
    with pytest.raises(RulesError, match=r"nope.yml does not exist \(TASKPULSE_ALERT_RULES\)"):
        load_rules(Settings())
    bad = tmp_path / "bad.yml"
    bad.write_text("rules: [{name: x, measure: count, window: 2m}]")
    monkeypatch.setenv("TASKPULSE_ALERT_RULES", str(bad))
    with pytest.raises(RulesError, match=r"bad.yml: rule 'x' \(rules\[0\]\), field 'window'"):
        load_rules(Settings())
