"""The pure parts of operating taskpulse: migration plans and steps, TTL expressions, DLQ
replay decisions and outcomes, doctor's judgements."""

from __future__ import annotations

import pytest

from pipeline.core import doctor
from pipeline.core.ingest.replay import Entry, Filters, judge_outcome, message_key, parse_entry_id, refusal
from pipeline.core.ingest.windows import RETENTION_DAYS
from pipeline.core.migrations import Retention, Step, check_steps, plan, ttl_days, ttl_of
from pipeline.core.schema import code_version, ddl_statements, migration_steps, ttl_targets
from pipeline.settings import Settings
from pipeline.sinks.clickhouse import retention_from_settings
from pipeline.topics import RAW_TOPICS

# --------------------------------------------------------------------------- migrations


def test_steps_are_numbered_one_to_n_across_domains() -> None:
    steps = migration_steps()
    assert [s.version for s in steps] == list(range(1, code_version() + 1))
    assert all(s.statements for s in steps)


def test_every_statement_of_every_step_is_idempotent() -> None:
    for step in migration_steps():
        for stmt in step.statements:
            # MODIFY SETTING sets values: run again, it sets the same ones
            assert any(w in stmt.sql for w in ("IF NOT EXISTS", "IF EXISTS", "OR REPLACE", "MODIFY SETTING")), (
                stmt.sql[:100]
            )


def test_check_steps_refuses_repeats_and_gaps() -> None:
    one, two = Step.of(1, "a", ["x"]), Step.of(2, "b", ["y"])
    assert check_steps([two, one]) == [one, two]
    with pytest.raises(ValueError, match="without gaps or repeats"):
        check_steps([one, Step.of(1, "c", ["z"])])
    with pytest.raises(ValueError, match="without gaps or repeats"):
        check_steps([one, Step.of(3, "c", ["z"])])


def test_plan_pending_and_ahead() -> None:
    steps = [Step.of(v, str(v), ["x"]) for v in (1, 2, 3)]
    assert [s.version for s in plan(steps, []).pending] == [1, 2, 3]
    p = plan(steps, [1, 2])
    assert [s.version for s in p.pending] == [3] and not p.ahead and p.db_version == 2
    ahead = plan(steps, [1, 2, 3, 4])
    assert ahead.ahead and ahead.unknown == [4] and "ahead of this taskpulse" in ahead.ahead_message("taskpulse")
    assert "pending steps 3 (3)" in p.behind_message("taskpulse")


def test_ttl_settings_reach_the_ddl_and_the_targets() -> None:
    r = Retention(events=14, rollups_1m=3, dlq=60, alerts=90)
    targets = ttl_targets(r)
    assert targets["events"] == "toDateTime(event_time) + toIntervalDay(14)"
    assert targets["rollups"] == (
        "window_start + toIntervalDay(multiIf(granularity = '1m', 3, granularity = '5m', 30, "
        "granularity = '1h', 90, 730))"
    )
    assert targets["dlq_replays"] == "toDateTime(replayed_at) + toIntervalDay(60)"
    text = "\n".join(ddl_statements(retention=r))
    for expr in targets.values():
        assert f"TTL {expr}" in text


def test_ttl_defaults_are_the_documented_tiers() -> None:
    r = retention_from_settings(Settings())
    assert r == Retention()
    assert r.rollup_days() == RETENTION_DAYS


def test_ttl_of_reads_engine_full_and_ttl_days_shows_it() -> None:
    full = "MergeTree ORDER BY ts TTL toDateTime(ts) + toIntervalDay(30) SETTINGS index_granularity = 8192"
    assert ttl_of(full) == "toDateTime(ts) + toIntervalDay(30)"
    assert ttl_of("MergeTree ORDER BY ts SETTINGS index_granularity = 8192") == ""
    assert ttl_days(ttl_of(full)) == "30"
    assert ttl_days(ttl_targets()["rollups"]) == "1m: 7, 5m: 30, 1h: 90, else: 730"
    assert ttl_days("") == "none"


# --------------------------------------------------------------------------- DLQ replay


