"""The one decoder of the normalized topic (``taskpulse.events.normalized``): a message (a JSON
array of events, or one object) → validated ``NormalizedEvent`` models, each with its index
in the message, and what could not be read as a reason (bad data as values, never raised).
Every consumer of the topic (the correlation and metrics roles) decodes with it.  A shared
core module.  Pure."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from pipeline.events import NormalizedEvent

_MANY: TypeAdapter[list[NormalizedEvent]] = TypeAdapter(list[NormalizedEvent])


@dataclass
class Decoded:
    """A normalized-topic message, decoded."""

    #: (index in the message, event) of every event read
    events: list[tuple[int, NormalizedEvent]] = field(default_factory=list)
    #: why each unreadable item (or the whole message) was skipped
    errors: list[str] = field(default_factory=list)


def decode_normalized(value: bytes | None, entity_types: Collection[str] | None = None) -> Decoded:
    """Decode one message; ``entity_types``: read only events of these entity types (the
    others are skipped unread, not counted as errors)."""
    out = Decoded()
    if not value:
        return out
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        out.errors.append(f"a message that is not JSON ({len(value)} bytes)")
        return out
    items: list[Any] = doc if isinstance(doc, list) else [doc]
    wanted = [
        (i, item) for i, item in enumerate(items)
        if not isinstance(item, dict) or entity_types is None or item.get("entity_type") in entity_types
    ]  # fmt: skip
    try:  # the common case: every item valid, validated in one call
        models = _MANY.validate_python([item for _, item in wanted])
        out.events = [(i, m) for (i, _), m in zip(wanted, models, strict=True)]
        return out
    except ValidationError:
        pass
    for i, item in wanted:
        if not isinstance(item, dict):
            out.errors.append(f"item {i} is not an object")
            continue
        try:
            out.events.append((i, NormalizedEvent.model_validate(item)))
        except ValidationError as exc:
            out.errors.append(f"a malformed normalized event {item.get('id')!r}: {exc}")
    return out
