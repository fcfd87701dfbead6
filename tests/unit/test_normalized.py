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

    with (
        mock.patch.object(normalized, "_fast", lambda items: None),
        mock.patch.object(normalized, "_direct", lambda value, entity_types: None),
    ):
        return decode_normalized(value, entity_types)


def _through_orjson(value: bytes | None, entity_types: Any = None) -> Any:
    """The path before the direct one: orjson, then msgspec's conversion (or pydantic)."""
    from unittest import mock

    import pipeline.core.normalized as normalized

    with mock.patch.object(normalized, "_direct", lambda value, entity_types: None):
        return decode_normalized(value, entity_types)


def _read(d: Any) -> Any:
    return [(i, repr(vars(m)), m.model_fields_set, type(m.model_fields_set)) for i, m in d.events], d.errors


def _same(value: bytes | None, entity_types: Any = None) -> None:
    fast, slow = decode_normalized(value, entity_types), _pydantic_only(value, entity_types)
    assert [(i, repr(vars(m)), m.model_fields_set) for i, m in fast.events] == [
        (i, repr(vars(m)), m.model_fields_set) for i, m in slow.events
    ]
    assert fast.errors == slow.errors
    assert _read(fast) == _read(_through_orjson(value, entity_types))  # the set's type too


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


# The direct path (msgspec reads the bytes, no orjson) against the path through orjson: taken
# for a message of whole events (every field present), declined wherever the two parsers
# could read differently, with the same result either way.


def whole(i: str, entity_type: str = "task", **fields: Any) -> dict[str, Any]:
    return {**ev(i, entity_type), "agent": "ag", "task_type": "t", "outcome": "", "duration_ms": None,
            "previous_state": {}, "current_state": {"s": 1}, "metadata": {}, "metrics": {}, "extra": {},
            "ingested_ms": 2, **fields}  # fmt: skip


def _direct_taken(value: bytes, entity_types: Any = None) -> bool:
    import pipeline.core.normalized as normalized

    return normalized._direct(value, entity_types) is not None


def test_a_message_of_whole_events_takes_the_direct_path() -> None:
    value = orjson.dumps([whole("a"), whole("b", "agent"), whole("c", "system"), whole("d", duration_ms=3)])
    assert _direct_taken(value) and _direct_taken(value, ("task", "agent"))
    _same(value)
    _same(value, ("task", "agent"))
    d = decode_normalized(value, ("task", "agent"))
    assert [(i, e.id) for i, e in d.events] == [(0, "a"), (1, "b"), (3, "d")] and not d.errors
    assert type(d.events[2][1].duration_ms) is float
    assert not _direct_taken(bytearray(value))  # not bytes: through orjson, which reads it alike
    _same(bytearray(value), frozenset({"task", "agent"}))  # type: ignore[arg-type]
    _same(memoryview(value), {"task"})  # type: ignore[arg-type]
    for other in (orjson.dumps(whole("solo")), orjson.dumps([whole("a"), ev("b")]), b"[]", b"[" + value):
        assert not _direct_taken(other) or other == b"[]"
        _same(other)


_long_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).filter(lambda n: len(str(abs(n))) >= 19),
    st.sampled_from([2**64, 2**64 - 1, -(2**63), -(2**63) - 1, 10**19, 10**30]),
)


@st.composite
def _whole_items(draw: Any) -> Any:
    base = whole(draw(st.text(max_size=6)), draw(st.sampled_from(["task", "agent", "system"])))
    for name in draw(st.lists(st.sampled_from(sorted(_FIELD_VALUES)), max_size=4, unique=True)):
        base[name] = draw(_FIELD_VALUES[name])
    if draw(st.integers(0, 5)) == 0:
        base[draw(st.sampled_from(["event_time_ms", "ingested_ms", "duration_ms"]))] = draw(_long_numbers)
    if draw(st.integers(0, 5)) == 0:
        base["metrics"] = {"n": draw(_long_numbers)}
    if draw(st.integers(0, 9)) == 0:
        del base[draw(st.sampled_from(sorted(base)))]
    return base


@settings(max_examples=400, deadline=None)
@given(st.lists(_whole_items(), max_size=5), st.sampled_from([None, ("task", "agent")]), st.data())
def test_the_direct_path_reads_as_the_orjson_path_does(items: list[Any], entity_types: Any, data: Any) -> None:
    value = json.dumps(items, ensure_ascii=data.draw(st.booleans())).encode("utf-8", "surrogatepass")
    if data.draw(st.booleans()) and value:  # a byte changed: the parsers' edges
        at = data.draw(st.integers(0, len(value) - 1))
        byte = data.draw(st.sampled_from(b'0123456789.eE+-"\\u{}[],:ntf \x00\x7f\xc0\xed\xff'))
        value = value[:at] + bytes([byte]) + value[at + 1 :]
    _same(value, entity_types)


def test_the_direct_path_declines_where_msgspec_and_orjson_read_differently() -> None:
    canary = whole("canary")

    def nested(depth: int, name: str) -> bytes:  # current_state {"d": [[…]]}: the message `depth` deep
        inner = b"[" * (depth - 3) + b"]" * (depth - 3)
        return orjson.dumps([whole(name, current_state={"d": 0}), canary]).replace(b'{"d":0}', b'{"d":' + inner + b"}")

    cases = {
        "big": b'[{"x":18446744073709551616},' + orjson.dumps([canary])[1:],  # orjson: a float
        "negative big": orjson.dumps([whole("m", metrics={"n": -(2**63)})]).replace(
            b"-9223372036854775808", b"-9223372036854775809"
        ),
        "in range": orjson.dumps([whole("r", metrics={"n": 2**64 - 1}), canary]),
        "deep": nested(1025, "deep"),  # orjson: not JSON
        "surrogate": b'[{"id":"\\ud800"},' + orjson.dumps([canary])[1:],
    }
    for name, value in cases.items():
        assert not _direct_taken(value), name
        _same(value)
    assert decode_normalized(cases["deep"]).errors[0].startswith("a message that is not JSON")

    def depth_of(d: Any) -> Any:  # (ids, fields set, the nesting of the deep event's "d") of a result
        x, n = d.events[0][1].current_state["d"], 0
        while x:
            x, n = x[0], n + 1
        return [(i, e.id, e.model_fields_set) for i, e in d.events], d.errors, n

    for depth in (900, 1000, 1024):  # orjson reads these; msgspec may not (then orjson does)
        value = nested(depth, "deep")
        got = depth_of(decode_normalized(value))
        assert got == depth_of(_pydantic_only(value)) == depth_of(_through_orjson(value))
        assert [i for i, _, _ in got[0]] == [0, 1] and got[2] == depth - 4
    [(_, m)] = decode_normalized(cases["big"].replace(b'{"x":', b'{"x":[').replace(b"16},", b"16]},"),
                                 ("task",)).events  # fmt: skip
    assert m.id == "canary"
    big = decode_normalized(orjson.dumps([whole("b", metrics={"n": 1})]).replace(b'"n":1', b'"n":' + b"9" * 30))
    assert big.events[0][1].metrics["n"] == float("9" * 30)  # as orjson reads it: not the exact integer
