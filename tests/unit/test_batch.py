"""BatchProcessor: dedup, per-sink watermarks (exact replays) and rollups against a reference."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.ingest.aggregates import Measures, SketchMapping
from pipeline.core.ingest.batch import BatchOutput, BatchProcessor, RawMessage
from pipeline.core.ingest.decode import Decoder
from pipeline.core.ingest.dedup import SeenIds
from pipeline.demo import DemoFleet
from pipeline.events import RejectReason
from tests.unit.helpers import (
    DAY0_MS,
    SIZES_MS,
    TOPIC,
    assert_rollups_match,
    dumps,
    iso,
    make_event,
    ref_event_ms,
    ref_rollups,
)

NOW = DAY0_MS + 2 * 86_400_000
TP = (TOPIC, 0)


def processor(capacity: int = 100_000) -> BatchProcessor:
    return BatchProcessor(Decoder(), SeenIds(capacity), SketchMapping())


def msg(offset: int, payload: Any, partition: int = 0) -> RawMessage:
    raw = payload if isinstance(payload, bytes) else dumps(payload)
    return RawMessage(TOPIC, partition, offset, raw)


def merged(outputs: list[BatchOutput]) -> dict:
    """The rollups of several batches, merged by key (what ClickHouse does)."""
    total: dict = {}
    for out in outputs:
        for key, m in out.rollups.items():
            total[key] = total[key].merge(m) if key in total else m.merge(Measures())
    return total


def tier_counts(rollups: dict) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for (gran, _, _), m in rollups.items():
        counts[gran] += m.count
    return dict(counts)


def completed(i: int, ms: int, *, ok: bool = True, dur: float | None = 100.0) -> dict[str, Any]:
    state = {"task_type": "code", "agent_id": f"agent-{i % 3}", "success": ok}
    return make_event(f"evt-{i}", "task.completed", iso(ms), state=state, duration_ms=dur)


# --------------------------------------------------------------------------- duplicates


def test_same_message_twice_at_different_offsets_counts_once() -> None:
    doc = completed(1, DAY0_MS + 5_000)
    out = processor().process([msg(0, doc), msg(1, doc)], NOW)
    assert (out.accepted, out.duplicates, len(out.events)) == (1, 1, 1)
    assert out.events[0].offset == 0  # the first delivery is the one kept
    assert tier_counts(out.rollups) == {"1m": 1, "5m": 1, "1h": 1, "1d": 1}
    assert_rollups_match(out.rollups, ref_rollups([doc]))


def test_same_id_in_two_different_messages_keeps_the_first() -> None:
    first = completed(1, DAY0_MS + 5_000, ok=True, dur=10.0)
    second = completed(1, DAY0_MS + 7_200_000, ok=False, dur=99.0)  # same id, other content
    out = processor().process([msg(0, first), msg(1, second)], NOW)
    assert (out.accepted, out.duplicates) == (1, 1)
    assert [orjson.loads(a.payload)["event_time_ms"] for a in out.events] == [DAY0_MS + 5_000]
    assert_rollups_match(out.rollups, ref_rollups([first]))


def test_same_id_twice_in_one_array() -> None:
    a = completed(1, DAY0_MS + 1_000)
    b = completed(2, DAY0_MS + 2_000)
    out = processor().process([msg(0, [a, b, a])], NOW)
    assert (out.accepted, out.duplicates) == (2, 1)
    assert [(e.id, e.index) for e in out.events] == [("evt-1", 0), ("evt-2", 1)]
    assert tier_counts(out.rollups) == {"1m": 2, "5m": 2, "1h": 2, "1d": 2}
    assert_rollups_match(out.rollups, ref_rollups([a, b]))


def test_duplicate_in_a_later_batch() -> None:
    bp = processor()
    doc = completed(1, DAY0_MS)
    first = bp.process([msg(0, doc)], NOW)
    bp.committed(first, "events")
    bp.committed(first, "rollups")
    again = bp.process([msg(1, doc)], NOW)
    assert (again.accepted, again.duplicates) == (0, 1)
    assert again.events == [] and again.rollups == {}
    assert again.offsets == {}


def test_duplicates_across_partitions() -> None:
    doc = completed(1, DAY0_MS)
    out = processor().process([msg(5, doc, partition=0), msg(5, doc, partition=1)], NOW)
    assert (out.accepted, out.duplicates) == (1, 1)


def test_dedup_horizon_forgets_the_oldest_ids() -> None:
    seen = SeenIds(capacity=3)
    for i in range(4):
        assert seen.first_delivery(f"id-{i}", (TOPIC, 0, i, 0, ""))
    assert len(seen) == 3
    assert not seen.first_delivery("id-3", (TOPIC, 0, 99, 0, ""))  # remembered: a duplicate
    assert seen.first_delivery("id-0", (TOPIC, 0, 98, 0, ""))  # forgotten: counts again
    assert seen.first_delivery("id-3", (TOPIC, 0, 3, 0, ""))  # its own origin: a replay
    assert seen.duplicates == 1


# --------------------------------------------------------------------------- replays


def first_run() -> tuple[list[RawMessage], dict[int, list[dict[str, Any]]], BatchOutput, BatchProcessor]:
    """Offsets 0..9 on partition 0, processed and written by every sink.

    Offset 3 is an array of two events, offset 7 is not JSON; the others hold one event.
    """
    docs_by_offset: dict[int, list[dict[str, Any]]] = {}
    messages = []
    n = 0
    for off in range(10):
        if off == 7:
            messages.append(msg(off, b"{not json"))
            docs_by_offset[off] = []
            continue
        count = 2 if off == 3 else 1
        docs = [completed(n + k, DAY0_MS + (n + k) * 61_000, ok=(n + k) % 4 != 0) for k in range(count)]
        n += count
        docs_by_offset[off] = docs
        messages.append(msg(off, docs if count > 1 else docs[0]))
    bp = processor()
    out = bp.process(messages, NOW)
    for sink in ("events", "rollups", "dlq"):
        bp.committed(out, sink)
    return messages, docs_by_offset, out, bp


def docs_from(docs_by_offset: dict[int, list[dict[str, Any]]], lo: int, hi: int) -> list:
    return [d for off in range(lo, hi + 1) for d in docs_by_offset[off]]


def restarted(out: BatchOutput, marks: dict[str, int]) -> BatchProcessor:
    """A new processor whose SeenIds and watermarks are loaded from what was written."""
    bp = processor()
    bp.seen.preload((a.id, (a.topic, a.partition, a.offset, a.index, a.log)) for a in out.events)
    for sink, off in marks.items():
        bp.set_watermarks(sink, {TP: off})
    return bp


def test_first_run_writes_everything_and_records_watermarks() -> None:
    messages, by_offset, out, bp = first_run()
    docs = docs_from(by_offset, 0, 9)
    assert out.accepted == len(docs) == 10
    assert len(out.events) == 10
    assert [r.reason for r in out.rejected] == [RejectReason.invalid_json]
    assert out.offsets == {"events": {TP: 9}, "rollups": {TP: 9}, "dlq": {TP: 7}}
    assert bp.watermarks == {"events": {TP: 9}, "rollups": {TP: 9}, "dlq": {TP: 7}}
    assert_rollups_match(out.rollups, ref_rollups(docs))


def test_replay_after_everything_was_written_produces_nothing() -> None:
    messages, _, out, _ = first_run()
    bp = restarted(out, {"events": 9, "rollups": 9, "dlq": 9})
    again = bp.process(messages, NOW)
    assert again.events == [] and again.rollups == {} and again.rejected == []
    assert again.offsets == {}
    assert again.replayed == 10
    assert again.duplicates == 0


def test_replay_writes_exactly_the_missing_part_per_sink() -> None:
    messages, by_offset, out, _ = first_run()
    # events were written up to offset 9, rollups only up to 4, the DLQ up to 6
    bp = restarted(out, {"events": 9, "rollups": 4, "dlq": 6})
    again = bp.process(messages, NOW)
    assert again.events == []
    assert again.duplicates == 0  # a replay is not a duplicate
    # rollups for offsets 5..9 only, against the reference over exactly those events
    assert len(docs_from(by_offset, 5, 9)) == 4
    assert_rollups_match(again.rollups, ref_rollups(docs_from(by_offset, 5, 9)))
    assert [(r.source.offset, r.reason) for r in again.rejected] == [(7, RejectReason.invalid_json)]
    assert again.offsets == {"rollups": {TP: 9}, "dlq": {TP: 7}}
    # what was written before the crash (0..4) plus the replay equals the whole, once
    before = processor().process(messages[:5], NOW)
    assert_rollups_match(merged([before, again]), ref_rollups(docs_from(by_offset, 0, 9)))


def test_replay_with_events_behind_rollups() -> None:
    messages, _, out, _ = first_run()
    bp = restarted(out, {"events": 2, "rollups": 9, "dlq": 9})
    again = bp.process(messages, NOW)
    assert again.rollups == {}
    assert [(a.offset, a.index, a.id) for a in again.events] == [
        (a.offset, a.index, a.id) for a in out.events if a.offset > 2
    ]
    assert again.offsets == {"events": {TP: 9}}


def test_resend_from_a_new_offset_after_restart_is_a_duplicate() -> None:
    messages, by_offset, out, _ = first_run()
    bp = restarted(out, {"events": 9, "rollups": 9, "dlq": 9})
    new = completed(100, DAY0_MS + 3_600_000)
    [resent] = by_offset[2]  # first written at offset 2
    again = bp.process([*messages, msg(10, new), msg(11, resent), msg(12, [new, resent])], NOW)
    assert again.duplicates == 3
    assert [a.id for a in again.events] == [new["id"]]
    assert_rollups_match(again.rollups, ref_rollups([new]))
    assert again.offsets == {"events": {TP: 10}, "rollups": {TP: 10}}


def test_watermarks_are_per_partition() -> None:
    messages, _, out, _ = first_run()
    bp = restarted(out, {"events": 9, "rollups": 9, "dlq": 9})
    other = [msg(m.offset, m.value, partition=1) for m in messages if m.offset != 7]
    # the same offsets on partition 1 are new messages, but carry ids already seen: duplicates
    again = bp.process(other, NOW)
    assert again.replayed == 0
    assert again.duplicates == 10
    fresh = bp.process([msg(0, completed(500, DAY0_MS), partition=1)], NOW)
    assert [a.partition for a in fresh.events] == [1]
    assert fresh.offsets["events"] == {(TOPIC, 1): 0}


def test_watermarks_only_move_forward() -> None:
    bp = processor()
    bp.set_watermarks("events", {TP: 9})
    bp.set_watermarks("events", {TP: 4})
    assert bp.watermarks["events"] == {TP: 9}
    out = bp.process([msg(3, completed(1, DAY0_MS))], NOW)  # old offset: skipped for events
    assert out.events == []
    bp.committed(out, "events")
    assert bp.watermarks["events"] == {TP: 9}


# --------------------------------------------------------------------------- rollups


def _shuffled_history(seed: int) -> list[dict[str, Any]]:
    """Demo traffic, plus copies hours and a day old (late), in shuffled order."""
    rnd = random.Random(seed)
    events = DemoFleet(seed=seed).take(1500, DAY0_MS + 6 * 3_600_000)
    late = []
    for i, ev in enumerate(rnd.sample(events, 300)):
        old = dict(ev, id=f"late-{i}")
        shift = rnd.choice([3_600_000, 3 * 3_600_000, 26 * 3_600_000]) + rnd.randrange(60_000)
        old["timestamp"] = iso(_ms(ev["timestamp"]) - shift)
        late.append(old)
    # a few timestamps in other accepted forms: epoch ms / epoch s / naive / +00:00
    for ev in rnd.sample(events, 100):
        ms = _ms(ev["timestamp"])
        ev["timestamp"] = rnd.choice([ms, ms / 1000, iso(ms).rstrip("Z"), iso(ms).replace("Z", "+00:00")])
    allev = events + late
    rnd.shuffle(allev)
    # duplicates: some events delivered again later
    allev += [dict(e) for e in rnd.sample(allev, 100)]
    return allev


def _ms(ts: Any) -> int:
    if isinstance(ts, int):
        return ts
    if isinstance(ts, float):
        return round(ts * 1000)
    return ref_event_ms(ts)


def _as_iso(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reference reads ISO text; give it every event's time in that form."""
    return [dict(d, timestamp=iso(_ms(d["timestamp"]))) for d in docs]


