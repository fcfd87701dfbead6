"""Measures (add / merge / result) and the mergeable duration sketch."""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.core.ingest.aggregates import (
    MIN_INDEXABLE,
    Measures,
    SketchMapping,
    exact_quantile,
    merge_all,
    sketch_quantile,
)
from pipeline.core.ingest.batch import BatchProcessor, RawMessage
from pipeline.core.ingest.decode import Decoder
from pipeline.core.ingest.dedup import SeenIds
from tests.unit.helpers import DAY0_MS, TOPIC, dumps, iso, make_event

MAPPING = SketchMapping()  # the default: 0.5 % relative accuracy
QS = (0.50, 0.95, 0.99)
OUTCOMES = ("", "success", "failure", "cancelled", "abandoned")


def build(items: list[tuple[str, float | None]], mapping: SketchMapping = MAPPING) -> Measures:
    m = Measures()
    for outcome, dur in items:
        m.add(outcome, dur, mapping.key(dur) if dur is not None else None)
    return m


def ref_quantile(values: list[float], q: float) -> float:
    """Rank floor(q * (n - 1)) of the sorted values (the documented rank rule)."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def assert_same(a: Measures, b: Measures) -> None:
    assert (a.count, a.successes, a.failures, a.duration_count) == (
        b.count,
        b.successes,
        b.failures,
        b.duration_count,
    )
    assert math.isclose(a.duration_sum, b.duration_sum, rel_tol=1e-9, abs_tol=1e-9)
    assert a.duration_min == b.duration_min
    assert a.duration_max == b.duration_max
    assert {k: v for k, v in a.sketch.items() if v} == {k: v for k, v in b.sketch.items() if v}


# --------------------------------------------------------------------------- examples


def test_empty_measures() -> None:
    r = Measures().result(MAPPING)
    assert r == {
        "count": 0,
        "successes": 0,
        "failures": 0,
        "duration_count": 0,
        "duration_avg_ms": None,
        "duration_min_ms": None,
        "duration_max_ms": None,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
    }


def test_add_counts_outcomes_and_durations() -> None:
    m = build(
        [
            ("success", 100.0),
            ("success", 300.0),
            ("failure", 50.0),
            ("cancelled", None),  # counted, neither success nor failure, no duration
            ("", 0.0),  # a zero duration is a duration
            ("abandoned", None),
        ]
    )
    r = m.result(MAPPING)
    assert r["count"] == 6
    assert r["successes"] == 2
    assert r["failures"] == 1
    assert r["duration_count"] == 4
    assert r["duration_avg_ms"] == pytest.approx(450.0 / 4)
    assert r["duration_min_ms"] == 0.0
    assert r["duration_max_ms"] == 300.0
    # sorted durations [0, 50, 100, 300]: p50 is rank floor(0.5 * 3) = 1 → 50
    assert r["p50_ms"] == pytest.approx(50.0, rel=0.01)
    assert r["p95_ms"] == pytest.approx(100.0, rel=0.01)  # rank floor(0.95 * 3) = 2
    assert r["p99_ms"] == pytest.approx(100.0, rel=0.01)


def test_events_without_duration_leave_duration_figures_empty() -> None:
    r = build([("success", None), ("failure", None)]).result(MAPPING)
    assert (r["count"], r["successes"], r["failures"]) == (2, 1, 1)
    assert r["duration_count"] == 0
    for name in ("duration_avg_ms", "duration_min_ms", "duration_max_ms", "p50_ms", "p99_ms"):
        assert r[name] is None, name


def test_merge_adds_up_and_leaves_inputs_unchanged() -> None:
    a = build([("success", 10.0), ("failure", 30.0)])
    b = build([("success", 5.0), ("", None)])
    a_before = build([("success", 10.0), ("failure", 30.0)])
    b_before = build([("success", 5.0), ("", None)])
    m = a.merge(b)
    assert (m.count, m.successes, m.failures, m.duration_count) == (4, 2, 1, 3)
    assert m.duration_sum == 45.0
    assert (m.duration_min, m.duration_max) == (5.0, 30.0)
    assert_same(a, a_before)
    assert_same(b, b_before)
    m.add("success", 1.0, MAPPING.key(1.0))
    assert_same(a, a_before)  # the merged sketch is not shared with an input


def test_merge_with_empty_is_identity() -> None:
    a = build([("success", 10.0), ("failure", 30.0)])
    assert_same(a.merge(Measures()), a)
    assert_same(Measures().merge(a), a)
    assert_same(merge_all([]), Measures())
    assert_same(merge_all([a]), a)


# --------------------------------------------------------------------------- properties

durations = st.one_of(
    st.none(),
    st.just(0.0),
    st.floats(min_value=-3, max_value=16).map(math.exp),  # lognormal-ish, ~0.05 ms .. 2.5 h
    st.sampled_from([1.0, 250.0, 1000.0]),  # ties
)
items = st.lists(st.tuples(st.sampled_from(OUTCOMES), durations), max_size=40)


@settings(max_examples=150)
@given(items, items, items)
def test_merge_is_associative(a: list, b: list, c: list) -> None:
    ma, mb, mc = build(a), build(b), build(c)
    assert_same(ma.merge(mb).merge(mc), ma.merge(mb.merge(mc)))


@settings(max_examples=150)
@given(items, items)
def test_merge_is_commutative(a: list, b: list) -> None:
    ma, mb = build(a), build(b)
    assert_same(ma.merge(mb), mb.merge(ma))


@settings(max_examples=150)
@given(items, st.randoms(use_true_random=False), st.integers(min_value=0, max_value=40))
def test_input_order_and_split_do_not_change_the_result(a: list, rnd: object, cut: int) -> None:
    whole = build(a)
    shuffled = list(a)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert_same(build(shuffled), whole)
    # any split into two partials merges back to the whole
    cut = min(cut, len(shuffled))
    assert_same(build(shuffled[:cut]).merge(build(shuffled[cut:])), whole)
    # and the figures match an independent computation over the same items
    durs = [d for _, d in a if d is not None]
    r = whole.result(MAPPING)
    assert r["count"] == len(a)
    assert r["successes"] == sum(o == "success" for o, _ in a)
    assert r["failures"] == sum(o == "failure" for o, _ in a)
    assert r["duration_count"] == len(durs)
    if durs:
        assert r["duration_avg_ms"] == pytest.approx(math.fsum(durs) / len(durs), rel=1e-9)
        assert (r["duration_min_ms"], r["duration_max_ms"]) == (min(durs), max(durs))


# Events inside one UTC day, produced through the real batch processor.
task_events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=86_400_000 - 1),  # ms into DAY0
        st.sampled_from(["task.completed", "task.failed", "task.started", "task.cancelled"]),
        st.sampled_from(["coder", "writer"]),
        st.one_of(st.none(), st.floats(min_value=0, max_value=1e6)),
        st.booleans(),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60)
@given(task_events)
def test_coarse_windows_equal_the_merge_of_their_fine_windows(events: list) -> None:
    msgs = []
    for i, (offset_ms, et, agent, dur, ok) in enumerate(events):
        state = {"task_type": "code", "agent_id": agent}
        if et == "task.completed":
            state["success"] = ok
        if et == "task.failed":
            state["error"] = "boom"
        doc = make_event(f"e{i}", et, iso(DAY0_MS + offset_ms), state=state, duration_ms=dur)
        msgs.append(RawMessage(TOPIC, 0, i, dumps(doc)))
    bp = BatchProcessor(Decoder(), SeenIds(10_000), MAPPING)
    out = bp.process(msgs, now_ms=DAY0_MS + 2 * 86_400_000)
    assert out.accepted == len(events)

    by_tier: dict[str, dict] = defaultdict(dict)
    for (gran, start, dims), m in out.rollups.items():
        by_tier[gran][(start, dims)] = m
    sizes = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}
    for coarse, fine in (("5m", "1m"), ("1h", "1m"), ("1h", "5m"), ("1d", "1h"), ("1d", "1m")):
        size = sizes[coarse]
        parts: dict = defaultdict(list)
        for (start, dims), m in by_tier[fine].items():
            parts[(start - start % size, dims)].append(m)
        assert set(parts) == set(by_tier[coarse]), (coarse, fine)
        for key, ms in parts.items():
            assert_same(by_tier[coarse][key], merge_all(ms))
    # one day holds everything
    day = merge_all(by_tier["1d"].values())
    assert day.count == len(events)


# --------------------------------------------------------------------------- quantiles

positive = st.one_of(
    st.just(0.0),
    st.floats(min_value=-7, max_value=18).map(math.exp),  # lognormal-ish: ~1 µs .. ~18 h
    st.floats(min_value=MIN_INDEXABLE, max_value=1e9, allow_subnormal=False),
    st.integers(min_value=1, max_value=5).map(float),  # ties
)


def assert_within(approx: float | None, exact: float, rel: float) -> None:
    assert approx is not None
    if exact == 0:
        assert approx == 0
    else:
        assert abs(approx - exact) <= rel * exact, (approx, exact, abs(approx - exact) / exact)


@settings(max_examples=200)
@given(st.lists(positive, min_size=1, max_size=400))
@example([0.0])
@example([42.0])
@example([0.0, 0.0, 0.0, 1.0])
@example([5.0] * 100)
@example([MIN_INDEXABLE, 1e9])
def test_sketch_quantiles_within_relative_accuracy(values: list[float]) -> None:
    m = build([("", v) for v in values])
    for q in QS:
        exact = ref_quantile(values, q)
        assert exact_quantile(values, q) == exact
        approx = sketch_quantile(m.sketch, q, MAPPING)
        # what the product promises users: within 1 %
        assert_within(approx, exact, 0.01)
        # what the mapping guarantees: its relative accuracy (plus float noise)
        assert_within(approx, exact, MAPPING.relative_accuracy * (1 + 1e-9) + 1e-12)
    r = m.result(MAPPING)
    for name, q in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        assert r[name] == sketch_quantile(m.sketch, q, MAPPING)


@settings(max_examples=100)
@given(st.lists(positive, min_size=1, max_size=200), st.lists(positive, min_size=1, max_size=200))
def test_quantiles_of_merged_sketches_are_quantiles_of_all_values(a: list, b: list) -> None:
    merged = build([("", v) for v in a]).merge(build([("", v) for v in b]))
    for q in QS:
        assert_within(sketch_quantile(merged.sketch, q, MAPPING), ref_quantile(a + b, q), 0.01)


@pytest.mark.parametrize("value", [0.0, 1e-3, 0.25, 1.0, 123.456, 86_400_000.0])
def test_single_value_is_every_quantile(value: float) -> None:
    m = build([("success", value)])
    for q in (0.0, *QS, 1.0):
        assert_within(sketch_quantile(m.sketch, q, MAPPING), value, MAPPING.relative_accuracy)


def test_empty_sketch_has_no_quantile() -> None:
    for q in (0.0, *QS, 1.0):
        assert sketch_quantile({}, q, MAPPING) is None
        assert exact_quantile([], q) is None
    # a sketch whose buckets are all empty is empty too
    assert sketch_quantile({MAPPING.key(5.0): 0}, 0.5, MAPPING) is None


@pytest.mark.parametrize("relative_accuracy", [1e-3, 0.005, 0.01, 0.049])
@pytest.mark.parametrize("value", [1e-6, 1e-3, 0.25, 1.0, 1000.0, 1e12])
def test_zero_durations_rank_below_positive_ones_at_every_allowed_accuracy(
    relative_accuracy: float, value: float
) -> None:
    # Settings.sketch_relative_accuracy allows [0.001, 0.05); durations are 0 or 1e-6..1e12 ms.
    mapping = SketchMapping(relative_accuracy)
    m = build([("", 0.0), ("", value), ("", value)], mapping)
    assert sketch_quantile(m.sketch, 0.0, mapping) == 0.0  # the minimum is the zero
    bound = relative_accuracy * (1 + 1e-9)
    assert_within(sketch_quantile(m.sketch, 1.0, mapping), value, bound)  # the maximum
    assert all(-32768 <= k <= 32767 for k in m.sketch)  # every key fits ClickHouse Int16


@pytest.mark.parametrize("relative_accuracy", [1e-5, 1e-4, 0.05, 0.2])
def test_accuracies_outside_the_supported_range_are_refused(relative_accuracy: float) -> None:
    with pytest.raises(ValueError, match="TASKPULSE_SKETCH_RELATIVE_ACCURACY"):
        SketchMapping(relative_accuracy)
