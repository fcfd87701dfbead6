"""Decoder: raw message bytes → NormalizedEvent / Rejected, never an exception."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.decode import Decoder
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