@pytest.mark.parametrize("seed", [1, 2])
def test_rollups_equal_an_independent_count(seed: int) -> None:
    history = _shuffled_history(seed)
    bp = processor()
    outputs = []
    rnd = random.Random(seed)
    offset = 0
    i = 0
    while i < len(history):
        batch = []
        for _ in range(rnd.randint(50, 300)):
            if i >= len(history):
                break
            n = rnd.choice([1, 1, 1, 3])  # some messages are arrays
            chunk = history[i : i + n]
            i += n
            batch.append(msg(offset, chunk if n > 1 else chunk[0]))
            offset += 1
        out = bp.process(batch, NOW)
        for sink in ("events", "rollups", "dlq"):
            bp.committed(out, sink)
        outputs.append(out)

    unique_ids = {d["id"] for d in history}
    assert sum(o.accepted for o in outputs) == len(unique_ids)
    assert sum(o.duplicates for o in outputs) == len(history) - len(unique_ids)
    assert sum(o.rejected_count for o in outputs) == 0
    assert sum(len(o.events) for o in outputs) == len(unique_ids)

    total = merged(outputs)
    assert_rollups_match(total, ref_rollups(_as_iso(history)))
    # every tier holds every event once
    assert tier_counts(total) == {g: len(unique_ids) for g in SIZES_MS}
    # window starts are aligned to their tier
    for gran, start, _ in total:
        assert start % SIZES_MS[gran] == 0
    # the late events landed in their own (old) windows
    starts_1h = {start for gran, start, _ in total if gran == "1h"}
    assert min(starts_1h) < DAY0_MS + 6 * 3_600_000 - 3_600_000


