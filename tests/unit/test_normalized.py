"""The one decoder of the normalized topic: models with their index, bad data as reasons."""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.core.normalized import decode_normalized


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