def _entry(**kw: object) -> Entry:
    base: dict[str, object] = dict(
        entry_id=1, received_at="", reason="bad_timestamp", detail="", event_id="e", original=b'{"entity_id": "t1"}',
        original_cut=False, original_redacted=False, src_topic=RAW_TOPICS["task"], src_partition=0, src_offset=5,
        src_index=0, src_log="",
    )  # fmt: skip
    return Entry(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({}, ""),
        ({"src_offset": -1, "reason": "unwritable"}, "no original message"),
        ({"src_topic": "taskpulse.events.normalized"}, "not a raw topic"),
        ({"reason": "unwritable"}, "not the message as sent"),
        ({"original_cut": True}, "was cut"),
        ({"original_redacted": True}, "pseudonymised / redacted"),
        ({"original": b"  "}, "empty"),
    ],
)
def test_refusal_keeps_what_has_no_whole_original(change: dict[str, object], why: str) -> None:
    got = refusal(_entry(**change), RAW_TOPICS.values())
    assert (why in got and got) if why else got == ""


def test_message_key_is_the_entity_id() -> None:
    assert message_key(b'{"entity_id": "t1"}') == b"t1"
    assert message_key(b'[{"entity_id": "t2"}, {"entity_id": "t3"}]') == b"t2"
    assert message_key(b"not json") is None
    assert message_key(b"[]") is None


def test_entry_ids_and_filters() -> None:
    assert parse_entry_id("00000000000000ff") == 255
    with pytest.raises(ValueError, match="not a DLQ entry id"):
        parse_entry_id("zz")
    f = Filters.from_json({"reason": "bad_timestamp", "since_ms": "5", "limit": 10**9, "id": "ff"})
    assert (f.reason, f.since_ms, f.limit, f.entry_id) == ("bad_timestamp", 5, 100_000, 255)


def test_judge_outcome() -> None:
    t = RAW_TOPICS["task"]
    published = {"a": (t, 0, 10), "b": (t, 0, 11), "c": (t, 1, 3), "d": (t, 1, 9)}
    rows = [(f"{t}:0:10", "", 2), (f"{t}:0:11", "bad_timestamp", 1)]
    out, undecided = judge_outcome(published, rows, {(t, 1): 5})
    assert out == {"accepted": 1, "events": 2, "rejected_again": {"bad_timestamp": 1}, "no_rows": 1, "pending": 1}
    assert undecided == {"d"}


# --------------------------------------------------------------------------- doctor


def test_doctor_lag_and_schema_judgements() -> None:
    ends = {("raw", 0): 100, ("raw", 1): 50, ("other", 0): 999}
    assert doctor.lag("ingest", "g", ends, {("raw", 0): 100, ("raw", 1): 45}, ["raw"], 10).level == "ok"
    bad = doctor.lag("ingest", "g", ends, {("raw", 0): 10, ("raw", 1): 50}, ["raw"], 10)
    assert bad.level == "fail" and "90 messages behind" in bad.detail and "raw:0" in bad.detail
    assert doctor.lag("ingest", "g", {("raw", 0): 0}, {}, ["raw"], 10).level == "ok"
    assert doctor.lag("ingest", "g", ends, {}, ["raw"], 1000).level == "warn"
    status = {"db_version": 6, "code_version": 7, "unknown": [], "pending": [7],
              "steps": [{"version": 7, "name": "x", "state": "pending"}], "ttl": []}  # fmt: skip
    assert doctor.schema(status).level == "fail" and "pending 7 (x)" in doctor.schema(status).detail
    assert doctor.schema({**status, "pending": [], "db_version": 7}).level == "ok"
    assert "ahead" in doctor.schema({**status, "pending": [], "unknown": [8]}).detail


def test_doctor_disk_clock_topics() -> None:
    assert doctor.disk("/d", 10 * 2**20, 100 * 2**20, 100).level == "fail"
    assert doctor.disk("/d", 200 * 2**20, 400 * 2**20, 100).level == "ok"
    now = 1_000_000_000_000
    assert [f.level for f in doctor.clock(now, now + 120_000, now + 1000, 60)] == ["ok", "fail"]
    assert [f.level for f in doctor.clock(now, None, now - 90_000, 60)] == ["fail", "ok"]
    raw = list(RAW_TOPICS.values())
    assert doctor.topics(raw, dict.fromkeys(raw, 4), raw).level == "ok"
    assert doctor.topics(raw, {**dict.fromkeys(raw, 4), raw[0]: 2}, raw).level == "fail"
    assert "missing" in doctor.topics([*raw, "x"], dict.fromkeys(raw, 4), raw).detail
    assert doctor.exit_code([doctor.ok("a", "b")]) == 0