events_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40),  # id (collisions → duplicates)
        st.integers(min_value=-3 * 86_400_000, max_value=86_400_000),  # around DAY0
        st.sampled_from(["task.completed", "task.failed", "task.started", "agent.self_report"]),
        st.sampled_from(["a", "b", ""]),
        st.one_of(st.none(), st.floats(min_value=0, max_value=1e7)),
        st.booleans(),
    ),
    min_size=1,
    max_size=50,
)


@settings(max_examples=60)
@given(events_strategy, st.integers(min_value=1, max_value=10))
def test_rollups_property(rows: list, batch_size: int) -> None:
    docs = []
    for ident, t, et, agent, dur, ok in rows:
        if et == "agent.self_report":
            state: dict[str, Any] = {"status": "completed" if ok else "failed"}
            doc = make_event(f"id-{ident}", et, iso(DAY0_MS + t), entity_id=agent or "x",
                             state=state, duration_ms=dur)  # fmt: skip
        else:
            state = {"task_type": "t", "agent_id": agent or None}
            if et == "task.completed":
                state["success"] = ok
            if et == "task.failed":
                state["error"] = "e"
            doc = make_event(f"id-{ident}", et, iso(DAY0_MS + t), state=state, duration_ms=dur)
        docs.append(doc)
    bp = processor()
    outs = []
    for start in range(0, len(docs), batch_size):
        batch = [msg(start + k, d) for k, d in enumerate(docs[start : start + batch_size])]
        outs.append(bp.process(batch, NOW))
    n_unique = len({d["id"] for d in docs})
    assert sum(o.duplicates for o in outs) == len(docs) - n_unique
    total = merged(outs)
    assert_rollups_match(total, ref_rollups(docs))
    assert tier_counts(total) == {g: n_unique for g in SIZES_MS}


