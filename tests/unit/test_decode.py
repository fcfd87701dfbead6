"""Decoder: raw message bytes → NormalizedEvent / Rejected, never an exception."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.ingest.decode import Decoder, Limits
from pipeline.demo import DemoFleet
from pipeline.events import PAYLOADS, EntityType, NormalizedEvent, Rejected, RejectReason
from tests.unit.helpers import (
    DAY0_MS,
    VALID_STATES,
    dumps,
    iso,
    make_event,
    ref_dims,
    ref_event_ms,
)

NOW = DAY0_MS + 3_600_000  # an hour after the events' default time
SKEW = 300_000


def decode(value: Any, now_ms: int = NOW, decoder: Decoder | None = None) -> list:
    raw = value if value is None or isinstance(value, bytes) else dumps(value)
    return (decoder or Decoder()).decode("events", 3, 42, raw, now_ms)


def decode_one(value: Any, **kw: Any) -> NormalizedEvent | Rejected:
    out = decode(value, **kw)
    assert len(out) == 1
    return out[0]


def paths(detail: str) -> list[str]:
    """The field paths a detail names: ``path: message; path: message``."""
    return [part.split(": ", 1)[0] for part in detail.split("; ")]


def without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


def with_state(event_type: str, **changes: Any) -> dict[str, Any]:
    state = copy.deepcopy(VALID_STATES[event_type])
    for k, v in changes.items():
        if v is _DROP:
            state.pop(k, None)
        else:
            state[k] = v
    return make_event("evt-1", event_type, state=state)


_DROP = object()
E = make_event()

# --------------------------------------------------------------------------- corpus

# (input, reason, field path named by the detail, or None when the message has no fields)
FIELD_CORPUS = [
    pytest.param(without(E, "id"), "schema_violation", "id", id="missing id"),
    pytest.param({**E, "id": ""}, "schema_violation", "id", id="empty id"),
    pytest.param({**E, "id": 7}, "schema_violation", "id", id="id not a string"),
    pytest.param({**E, "id": "x" * 257}, "out_of_range", "id", id="id too long"),
    pytest.param(without(E, "event_type"), "schema_violation", "event_type", id="no event_type"),
    pytest.param({**E, "event_type": 5}, "schema_violation", "event_type", id="event_type int"),
    pytest.param(without(E, "entity_id"), "schema_violation", "entity_id", id="no entity_id"),
    pytest.param({**E, "entity_id": ""}, "schema_violation", "entity_id", id="empty entity_id"),
    pytest.param({**E, "entity_type": "robot"}, "schema_violation", "entity_type", id="bad enum"),
    pytest.param(without(E, "entity_type"), "schema_violation", "entity_type", id="no entity"),
    pytest.param({**E, "entity_type": "agent"}, "schema_violation", "entity_type", id="entity≠prefix"),
    pytest.param(
        {**make_event(event_type="agent.heartbeat"), "entity_type": "task"},
        "schema_violation",
        "entity_type",
        id="entity≠prefix agent",
    ),
    pytest.param(without(E, "timestamp"), "schema_violation", "timestamp", id="no timestamp"),
    pytest.param({**E, "current_state": [1]}, "schema_violation", "current_state", id="state list"),
    pytest.param({**E, "previous_state": 3}, "schema_violation", "previous_state", id="prev int"),
    pytest.param({**E, "metadata": {"tags": "x"}}, "schema_violation", "metadata.tags", id="tags"),
    pytest.param(make_event(duration_ms=-1), "schema_violation", "metrics.duration_ms", id="duration<0"),
    pytest.param(
        {**E, "metrics": {"duration_ms": "slow"}},
        "schema_violation",
        "metrics.duration_ms",
        id="duration text",
    ),
    # current_state payload violations, per event type
    pytest.param(
        with_state("task.progress", percentage=150),
        "schema_violation",
        "current_state.percentage",
        id="progress 150",
    ),
    pytest.param(
        with_state("task.progress", percentage=-1),
        "schema_violation",
        "current_state.percentage",
        id="progress -1",
    ),
    pytest.param(
        with_state("task.assigned", confidence=-0.1),
        "schema_violation",
        "current_state.confidence",
        id="confidence<0",
    ),
    pytest.param(
        with_state("task.assigned", evaluations={"coder": -1}),
        "schema_violation",
        "current_state.evaluations.coder",
        id="evaluation<0",
    ),
    pytest.param(
        with_state("task.status_changed", status="DONE"),
        "schema_violation",
        "current_state.status",
        id="task state enum",
    ),
    pytest.param(
        with_state("task.failed", retry_count=-1),
        "schema_violation",
        "current_state.retry_count",
        id="retry<0",
    ),
    pytest.param(
        with_state("task.completed", agent_id=12),
        "schema_violation",
        "current_state.agent_id",
        id="agent_id int",
    ),
    pytest.param(
        with_state("agent.self_report", status="sleeping"),
        "schema_violation",
        "current_state.status",
        id="self_report enum",
    ),
    pytest.param(
        with_state("agent.self_report", progress=1.5),
        "schema_violation",
        "current_state.progress",
        id="self_report progress>1",
    ),
    pytest.param(
        with_state("agent.heartbeat", cpu_percent=-5),
        "schema_violation",
        "current_state.cpu_percent",
        id="cpu<0",
    ),
    pytest.param(
        with_state("system.metric", value="high"),
        "schema_violation",
        "current_state.value",
        id="metric value text",
    ),
    pytest.param(
        with_state("system.health", status="meh"),
        "schema_violation",
        "current_state.status",
        id="health enum",
    ),
    pytest.param(
        with_state("user.feedback", score=11),
        "schema_violation",
        "current_state.score",
        id="feedback 11",
    ),
    # timestamps
    pytest.param({**E, "timestamp": "garbage"}, "bad_timestamp", "timestamp", id="ts garbage"),
    pytest.param({**E, "timestamp": ""}, "bad_timestamp", "timestamp", id="ts empty"),
    pytest.param({**E, "timestamp": -5}, "bad_timestamp", "timestamp", id="ts negative"),
    pytest.param({**E, "timestamp": 1e300}, "bad_timestamp", "timestamp", id="ts huge"),
    pytest.param({**E, "timestamp": "2025-13-01"}, "bad_timestamp", "timestamp", id="ts month 13"),
    pytest.param({**E, "timestamp": iso(NOW + SKEW + 1000)}, "bad_timestamp", "timestamp", id="ts future"),
    pytest.param({**E, "timestamp": NOW + SKEW + 1}, "bad_timestamp", "timestamp", id="ts future epoch ms"),
    pytest.param({**E, "timestamp": True}, "bad_timestamp", "timestamp", id="ts true"),
    pytest.param({**E, "timestamp": False}, "bad_timestamp", "timestamp", id="ts false"),
    pytest.param(
        {**E, "metrics": {"duration_ms": "Infinity"}},
        "out_of_range",
        "metrics.duration_ms",
        id="duration Infinity",
    ),
    pytest.param(
        {**E, "metrics": {"duration_ms": "1e400"}},
        "out_of_range",
        "metrics.duration_ms",
        id="duration 1e400",
    ),
]


@pytest.mark.parametrize(("doc", "reason", "path"), FIELD_CORPUS)
def test_malformed_event_is_rejected_naming_the_field(doc: Any, reason: str, path: str) -> None:
    raw = dumps(doc)
    r = decode_one(raw)
    assert isinstance(r, Rejected), f"accepted: {r!r}"
    assert r.reason == RejectReason(reason), r.detail
    assert path in paths(r.detail), f"detail {r.detail!r} does not name {path!r}"
    assert r.original == raw
    assert (r.source.topic, r.source.partition, r.source.offset, r.source.index) == (
        "events",
        3,
        42,
        0,
    )
    # the event id is kept for the DLQ whenever it was a string
    expected_id = doc.get("id")[:256] if isinstance(doc.get("id"), str) else None
    assert r.event_id == expected_id


MESSAGE_CORPUS = [
    pytest.param(b'{"id": "a",', "invalid_json", "not valid JSON", id="truncated"),
    pytest.param(b"{'id': 'a'}", "invalid_json", "not valid JSON", id="single quotes"),
    pytest.param(b"not json at all", "invalid_json", "not valid JSON", id="garbage"),
    pytest.param(b'{"id": "a"} trailing', "invalid_json", "not valid JSON", id="trailing"),
    pytest.param(b"\xff\xfe{}", "invalid_json", "not valid JSON", id="not utf-8"),
    pytest.param(b'{"timestamp": NaN}', "invalid_json", "not valid JSON", id="NaN literal"),
    pytest.param(b"", "invalid_json", "empty message", id="empty bytes"),
    pytest.param(None, "invalid_json", "empty message", id="None"),
    pytest.param(b" \n\t ", "invalid_json", "empty message", id="whitespace"),
    pytest.param(b"42", "schema_violation", "int", id="number"),
    pytest.param(b"4.5", "schema_violation", "float", id="float"),
    pytest.param(b'"an event"', "schema_violation", "str", id="string"),
    pytest.param(b"null", "schema_violation", "NoneType", id="null"),
    pytest.param(b"true", "schema_violation", "bool", id="true"),
    pytest.param(b"[]", "schema_violation", "empty array", id="empty array"),
]


@pytest.mark.parametrize(("raw", "reason", "needle"), MESSAGE_CORPUS)
def test_malformed_message_is_rejected(raw: bytes | None, reason: str, needle: str) -> None:
    r = decode_one(raw)
    assert isinstance(r, Rejected)
    assert r.reason == RejectReason(reason)
    assert needle in r.detail
    assert r.original == (raw or b"")
    assert r.event_id is None
    assert (r.source.offset, r.source.index) == (42, 0)


@pytest.mark.parametrize("event_type", ["task.exploded", "TASK.COMPLETED", "task", "agent.online2", "x.y"])
def test_unknown_event_type(event_type: str) -> None:
    r = decode_one({**E, "event_type": event_type})
    assert isinstance(r, Rejected)
    assert r.reason == RejectReason.unknown_event_type
    assert repr(event_type) in r.detail
    assert r.event_id == "evt-1"


def test_oversized_message() -> None:
    raw = dumps(E)
    limit = len(raw)
    # exactly at the limit is accepted
    assert isinstance(decode_one(raw, decoder=Decoder(max_message_bytes=limit)), NormalizedEvent)
    r = decode_one(raw, decoder=Decoder(max_message_bytes=limit - 1))
    assert isinstance(r, Rejected)
    assert r.reason == RejectReason.oversized
    assert str(limit) in r.detail and str(limit - 1) in r.detail
    assert r.original == raw
    # oversize wins over everything else: even garbage is reported as oversized
    r = decode_one(b"x" * 200, decoder=Decoder(max_message_bytes=100))
    assert isinstance(r, Rejected) and r.reason == RejectReason.oversized


def test_future_skew_boundary() -> None:
    exactly = decode_one({**E, "timestamp": NOW + SKEW})
    assert isinstance(exactly, NormalizedEvent)
    assert exactly.event_time_ms == NOW + SKEW
    within = decode_one({**E, "timestamp": iso(NOW + SKEW - 1000)})
    assert isinstance(within, NormalizedEvent)
    beyond = decode_one({**E, "timestamp": NOW + SKEW + 1})
    assert isinstance(beyond, Rejected) and beyond.reason == RejectReason.bad_timestamp
    # a smaller configured skew is honoured
    tight = Decoder(max_future_skew_ms=1000)
    assert isinstance(decode_one({**E, "timestamp": NOW + 1000}, decoder=tight), NormalizedEvent)
    r = decode_one({**E, "timestamp": NOW + 1001}, decoder=tight)
    assert isinstance(r, Rejected) and r.reason == RejectReason.bad_timestamp
    # the past has no limit: a day-old event is accepted
    assert isinstance(decode_one({**E, "timestamp": iso(NOW - 86_400_000)}), NormalizedEvent)


def test_null_timestamp_is_a_bad_timestamp_naming_timestamp() -> None:
    r = decode_one({**E, "timestamp": None})
    assert isinstance(r, Rejected)
    assert r.reason == RejectReason.bad_timestamp
    assert r.detail.startswith("timestamp:")


# --------------------------------------------------------------------------- arrays


def test_array_elements_are_judged_one_by_one() -> None:
    good0 = make_event("a-0", ts=iso(DAY0_MS + 1))
    bad1 = with_state("task.progress", percentage=150)
    bad1["id"] = "a-1"
    good2 = make_event("a-2", ts=iso(DAY0_MS + 2))
    out = decode([good0, bad1, good2])
    assert [type(x) for x in out] == [NormalizedEvent, Rejected, NormalizedEvent]
    assert [out[0].id, out[2].id] == ["a-0", "a-2"]
    r = out[1]
    assert r.reason == RejectReason.schema_violation
    assert "current_state.percentage" in paths(r.detail)
    assert (r.source.topic, r.source.partition, r.source.offset, r.source.index) == (
        "events",
        3,
        42,
        1,
    )
    assert r.event_id == "a-1"
    # the DLQ keeps that element, not the whole batch
    assert orjson.loads(r.original) == bad1


@pytest.mark.parametrize("position", [0, 1, 2])
def test_non_object_array_element_names_its_index(position: int) -> None:
    items: list[Any] = [make_event(f"e{i}") for i in range(3)]
    items[position] = 17
    out = decode(items)
    r = out[position]
    assert isinstance(r, Rejected)
    assert r.reason == RejectReason.schema_violation
    assert r.source.index == position
    assert r.original == b"17"
    assert paths(r.detail) == [f"[{position}]"], r.detail
    assert sum(isinstance(x, NormalizedEvent) for x in out) == 2


def test_array_of_every_event_type() -> None:
    docs = [make_event(f"id-{et}", et) for et in PAYLOADS]
    out = decode(docs)
    assert len(out) == len(PAYLOADS)
    assert all(isinstance(x, NormalizedEvent) for x in out), [x.detail for x in out if isinstance(x, Rejected)]
    assert [x.event_type for x in out] == list(PAYLOADS)


# --------------------------------------------------------------------------- normalization


def test_normalized_event_fields() -> None:
    doc = make_event(
        "evt-9",
        "task.completed",
        "2025-11-03T02:00:00.250+02:00",
        state={"task_type": "code", "agent_id": "coder", "success": True, "result": {"n": 1}},
        duration_ms=1234.5,
    )
    doc["metadata"] = {"triggered_by": "u1", "correlation_id": "c1", "tags": ["a", "b"]}
    doc["previous_state"] = {"status": "EXECUTING"}
    e = decode_one(doc)
    assert isinstance(e, NormalizedEvent)
    assert e.id == "evt-9"
    assert e.event_time_ms == DAY0_MS + 250
    assert e.timestamp_raw == "2025-11-03T02:00:00.250+02:00"  # kept as sent
    assert e.event_type == "task.completed"
    assert e.entity_type == EntityType.task
    assert e.entity_id == "task-1"
    assert (e.agent, e.task_type, e.outcome, e.duration_ms) == ("coder", "code", "success", 1234.5)
    assert e.previous_state == {"status": "EXECUTING"}
    assert e.current_state["result"] == {"n": 1}
    assert e.metadata["triggered_by"] == "u1"
    assert e.metadata["tags"] == ["a", "b"]
    assert e.metrics["duration_ms"] == 1234.5
    assert e.ingested_ms == NOW
    assert e.extra == {}


def test_epoch_timestamp_is_normalized_and_kept_raw() -> None:
    e = decode_one({**E, "timestamp": (DAY0_MS + 5) * 1000})  # µs
    assert isinstance(e, NormalizedEvent)
    assert e.event_time_ms == DAY0_MS + 5
    assert e.timestamp_raw == str((DAY0_MS + 5) * 1000)


def test_unknown_fields_are_kept() -> None:
    doc = make_event(
        "evt-x",
        "task.progress",
        state={"task_type": "code", "percentage": 40, "eta_s": 12, "nested": {"k": [1, 2]}},
        region="eu-west-1",
        schema_version=3,
        trace={"span": "abc"},
    )
    doc["metadata"]["tenant"] = "acme"
    doc["metrics"] = {"duration_ms": 5, "tokens": 812}
    e = decode_one(doc)
    assert isinstance(e, NormalizedEvent)
    assert e.extra == {"region": "eu-west-1", "schema_version": 3, "trace": {"span": "abc"}}
    assert e.current_state["eta_s"] == 12
    assert e.current_state["nested"] == {"k": [1, 2]}
    assert e.current_state["percentage"] == 40
    assert e.metadata["tenant"] == "acme"
    assert e.metrics["tokens"] == 812


DIMENSIONS = [
    # (event_type, entity_id, current_state, metrics, expected (agent, task_type, outcome, dur))
    ("task.completed", "t", {"agent_id": "coder", "task_type": "code"}, {"duration_ms": 9},
     ("coder", "code", "success", 9.0)),
    ("task.completed", "t", {"agent_id": "coder", "success": True}, {},
     ("coder", "", "success", None)),
    ("task.completed", "t", {"agent_id": "coder", "success": False}, {},
     ("coder", "", "failure", None)),
    ("task.failed", "t", {"agent_id": "w", "task_type": "content", "error": "OOM"},
     {"duration_ms": 0}, ("w", "content", "failure", 0.0)),
    ("task.cancelled", "t", {"agent_id": "w"}, {}, ("w", "", "cancelled", None)),
    ("task.abandoned", "t", {}, {}, ("", "", "abandoned", None)),
    ("task.started", "t", {"agent_id": "w", "task_type": "code"}, {"duration_ms": 1.5},
     ("w", "code", "", 1.5)),
    ("task.queued", "t", {"task_type": "code"}, {}, ("", "code", "", None)),
    ("agent.heartbeat", "planner", {"active_tasks": 1}, {}, ("planner", "", "", None)),
    ("agent.self_report", "ops", {"status": "failed"}, {}, ("ops", "", "failure", None)),
    ("agent.self_report", "ops", {"status": "timeout"}, {}, ("ops", "", "failure", None)),
    ("agent.self_report", "ops", {"status": "completed"}, {}, ("ops", "", "success", None)),
    ("agent.self_report", "ops", {"status": "abandoned"}, {}, ("ops", "", "abandoned", None)),
    ("agent.self_report", "ops", {"status": "executing"}, {}, ("ops", "", "", None)),
    ("agent.online", "coder", {"agent_id": "coder-2"}, {}, ("coder-2", "", "", None)),
    ("system.metric", "orch", {"name": "q", "value": 1.0}, {"duration_ms": 3},
     ("", "", "", 3.0)),
    ("user.feedback", "u1", {"user_id": "u1", "score": 3}, {}, ("", "", "", None)),
]  # fmt: skip


@pytest.mark.parametrize(("event_type", "entity_id", "state", "metrics", "expected"), DIMENSIONS)
def test_derived_dimensions(event_type: str, entity_id: str, state: dict, metrics: dict, expected: tuple) -> None:
    doc = make_event("d-1", event_type, entity_id=entity_id, state=state)
    doc["metrics"] = metrics
    e = decode_one(doc)
    assert isinstance(e, NormalizedEvent), getattr(e, "detail", "")
    assert (e.agent, e.task_type, e.outcome, e.duration_ms) == expected
    # and the independent reference agrees
    assert ref_dims(doc)[2:] == expected[:3]


def test_every_demo_event_decodes() -> None:
    start = DAY0_MS
    events = DemoFleet(seed=1).take(3000, start)
    times = [ref_event_ms(ev["timestamp"]) for ev in events]
    now = max(times) + 1
    decoder = Decoder()
    kinds = set()
    for i, (ev, ms) in enumerate(zip(events, times, strict=True)):
        raw = orjson.dumps(ev)
        out = decoder.decode("events", 0, i, raw, now)
        assert len(out) == 1
        e = out[0]
        assert isinstance(e, NormalizedEvent), f"event {i} rejected: {e.detail} ({ev})"
        assert e.id == ev["id"]
        assert e.event_time_ms == ms
        assert (e.entity_type.value, e.event_type, e.agent, e.task_type, e.outcome) == ref_dims(ev)
        kinds.add(ev["event_type"])
    # the demo exercises a broad part of the contract
    assert len(kinds) >= 12, kinds
    # and the same events decode in one batch message
    assert all(isinstance(x, NormalizedEvent) for x in decoder.decode("e", 0, 0, dumps(events[:500]), now))


# --------------------------------------------------------------------------- fuzz

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4),
    max_leaves=12,
)
_VALID = [make_event(f"v-{et}", et) for et in PAYLOADS] + DemoFleet(seed=3).take(40, DAY0_MS)
_TOP_KEYS = ["id", "timestamp", "event_type", "entity_type", "entity_id", "previous_state",
             "current_state", "metadata", "metrics", "extra_field"]  # fmt: skip


@st.composite
def mutated_events(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        where = draw(st.sampled_from(["top", "state", "metrics", "metadata"]))
        target = doc if where == "top" else doc.get(where if where != "state" else "current_state")
        if not isinstance(target, dict):
            continue
        keys = list(target) or ["k"]
        key = draw(st.sampled_from(keys + _TOP_KEYS if where == "top" else keys + ["duration_ms"]))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(
                json_values | st.sampled_from(["", "Infinity", "-1", "2025-11-03", "1e400", "NaN", -1, 1e20])
            )
    return doc


def check_results(out: list, topic: str, partition: int, offset: int) -> None:
    assert len(out) >= 1
    for i, item in enumerate(out):
        assert isinstance(item, NormalizedEvent | Rejected), type(item)
        if isinstance(item, Rejected):
            assert isinstance(item.reason, RejectReason)
            assert item.reason in set(RejectReason)
            assert isinstance(item.detail, str) and item.detail
            assert isinstance(item.original, bytes)
            assert (item.source.topic, item.source.partition, item.source.offset) == (
                topic,
                partition,
                offset,
            )
            assert item.source.index in (0, i)
        else:
            assert item.id
            assert isinstance(item.event_time_ms, int)
            assert item.event_type in PAYLOADS
            assert item.event_type.split(".")[0] == item.entity_type.value
            assert item.event_time_ms <= NOW + SKEW


FUZZ = settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    check_results(Decoder().decode("t", 1, 7, raw, NOW), "t", 1, 7)


@FUZZ
@given(json_values)
def test_fuzz_arbitrary_json(value: Any) -> None:
    raw = json.dumps(value).encode()  # stdlib: big ints too
    out = Decoder().decode("t", 1, 7, raw, NOW)
    check_results(out, "t", 1, 7)
    if isinstance(value, list) and value:
        assert len(out) == len(value)
        assert [x.source.index for x in out if isinstance(x, Rejected)] == [
            i for i, x in enumerate(out) if isinstance(x, Rejected)
        ]


@FUZZ
@given(mutated_events())
def test_fuzz_mutated_events(doc: Any) -> None:
    raw = json.dumps(doc).encode()
    check_results(Decoder().decode("t", 1, 7, raw, NOW), "t", 1, 7)


@FUZZ
@given(st.lists(mutated_events() | json_values, min_size=1, max_size=6))
def test_fuzz_arrays_give_one_result_per_element(docs: list) -> None:
    raw = json.dumps(docs).encode()
    out = Decoder().decode("t", 1, 7, raw, NOW)
    check_results(out, "t", 1, 7)
    assert len(out) == len(docs)
    for i, item in enumerate(out):
        if isinstance(item, Rejected):
            assert item.source.index == i
            assert orjson.loads(item.original) == orjson.loads(json.dumps(docs[i]))


# --------------------------------------------------------------------------- bounds (issue 9)


def nest(levels: int, leaf: Any = "x", key: str | None = "a") -> Any:
    """A value ``levels`` containers deep (objects under ``key``, or arrays when key is None)."""
    for _ in range(levels):
        leaf = {key: leaf} if key is not None else [leaf]
    return leaf


def raw_json(value: Any) -> bytes:
    return json.dumps(value).encode()  # stdlib: deeper than orjson writes, and big ints


def test_300_deep_current_state_is_too_deep_not_a_crash() -> None:
    doc = make_event()
    doc["current_state"]["blob"] = nest(300)
    r = decode_one(raw_json(doc))
    assert isinstance(r, Rejected) and r.reason == RejectReason.too_deep, r
    assert "64" in r.detail and "TASKPULSE_MAX_DEPTH" in r.detail
    assert r.event_id == "evt-1"


@pytest.mark.parametrize("part", ["current_state", "previous_state", "extra", "metadata", "metrics", "resource_usage"])
@pytest.mark.parametrize("as_array", [False, True])
def test_depth_limit_is_exact(part: str, as_array: bool) -> None:
    """The event object is level 1; at the limit it passes, one level more is too_deep, in
    every free-form part, in a single-event message and inside an array message."""
    limit = 8
    decoder = Decoder(limits=Limits(max_depth=limit))
    # containers above the deep value: the event, and the part (and its owner)
    under = {"current_state": 2, "previous_state": 2, "extra": 1, "metadata": 2, "metrics": 2, "resource_usage": 3}[part]  # noqa: E501

    def event(depth: int) -> dict[str, Any]:
        doc = make_event()
        inner = nest(depth - under, key="k")
        if part in ("current_state", "previous_state"):
            doc[part] = {**doc[part], "deep": inner}
        elif part == "extra":
            doc["deep"] = inner
        elif part == "metadata":
            doc["metadata"]["deep"] = inner
        elif part == "metrics":
            doc["metrics"]["deep"] = inner
        else:
            doc["metrics"]["resource_usage"] = {"deep": inner}
        assert depth_of(doc) == depth
        return doc

    for depth, ok in ((limit, True), (limit + 1, False)):
        doc = event(depth)
        raw = raw_json([doc, make_event("evt-2")]) if as_array else raw_json(doc)
        first = decoder.decode("t", 0, 1, raw, NOW)[0]
        if ok:
            assert isinstance(first, NormalizedEvent), first
        else:
            assert isinstance(first, Rejected) and first.reason == RejectReason.too_deep, first


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def test_too_deep_array_element_keeps_a_clipped_copy_and_its_neighbours() -> None:
    deep = b"[" * 1000 + b"1" + b"]" * 1000  # what orjson reads (1024 levels), not what it writes
    raw = b"[" + dumps(make_event("a")) + b"," + deep + b"," + dumps(make_event("b")) + b"]"
    out = decode(raw)
    assert [type(x).__name__ for x in out] == ["NormalizedEvent", "Rejected", "NormalizedEvent"]
    bad = out[1]
    assert bad.reason == RejectReason.schema_violation and bad.source.index == 1
    assert depth_of(orjson.loads(bad.original)) <= 64  # a copy cut below the limit, not a crash


def test_wide_array_of_non_objects_is_one_rejection_with_the_count() -> None:
    raw = b"[" + b",".join([b"1"] * 100_000) + b"]"  # 200 KB
    out = decode(raw)
    assert len(out) == 1
    r = out[0]
    assert isinstance(r, Rejected) and r.reason == RejectReason.too_many_elements
    assert "100000" in r.detail and "10000" in r.detail and "TASKPULSE_MAX_ARRAY_ELEMENTS" in r.detail
    assert r.original == raw


def test_array_element_limit_is_exact() -> None:
    decoder = Decoder(limits=Limits(max_array_elements=3))
    three = [make_event(f"e{i}") for i in range(3)]
    assert all(isinstance(x, NormalizedEvent) for x in decoder.decode("t", 0, 1, dumps(three), NOW))
    four = decoder.decode("t", 0, 1, dumps([*three, make_event("e3")]), NOW)
    assert len(four) == 1 and four[0].reason == RejectReason.too_many_elements


ID_CASES = [
    pytest.param(lambda d, v: d.update(id=v), "id", id="id"),
    pytest.param(lambda d, v: d.update(entity_id=v), "entity_id", id="entity_id"),
    pytest.param(lambda d, v: d["metadata"].update(correlation_id=v), "metadata.correlation_id", id="correlation"),
    pytest.param(lambda d, v: d["metadata"].update(session_id=v), "metadata.session_id", id="session"),
    pytest.param(lambda d, v: d["metadata"].update(triggered_by=v), "metadata.triggered_by", id="triggered_by"),
    pytest.param(
        lambda d, v: d.update(event_type="task.created", current_state={"requester_id": v}),
        "current_state.requester_id", id="requester_id",
    ),
    pytest.param(
        lambda d, v: d.update(event_type="task.created", current_state={"user_id": v}),
        "current_state.requester_id", id="requester_id via user_id",
    ),
    pytest.param(
        lambda d, v: d.update(event_type="user.feedback", entity_type="user", current_state={"score": 1, "task_id": v}),
        "current_state.task_id", id="feedback task_id",
    ),
    pytest.param(
        lambda d, v: d.update(event_type="agent.self_report", entity_type="agent",
                              current_state={"status": "ready", "task_id": v}),
        "current_state.task_id", id="self_report task_id",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("put", "path"), ID_CASES)
def test_long_ids_are_out_of_range(put: Any, path: str) -> None:
    for length, ok in ((256, True), (257, False), (5000, False)):
        doc = make_event()
        put(doc, "i" * length)
        r = decode_one(dumps(doc))
        if ok:
            assert isinstance(r, NormalizedEvent), r
        else:
            assert isinstance(r, Rejected) and r.reason == RejectReason.out_of_range, r
            assert r.detail.startswith(f"{path}: {length} characters") and "TASKPULSE_MAX_ID_LENGTH" in r.detail


COLUMN_RANGE_CASES = [
    pytest.param("task.failed", {"retry_count": 2**40}, "current_state.retry_count", id="retry_count 2**40"),
    pytest.param("task.failed", {"retry_count": 2**70}, "current_state.retry_count", id="retry_count 2**70"),
    pytest.param("task.failed", {"retry_count": 2**32}, "current_state.retry_count", id="retry_count 2**32"),
    pytest.param("agent.heartbeat", {"active_tasks": 2**32}, "current_state.active_tasks", id="active_tasks"),
    pytest.param("agent.heartbeat", {"active_tasks": -2**70}, "current_state.active_tasks", id="active -2**70"),
    pytest.param("agent.heartbeat", {"cpu_percent": "1e400"}, "current_state.cpu_percent", id="cpu 1e400"),
    pytest.param("agent.heartbeat", {"memory_mb": "Infinity"}, "current_state.memory_mb", id="mem inf"),
    pytest.param("task.assigned", {"confidence": "1e999"}, "current_state.confidence", id="confidence 1e999"),
    pytest.param("system.metric", {"name": "q", "value": "inf"}, "current_state.value", id="metric inf"),
    pytest.param("task.created", {"deadline": "2400-01-01T00:00:00Z"}, "current_state.deadline", id="deadline 2400"),
    pytest.param("task.created", {"deadline": "1800-01-01T00:00:00Z"}, "current_state.deadline", id="deadline 1800"),
]


@pytest.mark.parametrize(("event_type", "state", "path"), COLUMN_RANGE_CASES)
def test_numbers_beyond_their_columns_are_out_of_range(event_type: str, state: dict, path: str) -> None:
    entity = event_type.split(".")[0]
    doc = make_event(event_type=event_type, state={**VALID_STATES[event_type], **state}, entity_type=entity)
    r = decode_one(raw_json(doc))
    assert isinstance(r, Rejected), r
    assert r.reason == RejectReason.out_of_range, r.detail
    assert path in r.detail


def test_column_maximum_itself_is_accepted() -> None:
    r = decode_one(dumps(with_state("task.failed", retry_count=2**32 - 1)))
    assert isinstance(r, NormalizedEvent) and r.current_state["retry_count"] == 2**32 - 1
    r = decode_one(dumps(make_event(event_type="agent.heartbeat", entity_type="agent",
                                    state={"active_tasks": 2**32 - 1})))  # fmt: skip
    assert isinstance(r, NormalizedEvent)


@pytest.mark.parametrize(
    ("ts", "ok"),
    [
        ("1969-07-20T20:17:40Z", False),
        ("1900-01-01T00:00:00Z", False),
        ("0001-01-01T00:00:00", False),
        ("1999-12-31T23:59:59.999Z", False),
        (946_684_799, False),  # epoch seconds, one second before the floor
        ("2000-01-01T00:00:00Z", True),
        (946_684_800_000, True),
        (iso(NOW + SKEW), True),
        (iso(NOW + SKEW + 1000), False),
    ],
)
def test_event_time_between_floor_and_now_plus_skew(ts: Any, ok: bool) -> None:
    r = decode_one(dumps(make_event(ts=ts)))
    if ok:
        assert isinstance(r, NormalizedEvent), r
    else:
        assert isinstance(r, Rejected) and r.reason == RejectReason.bad_timestamp, r
        assert r.detail.startswith("timestamp:")


def test_time_floor_is_a_setting() -> None:
    decoder = Decoder(limits=Limits(min_event_ms=DAY0_MS))
    assert isinstance(decode_one(dumps(make_event(ts=iso(DAY0_MS))), decoder=decoder), NormalizedEvent)
    r = decode_one(dumps(make_event(ts=iso(DAY0_MS - 1))), decoder=decoder)
    assert r.reason == RejectReason.bad_timestamp and "2025-11-03T00:00:00Z" in r.detail


def test_long_dimension_values_are_cut_not_rejected() -> None:
    long_agent, long_type = "a" * 1000, "t" * 500
    r = decode_one(dumps(with_state("task.completed", agent_id=long_agent, task_type=long_type)))
    assert isinstance(r, NormalizedEvent), r
    assert r.agent == "a" * 128 and r.task_type == "t" * 128
    assert r.current_state["agent_id"] == "a" * 128 and r.current_state["agent_id_raw"] == long_agent
    assert r.current_state["task_type"] == "t" * 128 and r.current_state["task_type_raw"] == long_type
    short = Decoder(limits=Limits(max_dimension_length=10))
    r = decode_one(dumps(with_state("task.completed", agent_id=_DROP, droid_id="droid-0123456789")), decoder=short)
    assert r.agent == "droid-0123"


# --------------------------------------------------------------------------- aliases (issue 9)

# (event_type, current_state as a seed sends it, canonical fields the decoder must expose)
ALIASES = [
    pytest.param("task.failed", {"error_message": "No agent confident enough"},
                 {"error": "No agent confident enough", "error_message": "No agent confident enough"}, id="001 error_message"),  # noqa: E501
    pytest.param("task.failed", {"error": {"error_type": "TimeoutError", "stack_trace": "Traceback…\n  x\nTimeoutError: 3600s"}},  # noqa: E501
                 {"error": "TimeoutError: 3600s",
                  "error_raw": {"error_type": "TimeoutError", "stack_trace": "Traceback…\n  x\nTimeoutError: 3600s"}},
                 id="004 error object"),
    pytest.param("task.failed", {"error": {"error_type": "ValueError", "message": "bad input"}},
                 {"error": "ValueError: bad input"}, id="error object with message"),
    pytest.param("task.failed", {"error_message": {"error_type": "KeyError"}}, {"error": "KeyError"}, id="object under alias"),  # noqa: E501
    pytest.param("task.failed", {}, {}, id="failed without error"),
    pytest.param("task.failed", {"retry_count": "2"}, {"retry_count": 2, "retry_count_raw": "2"}, id="count as text"),
    pytest.param("task.completed", {"success": "false", "error_message": "lint failed"},
                 {"success": False, "success_raw": "false", "error": "lint failed"}, id="001 success text + error"),
    pytest.param("task.started", {"droid_id": "setup-testing", "execution_id": "exec-1", "run_id": "r-1621"},
                 {"agent_id": "setup-testing", "droid_id": "setup-testing", "group": "r-1621", "execution_id": "exec-1"},  # noqa: E501
                 id="004 droid_id run_id"),
    pytest.param("task.completed", {"agent": "Grok"}, {"agent_id": "Grok"}, id="001/002 agent"),
    pytest.param("task.created", {"type": "research", "requester": {"type": "human", "id": "U123"}},
                 {"task_type": "research", "requester_id": "U123", "requester_type": "human"}, id="003 requester"),
    pytest.param("task.created", {"user_id": "U123456", "request": "Research quantum computing", "priority": "urgent"},
                 {"requester_id": "U123456", "priority": "urgent"}, id="001 user_id, any priority"),
    pytest.param("task.assigned", {"assigned_to": "Writer", "max_confidence": 95, "evaluations": {"Writer": 95, "Grok": 20}},  # noqa: E501
                 {"agent_id": "Writer", "confidence": 95}, id="001 assigned_to max_confidence"),
    pytest.param("task.assigned", {"assignment": {"primary_agent": "desktop", "assignment_method": "claimed"}},
                 {"agent_id": "desktop", "method": "claimed"}, id="003 assignment object"),
    pytest.param("task.assigned", {}, {}, id="assigned without agent"),
    pytest.param("task.progress", {"completion_percentage": 75, "current_step": "analyzing_data"},
                 {"percentage": 75, "step": "analyzing_data"}, id="003 progress"),
    pytest.param("task.progress", {}, {}, id="progress without percentage"),
    pytest.param("task.status_changed", {"status": "in_progress"}, {"status": "EXECUTING", "status_raw": "in_progress"},
                 id="002 in_progress"),
    pytest.param("task.status_changed", {"status": "pending"}, {"status": "QUEUED"}, id="002 pending"),
    pytest.param("task.status_changed", {"status": "completed"}, {"status": "COMPLETED"}, id="003 lower case"),
    pytest.param("task.review", {"reviewer": "agent-7", "status": "failed", "feedback": "missing tests"},
                 {"passed": False}, id="003 review status"),
    pytest.param("task.review", {}, {}, id="review without reviewer"),
    pytest.param("agent.heartbeat", {"active_tasks": ["t1", "t2"], "cpu_usage": 45, "memory_usage": 62},
                 {"active_tasks": 2, "active_tasks_raw": ["t1", "t2"], "cpu_percent": 45, "memory_mb": 62}, id="000/003 heartbeat"),  # noqa: E501
    pytest.param("agent.heartbeat", {"current_tasks": ["t1"]}, {"active_tasks": 1}, id="003 current_tasks"),
    pytest.param("system.error", {"error_message": "db down"}, {"message": "db down"}, id="system error_message"),
    pytest.param("system.error", {}, {}, id="system error without message"),
    pytest.param("system.health", {"status": "ok", "health_score": 97}, {"score": 97}, id="000 health_score"),
    pytest.param("user.request", {"text": "Write a poem"}, {"request": "Write a poem"}, id="001 text"),
    pytest.param("user.feedback", {"score": 4, "feedback": "great"}, {"comment": "great"}, id="feedback text"),
]  # fmt: skip


@pytest.mark.parametrize(("event_type", "state", "expected"), ALIASES)
def test_seed_field_names_are_accepted_and_exposed(event_type: str, state: dict, expected: dict) -> None:
    entity = event_type.split(".")[0]
    r = decode_one(dumps(make_event(event_type=event_type, state=copy.deepcopy(state), entity_type=entity)))
    assert isinstance(r, NormalizedEvent), r.detail
    for key, value in expected.items():
        assert r.current_state.get(key) == value, (key, r.current_state)
    for key, value in state.items():  # what was sent stays (under its name, or <name>_raw)
        assert r.current_state.get(key) == value or r.current_state.get(f"{key}_raw") == value, key
    orjson.dumps(vars(r))  # and serializes as the Kafka sink does


@pytest.mark.parametrize(
    "state",
    [
        {"error_message": "boom"},
        {"error": {"error_type": "RuntimeError", "stack_trace": "Traceback\nRuntimeError: boom"}},
        {"error": "boom"},
        {},
    ],
    ids=["error_message", "error object", "error", "nothing"],
)
def test_task_failed_in_any_shape_is_a_failure_with_its_error(state: dict) -> None:
    from pipeline.core.tasks.lifecycle import compact, derive

    ev = decode_one(dumps(make_event("f1", "task.failed", state=dict(state))))
    assert isinstance(ev, NormalizedEvent), ev
    assert ev.outcome == "failure"
    started = decode_one(dumps(make_event("s1", "task.started", ts=iso(DAY0_MS - 1000))))
    history = [compact(e.id, e.event_type, e.event_time_ms, e.current_state, e.metadata) for e in (started, ev)]
    rec = derive("task-1", history).record(1)
    assert rec.outcome == "failure" and rec.final_state.value == "FAILED"
    expected = "" if not state else ("RuntimeError: boom" if "error" in state and not isinstance(state["error"], str) else "boom")  # noqa: E501
    assert rec.error == expected


def test_completed_unsuccessfully_carries_its_error() -> None:
    from pipeline.core.tasks.lifecycle import compact, derive

    ev = decode_one(dumps(make_event("c1", "task.completed", state={"success": False, "error_message": "lint"})))
    rec = derive("task-1", [compact(ev.id, ev.event_type, ev.event_time_ms, ev.current_state, ev.metadata)]).record(1)
    assert (ev.outcome, rec.outcome, rec.error) == ("failure", "failure", "lint")


def test_status_words_are_still_strict() -> None:
    r = decode_one(dumps(with_state("task.status_changed", status="sleeping")))
    assert isinstance(r, Rejected) and r.reason == RejectReason.schema_violation


# --------------------------------------------------------------------------- hostile properties (issue 9)

_HUGE = [2**70, -(2**70), 2**64, 2**63, -(2**63) - 1, 2**32, 2**40, 1e308, -1e308, 5e-324, 1.5, -0.0]
_WEIRD_TEXT = ["nan", "NaN", "inf", "-Infinity", "1e400", "", " ", "x" * 5000, "1900-01-01T00:00:00Z",
               "1969-12-31T23:59:59Z", "0001-01-01", "9999-12-31T23:59:59Z", "2000-01-01T00:00:00Z",
               "2025-11-03T00:00:00+14:00", "1762128000", "1762128000000000000", "-1", "\u0000", "é" * 300]  # fmt: skip
hostile_leaves = (
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.sampled_from(_HUGE)
    | st.floats(allow_nan=False, allow_infinity=False) | _text | st.sampled_from(_WEIRD_TEXT)
)  # fmt: skip
hostile_values = st.one_of(
    st.sampled_from(_HUGE),
    st.sampled_from(_WEIRD_TEXT),
    st.recursive(hostile_leaves, lambda c: st.lists(c, max_size=4) | st.dictionaries(_text, c, max_size=4), max_leaves=10),  # noqa: E501
    st.integers(min_value=1, max_value=400).map(nest),  # deep objects
    st.integers(min_value=1, max_value=400).map(lambda n: nest(n, 1, None)),  # deep arrays
    st.integers(min_value=0, max_value=3000).map(lambda n: [1] * n),  # wide arrays
    st.sampled_from(["ids", "txt"]).map(lambda s: s * 3000),  # long strings
)
_STATE_KEYS = sorted({n for m in PAYLOADS.values() for n in m.model_fields} | {
    "error_message", "droid_id", "run_id", "execution_id", "type", "user_id", "max_confidence", "assigned_to",
    "completion_percentage", "current_step", "cpu_usage", "memory_usage", "current_tasks", "health_score",
    "requester", "assignment", "agent",
})  # fmt: skip


_VALID_BY_TYPE = [make_event(f"h-{et}", et, entity_type=et.split(".")[0]) for et in sorted(PAYLOADS)]


@st.composite
def hostile_events(draw: st.DrawFn) -> Any:
    """A valid event with hostile values put where they hurt: envelope fields, payload fields
    (under their names and the seeds' aliases), metadata and metrics."""
    doc = copy.deepcopy(draw(st.sampled_from(_VALID_BY_TYPE) | st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        where = draw(st.sampled_from(["top", "state", "state", "state", "metadata", "metrics"]))
        value = draw(hostile_values)
        if where == "top":
            doc[draw(st.sampled_from(_TOP_KEYS))] = value
        elif where == "state" and isinstance(doc.get("current_state"), dict):
            et = doc.get("event_type")
            own = sorted(PAYLOADS[et].model_fields) if isinstance(et, str) and et in PAYLOADS else []
            keys = own if own and draw(st.booleans()) else _STATE_KEYS
            doc["current_state"][draw(st.sampled_from(keys))] = value
        elif isinstance(doc.get(where), dict):
            doc[where][draw(st.sampled_from(["duration_ms", "correlation_id", "tags", "resource_usage", "x"]))] = value
    return doc


def assert_fits(ev: NormalizedEvent) -> None:
    """An accepted event serializes as the sinks do and its numbers fit their columns."""
    from pipeline.core.ingest.batch import Accepted
    from pipeline.core.ingest.rows import event_lines
    from pipeline.core.tasks.lifecycle import compact, derive
    from pipeline.core.tasks.rows import execution_rows, task_rows
    from pipeline.core.timestamps import ms_to_datetime

    orjson.dumps(vars(ev))
    event_lines([Accepted.of(ev, "t", 0, 1, 0)])
    assert 946_684_800_000 <= ev.event_time_ms <= NOW + SKEW
    assert len(ev.id) <= 256 and len(ev.entity_id) <= 256
    assert len(ev.agent) <= 128 and len(ev.task_type) <= 128
    assert ev.duration_ms is None or 0 <= ev.duration_ms <= 1e12
    state = ev.current_state
    u32 = range(2**32)
    if ev.event_type == "agent.heartbeat":
        assert state.get("active_tasks", 0) in u32
        for k in ("cpu_percent", "memory_mb"):
            assert state.get(k) is None or math.isfinite(state[k])
    if ev.event_type.startswith("task."):
        started = make_event("s0", "task.started", ts=iso(ev.event_time_ms - 1))
        entries = [compact(ev.id, ev.event_type, ev.event_time_ms, state, ev.metadata),
                   compact("s0", "task.started", ev.event_time_ms - 1, started["current_state"], {})]  # fmt: skip
        view = derive(ev.entity_id, entries)
        now = ms_to_datetime(NOW)
        task_rows([(view, 1)], now)
        if view.finished:
            rec = view.record(1)
            assert rec.retry_count in u32
            assert rec.confidence is None or math.isfinite(rec.confidence)
            assert all(math.isfinite(c) for c in rec.other_agents.values())
            orjson.dumps(rec.model_dump(mode="json"))
            execution_rows([rec], now)


HOSTILE = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@HOSTILE
@given(st.binary(max_size=2000))
def test_hostile_bytes_never_raise(raw: bytes) -> None:
    check_results(Decoder().decode("t", 1, 7, raw, NOW), "t", 1, 7)


@HOSTILE
@given(hostile_values | hostile_events() | st.lists(hostile_events() | hostile_values, min_size=1, max_size=5))
def test_hostile_json_never_raises_and_accepted_events_fit(value: Any) -> None:
    raw = raw_json(value)
    out = Decoder().decode("t", 1, 7, raw, NOW)
    check_results(out, "t", 1, 7)
    for item in out:
        if isinstance(item, NormalizedEvent):
            assert_fits(item)
        else:
            orjson.loads(item.original)  # the DLQ copy is JSON (bytes as sent, or a clipped copy)
            assert len(item.original) <= max(len(raw), 1)


@HOSTILE
@given(hostile_events())
def test_hostile_events_are_accepted_or_rejected_with_a_reason(doc: Any) -> None:
    r = decode_one(raw_json(doc))
    if isinstance(r, NormalizedEvent):
        assert_fits(r)
    else:
        assert r.reason in set(RejectReason) and r.detail


def _names(model: Any) -> list[str]:
    """A payload model's field names and the seeds' aliases of them."""
    out = set(model.model_fields)
    for f in model.model_fields.values():
        choices = getattr(f.validation_alias, "choices", [])
        out |= {c for c in choices if isinstance(c, str)}
    return sorted(out)


FIELD_PAIRS = [(et, name) for et, model in sorted(PAYLOADS.items()) for name in _names(model)]


@pytest.mark.parametrize(("event_type", "field"), FIELD_PAIRS)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.sampled_from(_HUGE) | st.sampled_from(_WEIRD_TEXT) | hostile_values)
def test_hostile_value_in_every_payload_field(event_type: str, field: str, value: Any) -> None:
    """Every field of every event type (and each alias), given each extreme: the decoder
    routes it, and an accepted event still serializes and fits its columns."""
    state = {**VALID_STATES[event_type], field: value}
    r = decode_one(raw_json(make_event("h", event_type, state=state, entity_type=event_type.split(".")[0])))
    if isinstance(r, NormalizedEvent):
        assert_fits(r)
    else:
        assert r.reason in set(RejectReason) and r.detail


def test_a_dimension_field_that_is_not_text_is_kept_but_no_dimension() -> None:
    # found by the hostile-JSON property: a heartbeat's extra ``agent_id`` holding a huge
    # number made the decoder raise
    doc = {"id": "hb-1", "timestamp": "2025-11-03T00:00:00Z", "event_type": "agent.heartbeat",
           "entity_type": "agent", "entity_id": "coder", "current_state": {"agent_id": 2**70, "task_type": 1.5}}
    [ev] = Decoder().decode("t", 0, 0, json.dumps(doc).encode(), 1_762_200_000_000)
    assert isinstance(ev, NormalizedEvent)
    assert (ev.agent, ev.task_type) == ("coder", "")
    assert ev.current_state["agent_id"] == 2**70
