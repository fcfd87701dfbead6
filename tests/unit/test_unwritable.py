"""Refused writes and bounded dimensions, the pure parts: finding refused rows by halves,
moving the rollups marker, INSERT-sized segments at message boundaries, events the
serializer refuses, the rollup dimension cap and the alert group cap."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.alerts.rules import OTHER_GROUP, Observation, cap_groups, parse_rules
from pipeline.core.ingest.aggregates import SketchMapping
from pipeline.core.ingest.batch import BatchProcessor, RawMessage
from pipeline.core.ingest.decode import Decoder, Limits
from pipeline.core.ingest.dedup import SeenIds
from pipeline.core.ingest.dimcap import OTHER, DimensionCap
from pipeline.core.ingest.rows import MARKER_GRANULARITY, ROLLUP_COLUMNS, rollup_rows, rows_without
from pipeline.core.ingest.windows import GRANULARITIES
from pipeline.core.isolate import isolate
from pipeline.events import RejectReason
from tests.unit.helpers import DAY0_MS, TOPIC, dumps, iso, make_event

NOW = DAY0_MS + 2 * 86_400_000
MARKER = ROLLUP_COLUMNS.index("src_offsets")


def _probe_for(bad: set[int], calls: list[tuple[int, int]]):  # type: ignore[no-untyped-def]
    def probe(lo: int, hi: int) -> str | None:
        calls.append((lo, hi))
        hit = sorted(i for i in bad if lo <= i < hi)
        return f"row {hit[0]}" if hit else None

    return probe


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 300).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, max(0, n - 1)), max_size=n))))
def test_isolate_finds_exactly_the_refused_rows(case: tuple[int, set[int]]) -> None:
    n, bad = case
    bad = {i for i in bad if i < n}
    calls: list[tuple[int, int]] = []
    found = isolate(n, _probe_for(bad, calls))
    assert [i for i, _ in found] == sorted(bad)
    assert all(err == f"row {i}" for i, err in found)  # each with its own refusal
    if bad:
        assert len(calls) <= 1 + 2 * len(bad) * max(1, n.bit_length())


def test_isolate_probes_the_whole_batch_once_when_nothing_is_refused() -> None:
    calls: list[tuple[int, int]] = []
    assert isolate(1000, _probe_for(set(), calls)) == []
    assert calls == [(0, 1000)]


def test_isolate_bounds_a_flood_of_refusals() -> None:
    calls: list[tuple[int, int]] = []
    found = isolate(10_000, _probe_for(set(range(10_000)), calls), max_probes=50)
    assert [i for i, _ in found] == list(range(10_000))  # all reported, none written
    assert len(calls) <= 52


# --------------------------------------------------------------------------- rollups marker


def _rollup_rows() -> tuple[list[tuple[object, ...]], dict[tuple[str, int], int]]:
    bp = BatchProcessor(Decoder(), SeenIds(1000), SketchMapping())
    docs = [make_event(f"e{i}", "task.completed", iso(DAY0_MS + i * 3_600_000)) for i in range(3)]
    out = bp.process([RawMessage(TOPIC, 0, i, dumps(d)) for i, d in enumerate(docs)], NOW)
    offsets = out.offsets["rollups"]
    return rollup_rows(out.rollups, offsets, datetime.now(UTC), {}), offsets  # no log: key "topic:partition@"


def test_marker_stays_when_its_row_is_kept() -> None:
    rows, offsets = _rollup_rows()
    marked = [i for i, r in enumerate(rows) if r[MARKER]]
    refused = {i for i in range(len(rows)) if i not in marked}
    kept = rows_without(rows, refused, offsets, datetime.now(UTC), {})
    assert kept == [rows[i] for i in marked]


def test_marker_moves_to_a_kept_row_when_its_row_is_refused() -> None:
    rows, offsets = _rollup_rows()
    marked = next(i for i, r in enumerate(rows) if r[MARKER])
    kept = rows_without(rows, {marked}, offsets, datetime.now(UTC), {})
    assert len(kept) == len(rows) - 1
    assert [r[MARKER] for r in kept if r[MARKER]] == [{f"{TOPIC}:0@": 2}]


def test_marker_gets_a_zero_row_when_every_row_is_refused() -> None:
    rows, offsets = _rollup_rows()
    kept = rows_without(rows, set(range(len(rows))), offsets, datetime.now(UTC), {})
    assert len(kept) == 1 and kept[0][0] == MARKER_GRANULARITY
    assert kept[0][MARKER] == {f"{TOPIC}:0@": 2} and kept[0][7] == 0  # count 0
    assert len(kept[0]) == len(ROLLUP_COLUMNS)


# --------------------------------------------------------------------------- segments


def _messages(n: int, per_msg: int) -> list[RawMessage]:
    out = []
    for m in range(n):
        docs = [make_event(f"m{m}-{k}", "task.completed", iso(DAY0_MS + (m * per_msg + k) * 1000),
                           state={"agent_id": f"a{k % 4}"}) for k in range(per_msg)]  # fmt: skip
        out.append(RawMessage(TOPIC, m % 2, m, dumps(docs)))
    return out


def test_segments_respect_the_row_limit_at_message_boundaries() -> None:
    msgs = _messages(20, 7)
    whole = BatchProcessor(Decoder(), SeenIds(10_000), SketchMapping()).process(msgs, NOW)
    bp = BatchProcessor(Decoder(), SeenIds(10_000), SketchMapping(), max_rows=20)
    out = bp.process(msgs, NOW)
    assert len(out.segments) > 1 and whole.segments == [] and whole.parts == [whole]
    for seg in out.segments:
        offsets = {a.offset for a in seg.events}
        for off in offsets:  # a message is never split between segments
            assert sum(1 for a in seg.events if a.offset == off) == 7
        assert len(seg.events) <= 20 + 7 - 1
        assert set(seg.offsets) == {"events", "rollups"}
    # per partition, segments cover increasing offsets: a written prefix stays a prefix
    last: dict[int, int] = {}
    for seg in out.segments:
        for (_, part), off in seg.offsets["events"].items():
            assert off > last.get(part, -1)
            last[part] = off
    assert [a.id for a in out.events] == [a.id for a in whole.events]
    total = {k: m.count for k, m in out.rollups.items()}
    assert total == {k: m.count for k, m in whole.rollups.items()}
    assert sum(m.count for s in out.segments for m in s.rollups.values()) == sum(total.values())


def test_segments_respect_the_byte_limit() -> None:
    msgs = _messages(10, 3)
    out = BatchProcessor(Decoder(), SeenIds(10_000), SketchMapping(), max_bytes=2000).process(msgs, NOW)
    assert len(out.segments) >= 3
    assert all(sum(len(a.payload) for a in s.events) < 2000 + 3 * 600 for s in out.segments)


# --------------------------------------------------------------------------- unserializable


def _nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        doc = {"n": doc}
    return doc


def test_an_event_orjson_cannot_write_is_unwritable_and_counted_nowhere_else() -> None:
    # The decoder's depth bound (too_deep) stops this in production; loosened here so the
    # serializer's safety net behind it is what is tested.
    bp = BatchProcessor(Decoder(limits=Limits(max_depth=2000)), SeenIds(1000), SketchMapping())
    good = make_event("good", "task.completed", iso(DAY0_MS))
    poison = make_event("poison", "task.completed", iso(DAY0_MS), state={"deep": _nested(300)})
    docs = [good, poison, good | {"id": "good2"}]  # json: orjson cannot write the poison either
    out = bp.process([RawMessage(TOPIC, 0, i, json.dumps(d).encode()) for i, d in enumerate(docs)], NOW)
    assert [a.id for a in out.events] == ["good", "good2"]
    assert [(r.reason, r.event_id, r.source.offset) for r in out.rejected] == [(RejectReason.unwritable, "poison", 1)]
    assert "current_state" in out.rejected[0].detail
    assert sum(m.count for (g, _, _), m in out.rollups.items() if g == "1m") == 2
    assert all(a.payload for a in out.events)
    # not remembered as seen: the same id, once writable, is accepted
    again = bp.process([RawMessage(TOPIC, 0, 3, dumps({**poison, "current_state": {}}))], NOW)
    assert again.accepted == 1


def test_a_normalized_event_over_the_output_limit_is_unwritable() -> None:
    bp = BatchProcessor(Decoder(), SeenIds(1000), SketchMapping(), max_event_bytes=500)
    doc = make_event("big", "task.completed", iso(DAY0_MS), state={"result": "x" * 600})
    out = bp.process([RawMessage(TOPIC, 0, 0, dumps(doc))], NOW)
    assert out.events == [] and out.rejected[0].reason == RejectReason.unwritable
    assert "bytes" in out.rejected[0].detail


# --------------------------------------------------------------------------- dimension cap


def test_dimension_cap_folds_new_values_beyond_the_cap_per_window() -> None:
    cap = DimensionCap(2)
    got = [cap.fold("1m", 0, f"a{i}", "t") for i in range(4)]
    assert got == [("a0", "t"), ("a1", "t"), (OTHER, "t"), (OTHER, "t")]
    assert cap.fold("1m", 0, "a1", "t") == ("a1", "t")  # an admitted value keeps its name
    assert cap.fold("1m", 60_000, "a3", "t") == ("a3", "t")  # another window, its own budget
    assert cap.fold("1m", 0, "", "") == ("", "")  # unknown never counts
    assert cap.folded == {"agent": 2, "task_type": 0}


def test_dimension_cap_tracks_a_bounded_number_of_windows() -> None:
    cap = DimensionCap(1, max_windows=8)
    for w in range(100):
        cap.fold("1m", w * 60_000, "a", "t")
    assert len(cap) == 8


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 5)), min_size=1, max_size=200), st.integers(1, 5))
def test_rollup_totals_stay_exact_under_the_cap(events: list[tuple[int, int]], max_values: int) -> None:
    docs = [make_event(f"e{i}", "task.completed", iso(DAY0_MS + minute * 60_000),
                       state={"agent_id": f"agent-{agent}"}) for i, (agent, minute) in enumerate(events)]  # fmt: skip
    msgs = [RawMessage(TOPIC, 0, i, dumps(d)) for i, d in enumerate(docs)]
    bp = BatchProcessor(Decoder(), SeenIds(10_000), SketchMapping(), caps=DimensionCap(max_values))
    capped = bp.process(msgs, NOW)
    free = BatchProcessor(Decoder(), SeenIds(10_000), SketchMapping()).process(msgs, NOW)

    def per_window(out: Any) -> dict[tuple[str, int], int]:
        totals: dict[tuple[str, int], int] = {}
        for (g, ws, _), m in out.rollups.items():
            totals[(g, ws)] = totals.get((g, ws), 0) + m.count
        return totals

    assert per_window(capped) == per_window(free)
    for g, ws, _ in capped.rollups:
        named = {d[2] for (g2, ws2, d) in capped.rollups if (g2, ws2) == (g, ws) and d[2] != OTHER}
        assert len(named) <= max_values
    assert sum(capped.folded.values()) == sum(
        m.count for (_, _, dims), m in capped.rollups.items() if dims[2] == OTHER
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 6), st.integers(0, 2)), min_size=1, max_size=150),
    st.integers(1, 4),
    st.integers(1, 12),
)
def test_rollups_under_the_cap_equal_asking_the_cap_for_every_event(
    events: list[tuple[int, int, int]], max_values: int, max_windows: int
) -> None:
    """The batch loop asks the cap only for dimensions new to a window (while the cap forgets
    no window); the rollups must equal asking it for every event and granularity, also when
    few windows are remembered (windows forgotten and seen again mid-batch)."""
    docs = [make_event(f"e{i}", "task.completed", iso(DAY0_MS + minute * 60_000),
                       state={"agent_id": f"agent-{agent}", "task_type": f"t{kind}"})
            for i, (minute, agent, kind) in enumerate(events)]  # fmt: skip
    msgs = [RawMessage(TOPIC, 0, i, dumps(d)) for i, d in enumerate(docs)]
    caps = DimensionCap(max_values, max_windows)
    out = BatchProcessor(Decoder(), SeenIds(10_000), SketchMapping(), caps=caps).process(msgs, NOW)

    ref_caps = DimensionCap(max_values, max_windows)
    expected: dict[tuple[str, int, tuple[str, ...]], int] = {}
    for minute, agent, kind in events:
        ts = DAY0_MS + minute * 60_000
        for gran, size in GRANULARITIES.items():
            ws = ts - ts % size
            a, t = ref_caps.fold(gran, ws, f"agent-{agent}", f"t{kind}")
            rk = (gran, ws, ("task", "task.completed", a, t, "success"))
            expected[rk] = expected.get(rk, 0) + 1
    assert {rk: m.count for rk, m in out.rollups.items()} == expected
    assert caps.folded == ref_caps.folded
    assert caps.evicted == ref_caps.evicted


# --------------------------------------------------------------------------- alert groups


RULES = """
rules:
  - name: busy
    measure: count
    group_by: [agent]
    op: ">"
    threshold: 5
"""


def test_alert_groups_are_capped_worst_first_and_the_rest_fold_into_other() -> None:
    rule = parse_rules(RULES).rules[0]
    obs = [Observation({"agent": f"a{i:03d}"}, float(i), i > 5, 1) for i in range(500)]
    capped, folded = cap_groups(rule, obs, 10)
    assert len(capped) == 10 and folded == 491
    assert [o.labels["agent"] for o in capped[:9]] == [f"a{i:03d}" for i in range(499, 490, -1)]
    other = capped[-1]
    assert other.labels == {"agent": OTHER_GROUP} and other.breached and other.value == 490.0
    assert other.samples == 491
    assert cap_groups(rule, obs[:10], 10) == (obs[:10], 0)
    # deterministic whatever the order rows come in
    assert cap_groups(rule, list(reversed(obs)), 10)[0] == capped