def test_max_event_time_and_offsets() -> None:
    docs = [completed(i, DAY0_MS + ms) for i, ms in enumerate([5_000, 90_000, 1_000])]
    out = processor().process([msg(10, docs[0]), msg(11, docs[1]), msg(12, b"[]"), msg(13, docs[2])], NOW)
    assert out.max_event_time_ms == DAY0_MS + 90_000
    assert out.messages == 4
    assert (out.accepted, out.rejected_count) == (3, 1)
    assert out.offsets == {"events": {TP: 13}, "rollups": {TP: 13}, "dlq": {TP: 12}}


def test_a_poison_duration_does_not_stop_the_batch() -> None:
    # A JSON string that pydantic reads as an infinite float must not crash the batch.
    poison = completed(1, DAY0_MS)
    poison["metrics"] = {"duration_ms": "Infinity"}
    good = completed(2, DAY0_MS + 1_000)
    out = processor().process([msg(0, poison), msg(1, good)], NOW)
    assert [a.id for a in out.events] == ["evt-2"]
    assert [r.source.offset for r in out.rejected] == [0]
    assert_rollups_match(out.rollups, ref_rollups([good]))


def test_rollup_dimensions_group_by_agent_task_type_and_outcome() -> None:
    docs = [
        completed(1, DAY0_MS, ok=True),  # agent-1
        completed(4, DAY0_MS + 1, ok=True),  # agent-1
        completed(7, DAY0_MS + 2, ok=False),  # agent-1, failure
        completed(2, DAY0_MS + 3, ok=True),  # agent-2
    ]
    out = processor().process([msg(i, d) for i, d in enumerate(docs)], NOW)
    by_dims = {dims: m.count for (gran, _, dims), m in out.rollups.items() if gran == "1m"}
    assert by_dims == {
        ("task", "task.completed", "agent-1", "code", "success"): 2,
        ("task", "task.completed", "agent-1", "code", "failure"): 1,
        ("task", "task.completed", "agent-2", "code", "success"): 1,
    }
    grouped: dict = defaultdict(int)
    for (gran, _, _), m in out.rollups.items():
        grouped[gran] += m.successes
    assert dict(grouped) == {g: 3 for g in SIZES_MS}


