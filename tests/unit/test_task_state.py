"""The correlator's typed state reads and writes the compact form the Faust changelog holds."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core import jsonbytes
from pipeline.core.tasks.lifecycle import HistoryEntry
from pipeline.core.tasks.state import AgentSlot, TaskSlot

#: a task slot as the previous version wrote it (every optional key set)
OLD_TASK = {
    "h": [[1000, 0, "e1", "task.created", {"task_type": "research"}],
          [2000, 3, "e2", "task.started", {"agent_id": "a1"}]],
    "v": 3, "rv": 1, "sig": "{}", "term": None, "ab": 2, "closed": None, "wall": 5000, "last": 2000,
    "ad": None, "hd": 4, "hp": 3, "alive": 2500, "tt": "research", "ag": "a1",
}  # fmt: skip
OLD_AGENT = {"status": "busy", "since": 10, "seen": 20, "online_since": 5, "active": 2, "cpu": 12.5, "mem": 300,
             "busy_ms": 7, "online_ms": 9, "reported": "executing", "n": 4, "v": 6}  # fmt: skip


def test_a_persisted_task_slot_loads_with_names_and_writes_back_the_same() -> None:
    slot = TaskSlot.from_json("t", orjson.loads(orjson.dumps(OLD_TASK)))
    assert slot.history[1] == HistoryEntry(2000, 3, "e2", "task.started", {"agent_id": "a1"})
    assert (slot.version, slot.verdicts, slot.dropped_events, slot.dropped_progress) == (3, 2, 4, 3)
    assert (slot.alive_ms, slot.watched_task_type, slot.indexed_agent) == (2500, "research", "a1")
    written = {k: v for k, v in OLD_TASK.items() if k != "ad"}  # a None verdict is not written
    assert orjson.loads(orjson.dumps(slot.to_json())) == written


def test_a_slot_without_optional_keys_loads_with_defaults() -> None:
    minimal = {k: OLD_TASK[k] for k in ("h", "v", "rv", "sig", "term", "ab", "closed", "wall", "last")}
    slot = TaskSlot.from_json("t", minimal)
    assert (slot.verdict_deadline_ms, slot.agent_alive_ms, slot.indexed_agent, slot.closed_abandoned) == (
        None, 0, "", False)
    assert slot.alive_ms == 2000


def test_an_agent_slot_round_trips_its_short_keys() -> None:
    a = AgentSlot.from_json(OLD_AGENT)
    assert (a.active_tasks, a.reported_status, a.changes, a.version) == (2, "executing", 4, 6)
    assert a.to_json() == OLD_AGENT


# ``TaskSlot.to_bytes`` (the changelog value, appended to from its last bytes) against
# ``jsonbytes.dumps(slot.to_json())``: the same bytes after any sequence of changes, the same
# refusal for what orjson cannot write (too deep, an integer beyond 64 bits, a non-str key).

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
)  # fmt: skip
_data = st.recursive(
    _scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8
)


def _deep(depth: int) -> Any:
    x: Any = 1
    for _ in range(depth):
        x = [x]
    return x


_entries = st.builds(
    HistoryEntry, st.integers(min_value=-(2**63), max_value=2**63), st.integers(0, 12), st.text(max_size=8),
    st.sampled_from(["task.created", "task.progress", "tâsk.ü", "task.\u2028"]),
    st.one_of(
        st.dictionaries(st.text(max_size=6), _data, max_size=4),
        st.sampled_from([{"d": _deep(250)}, {"d": _deep(251)}, {"d": _deep(252)}, {"n": 2**64}, {"n": -(2**63) - 1}]),
        st.just({1: "a non-str key"}),
    ),
)  # fmt: skip
_fields = {
    "version": st.integers(0, 2**40), "record_version": st.integers(-5, 5), "record_signature": st.none() | st.text(),
    "final_since_wall_ms": st.none() | st.integers(), "verdicts": st.integers(0, 3),
    "verdict_deadline_ms": st.none() | st.integers(), "closed_wall_ms": st.none() | st.integers(),
    "closed_abandoned": st.booleans(), "dropped_events": st.integers(0, 3), "dropped_progress": st.integers(0, 3),
    "agent_alive_ms": st.integers(-1, 2**50), "watched_task_type": st.text(max_size=5),
    "indexed_agent": st.text(max_size=5), "changed_wall_ms": st.integers(), "last_event_ms": st.integers(),
}  # fmt: skip
_steps = st.one_of(
    st.tuples(st.just("append"), st.lists(_entries, min_size=1, max_size=3)),
    st.tuples(st.just("pop"), st.integers(0, 20)),
    st.tuples(st.just("insert"), st.tuples(st.integers(0, 20), _entries)),
    st.tuples(st.just("replace"), st.lists(_entries, max_size=4)),
    st.tuples(st.just("same values, other objects"), st.none()),
    st.tuples(st.just("set"), st.sampled_from(sorted(_fields)).flatmap(lambda f: st.tuples(st.just(f), _fields[f]))),
)


def _written(slot: TaskSlot, how: Any) -> tuple[str, Any]:
    try:
        return "ok", how(slot)
    except (TypeError, ValueError) as exc:  # what the role catches ("kept in memory only")
        return "refused", type(exc)


@settings(max_examples=300, deadline=None)
@given(st.lists(_entries, max_size=4), st.lists(st.tuples(_steps, st.booleans()), max_size=12))
def test_to_bytes_writes_what_dumps_of_to_json_writes(history: list[HistoryEntry], steps: list[Any]) -> None:
    slot = TaskSlot(changed_wall_ms=1, last_event_ms=2, history=list(history))
    assert _written(slot, TaskSlot.to_bytes) == _written(slot, lambda s: jsonbytes.dumps(s.to_json()))
    for (op, arg), write in steps:
        h = slot.history
        if op == "append":
            h.extend(arg)
        elif op == "pop" and h:
            h.pop(arg % len(h))
        elif op == "insert":
            h.insert(*arg)
        elif op == "replace":
            slot.history = arg
        elif op == "same values, other objects":
            slot.history = [HistoryEntry(*e) for e in h]
        elif op == "set":
            setattr(slot, *arg)
        if write:  # changes between writes pile up
            new, old = _written(slot, TaskSlot.to_bytes), _written(slot, lambda s: jsonbytes.dumps(s.to_json()))
            assert new == old
            if new[0] == "ok":
                assert orjson.loads(new[1]) == orjson.loads(orjson.dumps(slot.to_json()))
    assert _written(slot, TaskSlot.to_bytes) == _written(slot, lambda s: jsonbytes.dumps(s.to_json()))


def test_to_bytes_of_the_correlators_slots_batch_after_batch() -> None:
    from pipeline.core.ingest.decode import Decoder
    from pipeline.core.tasks.correlation import CorrelationConfig, Correlator
    from pipeline.demo import DemoFleet
    from pipeline.events import NormalizedEvent

    demo = DemoFleet(seed=3, tasks_per_s=3.0).take(6000, 1_800_000_000_000)
    decoded = [
        Decoder().decode("t", 0, i, orjson.dumps(demo[i : i + 100]), 1_800_000_000_000) for i in range(0, 6000, 100)
    ]
    events = [e for d in decoded for e in d if isinstance(e, NormalizedEvent)]
    c = Correlator(CorrelationConfig(max_history=8))  # the cap drops entries: histories change in place
    written = 0
    for i in range(0, len(events), 700):
        out = c.apply(events[i : i + 700], 1_800_000_000_000 + i)
        for slot in list(out.dirty_tasks.values()) + list(out.dirty_agents.values()):
            if slot is not None:
                assert slot.to_bytes() == jsonbytes.dumps(slot.to_json())
                written += 1
    assert written > 1000 and c.counters["history_dropped"] > 0
