"""The one decoder of the normalized topic: models with their index, bad data as reasons."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.normalized import decode_normalized
from pipeline.events import NormalizedEvent


def ev(i: str, entity_type: str = "task") -> dict[str, Any]:
    return {"id": i, "event_time_ms": 1, "timestamp_raw": "1", "event_type": f"{entity_type}.x",
            "entity_type": entity_type, "entity_id": "e"}  # fmt: skip


def test_a_valid_message_decodes_every_event_with_its_index() -> None:
    d = decode_normalized(orjson.dumps([ev("a"), ev("b", "agent"), ev("c", "system")]))
    assert [(i, e.id) for i, e in d.events] == [(0, "a"), (1, "b"), (2, "c")] and not d.errors


def test_bad_items_are_reasons_and_the_rest_is_read() -> None:
    d = decode_normalized(orjson.dumps([ev("a"), 7, {"id": "broken"}, ev("d")]))
    assert [(i, e.id) for i, e in d.events] == [(0, "a"), (3, "d")]
    assert len(d.errors) == 2 and "not an object" in d.errors[0] and "'broken'" in d.errors[1]


def test_not_json_and_one_object_and_a_filter() -> None:
    assert decode_normalized(b"{nope").errors[0].startswith("a message that is not JSON")
    assert [e.id for _, e in decode_normalized(orjson.dumps(ev("solo"))).events] == ["solo"]
    d = decode_normalized(orjson.dumps([ev("a"), ev("s", "system"), ev("b", "agent")]), ("task", "agent"))
    assert [(i, e.id) for i, e in d.events] == [(0, "a"), (2, "b")] and not d.errors
    assert not decode_normalized(None).events


# The fast path (msgspec's strict conversion of what orjson parsed) against the pydantic
# path it replaces, on the same bytes: the same models (values, their types, fields set),
# the same indexes, the same errors.


def _pydantic_only(value: bytes | None, entity_types: Any = None) -> Any:
    from unittest import mock

    import pipeline.core.normalized as normalized

    with mock.patch.object(normalized, "_fast", lambda items: None):
        return decode_normalized(value, entity_types)


def _same(value: bytes | None, entity_types: Any = None) -> None:
    fast, slow = decode_normalized(value, entity_types), _pydantic_only(value, entity_types)
    assert [(i, repr(vars(m)), m.model_fields_set) for i, m in fast.events] == [
        (i, repr(vars(m)), m.model_fields_set) for i, m in slow.events
    ]
    assert fast.errors == slow.errors


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30),
)  # fmt: skip
_json = st.recursive(_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                     max_leaves=12)  # fmt: skip
_FIELD_VALUES = {
    "id": st.one_of(st.text(max_size=10), _scalars),
    "event_time_ms": st.one_of(st.integers(min_value=-(2**66), max_value=2**66), _scalars),
    "timestamp_raw": st.one_of(st.text(max_size=10), _scalars),
    "event_type": st.one_of(st.sampled_from(["task.created", "agent.heartbeat"]), _scalars),
    "entity_type": st.one_of(st.sampled_from(["task", "agent", "system", "TASK"]), _scalars),
    "entity_id": st.one_of(st.text(max_size=10), _scalars),
    "agent": st.one_of(st.text(max_size=5), _scalars),
    "task_type": st.one_of(st.text(max_size=5), _scalars),
    "outcome": st.one_of(st.sampled_from(["", "success", "failure", "cancelled", "abandoned", "ok"]), _scalars),
    "duration_ms": st.one_of(st.none(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), _scalars),
    "previous_state": st.one_of(st.dictionaries(st.text(max_size=5), _json, max_size=3), _json),
    "current_state": st.dictionaries(st.text(max_size=5), _json, max_size=3),
    "metadata": st.one_of(st.dictionaries(st.text(max_size=5), _json, max_size=3), _json),
    "metrics": st.dictionaries(st.text(max_size=5), _json, max_size=3),
    "extra": st.dictionaries(st.text(max_size=5), _json, max_size=3),
    "ingested_ms": st.one_of(st.integers(min_value=-(2**66), max_value=2**66), _scalars),
    "unknown": _json,
}


@st.composite
def _items(draw: Any) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(_json)  # not even an object, sometimes
    base = ev(draw(st.text(max_size=6)), draw(st.sampled_from(["task", "agent", "system"])))
    for name in draw(st.lists(st.sampled_from(sorted(_FIELD_VALUES)), max_size=6, unique=True)):
        base[name] = draw(_FIELD_VALUES[name])
    for name in draw(st.lists(st.sampled_from(sorted(base)), max_size=2, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            del base[name]
    return base


@settings(max_examples=400, deadline=None)
@given(st.lists(_items(), max_size=6), st.sampled_from([None, ("task", "agent")]), st.booleans())
def test_the_fast_path_decodes_as_pydantic_does(items: list[Any], entity_types: Any, single: bool) -> None:
    try:
        value = orjson.dumps(items[0] if single and items else items)
    except TypeError:  # an integer orjson cannot write: the message as a JSON text of its own
        value = repr(items).encode()
    _same(value, entity_types)


def test_the_fast_path_on_hostile_messages_with_canaries_behind() -> None:
    canary = ev("canary")
    deep: Any = {"x": 1}
    for _ in range(200):
        deep = {"d": deep}
    hostile = [
        {**ev("deep"), "current_state": deep},
        {**ev("huge"), "metrics": {"n": 10**30, "m": -(2**64)}, "duration_ms": 10**20},
        {**ev("early"), "event_time_ms": -86_400_000_000, "ingested_ms": -1},
        {**ev("wide"), "metadata": {"a": list(range(10_000))}},
        {**ev("long"), "entity_id": "e" * 1_000_000, "agent": "ä" * 10_000},
        {**ev("bool"), "event_time_ms": True},
        {**ev("float"), "event_time_ms": 5.0, "duration_ms": 5},
        {**ev("string"), "event_time_ms": "5"},
        {**ev("outcome"), "outcome": "maybe"},
        {**ev("none"), "agent": None},
    ]
    for bad in hostile:
        value = json.dumps([bad, canary], ensure_ascii=False).encode()  # huge integers too
        _same(value)
        _same(value, ("task", "agent"))
        assert decode_normalized(value).events[-1][1].id == "canary"
    raw = orjson.dumps([canary])
    for value in (b"[" + ("9" * 40).encode() + b"," + raw[1:], b"\xff\xfe" + raw, b'[{"id":"\\ud800"}]', raw):
        _same(value)
    assert decode_normalized(b"[" + ("9" * 40).encode() + b"," + raw[1:]).events[-1][1].id == "canary"


def test_the_fast_path_builds_what_pydantic_builds_on_a_plain_message() -> None:
    full = {**ev("a"), "agent": "ag", "task_type": "t", "outcome": "success", "duration_ms": 12,
            "current_state": {"s": [1, 2.5, None]}, "ingested_ms": 9, "unknown": 1}  # fmt: skip
    import pipeline.core.normalized as normalized

    assert normalized._WIRE is not None  # the fast path is on (its fields mirror the model's)
    _same(orjson.dumps([full, ev("b", "agent")]))
    [(_, m)] = decode_normalized(orjson.dumps([full])).events
    assert m == NormalizedEvent.model_validate(full) and type(m.duration_ms) is float
    assert list(vars(m)) == list(NormalizedEvent.model_fields)