# --------------------------------------------------------------------------- chunked decoding


def _summary(out: BatchOutput) -> tuple[Any, ...]:
    """Everything a batch asks the sinks to write and everything it counted, segment by segment."""
    parts = [
        (p.events, [(r.reason, r.detail, r.source, r.original, r.event_id) for r in p.rejected],
         {k: (m.count, m.successes, m.failures, m.duration_count, m.duration_sum, m.duration_min, m.duration_max,
              dict(m.sketch)) for k, m in p.rollups.items()},
         p.rollup_origins, p.offsets)
        for p in out.parts
    ]  # fmt: skip
    counts = (out.messages, out.accepted, out.rejected_count, out.duplicates, out.replayed, out.max_event_time_ms)
    return counts, out.folded, parts


_DOC = st.builds(
    lambda i, ms, ok: completed(i, DAY0_MS + ms, ok=ok),
    st.integers(0, 40), st.integers(0, 3 * 86_400_000), st.booleans(),
)  # fmt: skip
_MESSAGE = st.one_of(
    _DOC,
    st.lists(_DOC | st.just({"id": "bad"}), min_size=1, max_size=12),  # arrays, repeated ids, rejections
    st.sampled_from([b"{not json", b"[]", b"null", dumps({"event_type": "task.completed"})]),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.lists(_MESSAGE, min_size=0, max_size=25), min_size=1, max_size=4),
    st.sampled_from([1, 2, 3, 7, 50]),
    st.integers(1, 40),
    st.integers(0, 6),
)
def test_decoding_a_chunk_at_a_time_gives_what_decoding_the_whole_batch_gives(
    batches: list[list[Any]], chunk: int, max_rows: int, written: int
) -> None:
    # One chunk as big as the batch is the processor as it was (every message decoded, then
    # every id looked up at once); small chunks move the dedup look-ups between decodes.
    whole = BatchProcessor(Decoder(), SeenIds(64), SketchMapping(), max_rows=max_rows, decode_chunk=10**9)
    chunked = BatchProcessor(Decoder(), SeenIds(64), SketchMapping(), max_rows=max_rows, decode_chunk=chunk)
    for bp in (whole, chunked):  # some messages were written before: replays, per sink
        bp.set_watermarks("events", {TP: written - 1})
        bp.set_watermarks("dlq", {TP: written // 2 - 1})
    offset = 0
    for docs in batches:
        msgs = [msg(offset + i, d) for i, d in enumerate(docs)]
        offset += len(docs)
        a, b = whole.process(msgs, NOW), chunked.process(msgs, NOW)
        assert _summary(b) == _summary(a)
        for sink in ("events", "rollups", "dlq"):
            for part in a.parts:
                whole.committed(part, sink)
            for part in b.parts:
                chunked.committed(part, sink)
    assert chunked.seen.duplicates == whole.seen.duplicates
    assert len(chunked.seen) == len(whole.seen)
    assert chunked.watermarks == whole.watermarks


def test_a_batch_decodes_a_chunk_of_events_at_a_time() -> None:
    """Only a chunk's event objects are alive while the batch is processed (memory)."""
    bp = BatchProcessor(Decoder(), SeenIds(1000), SketchMapping(), decode_chunk=4)
    decoded: list[int] = []
    decode = bp.decoder.decode

    def counting(*args: Any) -> Any:
        items = decode(*args)
        decoded.append(len(items))
        return items

    bp.decoder.decode = counting  # type: ignore[method-assign]
    prefetched: list[int] = []
    prefetch = bp.seen.prefetch
    bp.seen.prefetch = lambda ids: (prefetched.append(len(list(ids))), prefetch([]))[1]  # type: ignore[method-assign]
    docs = [completed(i, DAY0_MS + i) for i in range(10)]
    out = bp.process([msg(i, d) for i, d in enumerate(docs)], NOW)
    assert out.accepted == 10 and [a.id for a in out.events] == [d["id"] for d in docs]
    assert prefetched == [4, 4, 2]
