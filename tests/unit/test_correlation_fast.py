"""The correlator's shortcuts give what it gave without them: the view kept on a slot until it is
finalized (instead of replaying the history again), against a correlator that replays the history
every time it asks, over shuffled, duplicated and out-of-order histories, with verdicts, history
caps, agents' heartbeats, timer ticks and a restart from the persisted state in between."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.tasks.correlation import CorrelationConfig, Correlator, Output
from pipeline.core.tasks.lifecycle import TaskView, abandoned_event_id, compact, derive
from pipeline.core.tasks.state import TaskSlot
from pipeline.events import EntityType, NormalizedEvent

T0 = 1_762_164_000_000


class Replaying(Correlator):
    """The correlator as it was: every view replayed from the history."""

    def _view(self, task_id: str, slot: TaskSlot, verdict: bool = True) -> TaskView:
        return derive(task_id, slot.history, slot.verdict_deadline_ms if verdict else None, slot.verdicts,
                      slot.dropped_events, slot.dropped_progress)  # fmt: skip


def _event(event_type: str, entity_id: str, t: int, eid: str, state: dict[str, Any]) -> NormalizedEvent:
    return NormalizedEvent(
        id=eid, event_time_ms=t, timestamp_raw=str(t), event_type=event_type,
        entity_type=EntityType(event_type.split(".")[0]), entity_id=entity_id, current_state=state,
        metadata={"correlation_id": f"c-{entity_id}"}, metrics={"cost": 0.25, "currency": "USD"} if t % 3 == 0 else {},
    )  # fmt: skip


_TASK_STEPS = [
    ("task.created", {"task_type": "code", "priority": "high"}), ("task.queued", {}),
    ("task.assigned", {"agent_id": "a1", "confidence": 0.5}), ("task.started", {"agent_id": "a1"}),
    ("task.progress", {"percentage": 40}), ("task.paused", {}), ("task.resumed", {}),
    ("task.review", {"passed": True}), ("task.review", {"passed": False}),
    ("task.completed", {"success": True}), ("task.completed", {"success": False, "error": "x"}),
    ("task.failed", {"error": "boom", "will_retry": True, "retry_count": 1}), ("task.failed", {"error": "final"}),
    ("task.cancelled", {}), ("task.abandoned", {}), ("task.status_changed", {"status": "executing"}),
]  # fmt: skip


@st.composite
def _stream(draw: st.DrawFn) -> tuple[CorrelationConfig, list[tuple[str, Any]]]:
    cfg = CorrelationConfig(
        reorder_window_s=draw(st.sampled_from([0.0, 1.0, 2.0])), abandon_after_s=draw(st.sampled_from([5.0, 30.0])),
        agent_offline_after_s=10.0, max_history=draw(st.sampled_from([3, 5, 500])),
        keep_closed_s=draw(st.sampled_from([1.0, 600.0])),
    )  # fmt: skip
    events: list[NormalizedEvent] = []
    for k in range(draw(st.integers(1, 4))):
        task = f"t{k}"
        steps = draw(st.lists(st.tuples(st.integers(0, len(_TASK_STEPS) - 1), st.integers(0, 60_000)), max_size=12))
        for j, (s, dt) in enumerate(steps):
            et, state = _TASK_STEPS[s]
            events.append(_event(et, task, T0 + dt, f"{task}-e{j}", dict(state)))
        for n in draw(st.lists(st.integers(1, 3), max_size=2)):  # our own verdicts, back through the pipeline
            events.append(_event("task.abandoned", task, T0 + 40_000, abandoned_event_id(task, n), {}))
    for j, dt in enumerate(draw(st.lists(st.integers(0, 90_000), max_size=6))):
        events.append(_event("agent.heartbeat", "a1", T0 + dt, f"hb{j}", {"active_tasks": j % 2}))
    # duplicates (the same event delivered again), then any order
    events += [events[i] for i in draw(st.lists(st.integers(0, max(0, len(events) - 1)), max_size=6)) if events]
    events = draw(st.permutations(events))
    steps: list[tuple[str, Any]] = []
    i = 0
    while i < len(events):
        n = draw(st.integers(1, 6))
        steps.append(("apply", (events[i : i + n], draw(st.integers(0, 20_000)))))
        i += n
        action = draw(st.sampled_from(["", "", "tick", "restart"]))
        if action:
            steps.append((action, draw(st.integers(0, 20_000))))
    steps.append(("tick", 100_000))
    steps.append(("tick", 200_000))
    return cfg, steps


def _seen(out: Output) -> dict[str, Any]:
    """Everything an output asks the sinks to write, as values (taken at once: slots change later)."""
    return {
        "tasks": {k: (dataclasses.asdict(v), n) for k, (v, n) in out.task_rows.items()},
        "executions": [r.model_dump() for r in out.executions],
        "agents": {k: a.to_json() for k, a in out.agent_rows.items()},
        "emitted": out.emitted,
        "dirty_tasks": {k: None if s is None else s.to_json() for k, s in out.dirty_tasks.items()},
        "dirty_agents": {k: None if a is None else a.to_json() for k, a in out.dirty_agents.items()},
    }


def _run(cls: type[Correlator], cfg: CorrelationConfig, steps: list[tuple[str, Any]]) -> list[Any]:
    c = cls(cfg)
    wall = T0
    seen: list[Any] = []
    for action, arg in steps:
        if action == "apply":
            batch, dt = arg
            wall += dt
            seen.append(_seen(c.apply(batch, wall)))
        elif action == "tick":
            wall += arg
            seen.append(_seen(c.tick(wall)))
        else:  # a restart: a new correlator from the persisted state
            tasks = {k: s.to_json() for k, s in c.tasks.items()}
            agents = {k: a.to_json() for k, a in c.agents.items()}
            c = cls(cfg)
            wall += arg
            c.restore(tasks, agents, wall)
    seen.append((dict(c.counters), c.state_bytes, {k: s.to_json() for k, s in c.tasks.items()}))
    return seen


@settings(max_examples=400, deadline=None)
@given(_stream())
def test_the_kept_view_gives_what_replaying_gives(case: tuple[CorrelationConfig, list[tuple[str, Any]]]) -> None:
    cfg, steps = case
    assert _run(Correlator, cfg, steps) == _run(Replaying, cfg, steps)


def test_a_finished_task_is_replayed_once_until_it_is_published(monkeypatch: Any) -> None:
    from pipeline.core.tasks import correlation

    calls: list[str] = []

    def counting(task_id: str, *args: Any) -> TaskView:
        calls.append(task_id)
        return derive(task_id, *args)

    monkeypatch.setattr(correlation, "derive", counting)
    c = Correlator(CorrelationConfig(reorder_window_s=2.0))
    steps = [("task.created", {}), ("task.started", {"agent_id": "a"}), ("task.completed", {"success": True})]
    c.apply([_event(et, "t", T0 + i, f"e{i}", dict(s)) for i, (et, s) in enumerate(steps)], T0)
    out = c.tick(T0 + 3000)
    assert [r.outcome for r in out.executions] == ["success"]
    assert calls == ["t"]
    assert c.tasks["t"].view_cache is None  # closed: nothing kept


# --------------------------------------------------------------------------- compact, as it was


def _usage_of_before(metrics: dict[str, Any] | None) -> Any:
    """``pipeline.core.cost.usage_of`` before its shortcut for metrics without a usage key."""
    from pipeline.core.cost import _count, _number

    if not metrics:
        return {}
    out: dict[str, Any] = {}
    cost = _number(metrics.get("cost"))
    if cost is not None:
        out["cost"] = cost
        cur = metrics.get("currency") or metrics.get("cost_currency")
        if isinstance(cur, str) and cur:
            out["cur"] = cur[:16]
    tok: dict[str, list[int]] = {}
    model = metrics.get("model")
    tin = _count(metrics.get("input_tokens", metrics.get("prompt_tokens")))
    tout = _count(metrics.get("output_tokens", metrics.get("completion_tokens")))
    if not tin and not tout and not isinstance(metrics.get("tokens"), dict):
        tin = _count(metrics.get("tokens", metrics.get("total_tokens")))
    if tin or tout:
        tok[str(model or "")[:128]] = [tin, tout]
    per_model = metrics.get("tokens")
    if isinstance(per_model, dict):
        for m, v in list(per_model.items())[:64]:
            if isinstance(v, dict):
                pair = [_count(v.get("input", v.get("prompt"))), _count(v.get("output", v.get("completion")))]
            else:
                pair = [_count(v), 0]
            if pair[0] or pair[1]:
                prev = tok.setdefault(str(m)[:128], [0, 0])
                prev[0] += pair[0]
                prev[1] += pair[1]
    if tok:
        out["tok"] = tok
    return out


def _compact_before(event_id: str, event_type: str, time_ms: int, state: dict[str, Any], metadata: dict[str, Any],
                    group_keys: tuple[str, ...], metrics: dict[str, Any] | None) -> Any:  # fmt: skip
    """``lifecycle.compact`` as it was (the reference)."""
    from pipeline.core.tasks.lifecycle import _KEEP, _RANK, HistoryEntry

    data: dict[str, Any] = {k: state[k] for k in _KEEP.get(event_type, ()) if state.get(k) is not None}
    usage = _usage_of_before(metrics)
    if usage:
        data["usage"] = usage
    for k in ("task_type", "agent_id"):
        if state.get(k):
            data[k] = str(state[k])
    if metadata.get("correlation_id"):
        data["correlation_id"] = str(metadata["correlation_id"])
    for k in group_keys:
        v = state.get(k) or metadata.get(k)
        if v:
            data["group"] = str(v)
            break
    return HistoryEntry(time_ms, _RANK.get(event_type, 6), event_id, event_type, data)


_FIELDS = ["task_type", "agent_id", "correlation_id", "group", "team", "request", "requester_id", "requester_type",
           "priority", "deadline", "confidence", "evaluations", "percentage", "step", "status", "passed", "success",
           "error", "retry_count", "will_retry", "cost", "currency", "cost_currency", "model", "input_tokens",
           "prompt_tokens", "output_tokens", "completion_tokens", "tokens", "total_tokens", "duration_ms"]  # fmt: skip
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30)
    | st.sampled_from(["", "0", "12", "1e400", "nan", "-3", "ünï \x00"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_FIELDS + ["input", "output"]), inner,
                                                                max_size=4),
    max_leaves=8,
)  # fmt: skip
_DOCS = st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=8)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from([et for et, _ in _TASK_STEPS] + ["task.unknown", "task.progress"]), _DOCS, _DOCS,
       st.one_of(st.none(), _DOCS), st.sampled_from([("group", "correlation_id"), ("team",), ()]))  # fmt: skip
def test_compact_gives_what_it_gave(
    event_type: str, state: dict[str, Any], metadata: dict[str, Any], metrics: dict[str, Any] | None,
    group_keys: tuple[str, ...],
) -> None:  # fmt: skip
    new = compact("e1", event_type, -86_400_000, state, metadata, group_keys, metrics)
    old = _compact_before("e1", event_type, -86_400_000, state, metadata, group_keys, metrics)
    assert repr(new) == repr(old)  # repr: NaN != NaN, and key order counts (the changelog's bytes)
    from pipeline.core.cost import usage_of

    assert repr(usage_of(metrics)) == repr(_usage_of_before(metrics))
