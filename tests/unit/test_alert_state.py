"""The alert state machine: inactive → pending → firing → resolved with ``for`` and the repeat
interval, one alert per rule and group, and restore after a restart (no duplicate page,
no lost resolve)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.core.alerts.rules import Observation, RulesFile, parse_rules
from pipeline.core.alerts.state import (
    ALERT_COLUMNS,
    AlertBook,
    Change,
    alert_from_row,
    change_json,
    change_row,
    fingerprint,
)

RULES = """
repeat_interval: 10m
rules:
  - name: high_failure_rate
    measure: failure_rate
    threshold: 0.2
    for: 60s
    severity: high
    labels: {team: core}
    annotations: {summary: "rate {value} > {threshold}", description: "{samples} tasks"}
  - name: per_agent
    measure: failure_rate
    group_by: [agent]
    threshold: 0.2
    severity: medium
    repeat_interval: 1m
    annotations: {summary: "{agent} at {value}"}
"""

T0 = 1_700_000_000_000
S = 1000


def book() -> tuple[AlertBook, RulesFile]:
    rf = parse_rules(RULES)
    return AlertBook(rf), rf


def hit(value: float = 0.5, **labels: str) -> list[Observation]:
    return [Observation(dict(labels), value, True, 30)]


def ok(value: float = 0.05, **labels: str) -> list[Observation]:
    return [Observation(dict(labels), value, False, 30)]


def kinds(changes: list[Change]) -> list[str]:
    return [c.kind for c in changes]


def test_pending_then_firing_after_for_then_resolved() -> None:
    b, rf = book()
    r = rf.rules[0]
    c1 = b.evaluate(r, hit(), T0)
    assert kinds(c1) == ["pending"] and not c1[0].notify
    assert b.evaluate(r, hit(), T0 + 30 * S) == []  # for not yet elapsed
    c2 = b.evaluate(r, hit(0.6), T0 + 60 * S)
    assert kinds(c2) == ["firing"] and c2[0].notify
    a = c2[0].alert
    assert (a.state, a.active_since, a.fired_at, a.notifications) == ("firing", T0, T0 + 60 * S, 1)
    assert a.labels == {"alertname": "high_failure_rate", "severity": "high", "team": "core"}
    assert a.summary == "rate 0.6 > 0.2" and a.description == "30 tasks"
    assert b.evaluate(r, hit(), T0 + 90 * S) == []  # still firing: no new page
    c3 = b.evaluate(r, ok(), T0 + 120 * S)
    assert kinds(c3) == ["resolved"] and c3[0].notify
    assert c3[0].alert.resolved_at == T0 + 120 * S and c3[0].alert.value == 0.05
    assert b.alerts == {}
    assert b.evaluate(r, ok(), T0 + 130 * S) == []


def test_pending_that_clears_goes_back_to_inactive_without_a_page() -> None:
    b, rf = book()
    r = rf.rules[0]
    b.evaluate(r, hit(), T0)
    c = b.evaluate(r, ok(), T0 + 10 * S)
    assert kinds(c) == ["inactive"] and not c[0].notify
    # a new breach starts a new pending period: `for` counts from it
    assert kinds(b.evaluate(r, hit(), T0 + 20 * S)) == ["pending"]
    assert b.evaluate(r, hit(), T0 + 70 * S) == []
    assert kinds(b.evaluate(r, hit(), T0 + 80 * S)) == ["firing"]


def test_for_zero_fires_at_once() -> None:
    b, rf = book()
    c = b.evaluate(rf.rules[1], hit(agent="a1"), T0)
    assert kinds(c) == ["firing"] and c[0].alert.active_since == T0


def test_repeat_interval_renotifies_a_still_firing_alert() -> None:
    b, rf = book()
    r = rf.rules[1]  # repeat_interval 1m
    b.evaluate(r, hit(agent="a1"), T0)
    assert b.evaluate(r, hit(agent="a1"), T0 + 59 * S) == []
    c = b.evaluate(r, hit(agent="a1"), T0 + 60 * S)
    assert kinds(c) == ["renotify"] and c[0].notify and c[0].alert.notifications == 2
    assert b.evaluate(r, hit(agent="a1"), T0 + 100 * S) == []
    assert kinds(b.evaluate(r, hit(agent="a1"), T0 + 120 * S)) == ["renotify"]


def test_one_alert_per_group_and_a_vanished_group_resolves() -> None:
    b, rf = book()
    r = rf.rules[1]
    obs = hit(agent="a1") + hit(agent="a2")
    c = b.evaluate(r, obs, T0)
    assert kinds(c) == ["firing", "firing"]
    assert {x.alert.group_labels["agent"] for x in c} == {"a1", "a2"}
    assert c[0].alert.fingerprint != c[1].alert.fingerprint
    assert c[0].alert.summary == "a1 at 0.5"
    # a2 has no data any more (no rows): it resolves with its last value
    c2 = b.evaluate(r, hit(agent="a1"), T0 + 5 * S)
    assert kinds(c2) == ["resolved"] and c2[0].alert.group_labels == {"agent": "a2"}
    assert c2[0].alert.value == 0.5


def test_rules_do_not_touch_each_others_alerts() -> None:
    b, rf = book()
    b.evaluate(rf.rules[1], hit(agent="a1"), T0)
    assert b.evaluate(rf.rules[0], [], T0 + S) == []
    assert len(b.firing()) == 1


def test_restore_after_restart_sends_no_duplicate_and_keeps_the_resolve() -> None:
    b, rf = book()
    r = rf.rules[0]
    rows = []
    for t, obs in ((T0, hit()), (T0 + 60 * S, hit())):
        rows += [change_row(c) for c in b.evaluate(r, obs, t)]
    # what ClickHouse gives back: naive UTC datetimes
    latest = dict(zip(ALERT_COLUMNS, rows[-1], strict=True))
    for k, v in latest.items():
        if isinstance(v, datetime):
            latest[k] = v.astimezone(UTC).replace(tzinfo=None)
    b2 = AlertBook(rf)
    b2.restore([alert_from_row(latest)])
    assert [a.state for a in b2.firing()] == ["firing"]
    assert b2.evaluate(r, hit(), T0 + 90 * S) == []  # no second page
    c = b2.evaluate(r, ok(), T0 + 100 * S)
    assert kinds(c) == ["resolved"] and c[0].alert.fired_at == T0 + 60 * S


def test_restore_ignores_finished_alerts_and_removed_rules() -> None:
    b, rf = book()
    r = rf.rules[1]
    fired = b.evaluate(r, hit(agent="x"), T0)[0].alert
    resolved = b.evaluate(r, [], T0 + S)[0].alert
    b2 = AlertBook(rf)
    b2.restore([resolved, fired.__class__(**{**fired.__dict__, "rule": "gone"})])
    assert b2.alerts == {}


def test_change_row_and_json_carry_the_alert() -> None:
    b, rf = book()
    c = b.evaluate(rf.rules[1], hit(agent="a1"), T0)[0]
    row = dict(zip(ALERT_COLUMNS, change_row(c), strict=True))
    assert row["state"] == "firing" and row["change"] == "firing" and row["group_labels"] == {"agent": "a1"}
    assert row["fired_at"] == datetime.fromtimestamp(T0 / 1000, UTC)
    j = change_json(c)
    assert j["fired_at"] == "2023-11-14T22:13:20.000Z" and j["resolved_at"] is None
    assert j["fingerprint"] == fingerprint("per_agent", {"agent": "a1"})


def test_fingerprint_is_stable_and_label_order_free() -> None:
    assert fingerprint("r", {"a": "1", "b": "2"}) == fingerprint("r", {"b": "2", "a": "1"})
    assert fingerprint("r", {"a": "1"}) != fingerprint("r2", {"a": "1"})


@hsettings(max_examples=200)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 40)), min_size=1, max_size=60))
def test_pages_alternate_firing_resolved_and_fire_only_after_for(steps: list[tuple[bool, int]]) -> None:
    """Whatever the sequence of breaches: without repeats, notifications alternate firing /
    resolved, starting with firing, and a firing comes only after `for` of continuous breach."""
    b, rf = book()
    r = rf.rules[0]  # for 60 s, repeat 10 min
    t = T0
    notified: list[str] = []
    breach_since: int | None = None
    for breached, dt in steps:
        t += dt * S
        if breached and breach_since is None:
            breach_since = t
        if not breached:
            breach_since = None
        for c in b.evaluate(r, hit() if breached else ok(), t):
            if c.kind == "firing":
                assert breach_since is not None and t - breach_since >= 60 * S
            if c.notify and c.kind != "renotify":
                notified.append(c.kind)
    assert notified == ["firing", "resolved"] * (len(notified) // 2) + (["firing"] if len(notified) % 2 else [])
