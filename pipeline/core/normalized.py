"""The one decoder of the normalized topic (``taskpulse.events.normalized``): a message (a JSON
array of events, or one object) → validated ``NormalizedEvent`` models, each with its index
in the message, and what could not be read as a reason (bad data as values, never raised).
Every consumer of the topic (the correlation and metrics roles) decodes with it.  A shared
core module.  Pure."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
from pydantic import TypeAdapter, ValidationError

from pipeline.events import NormalizedEvent

_MANY: TypeAdapter[list[NormalizedEvent]] = TypeAdapter(list[NormalizedEvent])


def _wire_type() -> Any:
    """``NormalizedEvent``'s fields in its order (its annotations and defaults) as a msgspec
    struct, for msgspec's strict conversion of what orjson parsed: what it accepts, pydantic
    accepts with the same values (no coercion but int → float, which pydantic does too); what
    it refuses goes through pydantic as before.  ``None`` when a field carries constraints or
    validators msgspec would not apply (then pydantic decodes everything)."""
    if (
        NormalizedEvent.__pydantic_decorators__.field_validators
        or NormalizedEvent.__pydantic_decorators__.model_validators
        or NormalizedEvent.model_config.get("extra", "ignore") != "ignore"
        or NormalizedEvent.model_config.get("strict")
    ):
        return None
    fields: list[Any] = []
    for name, f in NormalizedEvent.model_fields.items():
        if f.metadata or f.alias or f.validation_alias:
            return None
        if f.is_required():
            fields.append((name, f.annotation))
        elif f.default_factory is not None:
            fields.append((name, f.annotation, msgspec.field(default_factory=f.default_factory)))  # type: ignore[arg-type]
        else:
            fields.append((name, f.annotation, f.default))
    return msgspec.defstruct("NormalizedWire", fields)


_WIRE = _wire_type()
_WIRES = list[_WIRE] if _WIRE is not None else None  # type: ignore[valid-type]


_FIELDS = frozenset(NormalizedEvent.model_fields)
_asdict = msgspec.structs.asdict


@dataclass
class Decoded:
    """A normalized-topic message, decoded."""

    #: (index in the message, event) of every event read
    events: list[tuple[int, NormalizedEvent]] = field(default_factory=list)
    #: why each unreadable item (or the whole message) was skipped
    errors: list[str] = field(default_factory=list)


def _whole_decoder() -> Any:
    """A msgspec JSON decoder of a message (an array) whose every item is an object with every
    field of ``NormalizedEvent`` (``_WIRE``'s fields, all required): what it decodes, orjson
    and the fast conversion would have built alike, with every field set.  ``None`` when the
    fast path is off."""
    if _WIRE is None:
        return None
    fields = [(f, _WIRE.__annotations__[f]) for f in _WIRE.__struct_fields__]
    return msgspec.json.Decoder(list[msgspec.defstruct("NormalizedWhole", fields)])  # type: ignore[misc]


_WHOLE = _whole_decoder()
#: digits → "0", opening brackets → "{", the rest → " ": what ``_direct``'s guard counts
_SHAPE = bytes(48 if 48 <= b <= 57 else 123 if b in (91, 123) else 32 for b in range(256))
_LONG_NUMBER = b"0" * 19
#: orjson refuses a document nested deeper than this (msgspec's limit is Python's recursion's)
_ORJSON_DEPTH = 1024


def _direct(value: bytes, entity_types: Collection[str] | None) -> Decoded | None:
    """The common message (an array of objects, each with every field, all plainly valid)
    decoded straight from its bytes by msgspec; ``None`` for any other, and for one where
    msgspec and orjson could read differently: a run of 19 digits or more (orjson reads an
    integer beyond 64 bits as a float, msgspec exactly) or more brackets than orjson's depth
    limit (msgspec could read deeper).  Elsewhere the two parse the same (strings, floats,
    escapes, duplicate keys: last wins) and refuse the same (invalid UTF-8, lone surrogates,
    NaN, out-of-range floats)."""
    if _WHOLE is None or type(value) is not bytes:  # bytearray, memoryview: through orjson
        return None
    shape = value.translate(_SHAPE)
    if _LONG_NUMBER in shape or shape.count(b"{") > _ORJSON_DEPTH:
        return None
    try:
        wires = _WHOLE.decode(value)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        return None
    new, setattr_ = NormalizedEvent.__new__, object.__setattr__
    out = Decoded()
    events = out.events
    for i, wire in enumerate(wires):
        if entity_types is not None and wire.entity_type not in entity_types:
            continue
        m = new(NormalizedEvent)
        setattr_(m, "__dict__", _asdict(wire))
        setattr_(m, "__pydantic_fields_set__", _FIELDS)  # as _fast sets it: every field
        setattr_(m, "__pydantic_extra__", None)
        setattr_(m, "__pydantic_private__", None)
        events.append((i, m))
    return out


def _fast(items: list[Any]) -> list[NormalizedEvent] | None:
    """The models pydantic would validate from ``items`` (objects as orjson parsed them), or
    ``None`` when one of them is not plainly valid (then pydantic decides, as before)."""
    if _WIRES is None:
        return None
    try:
        wires = msgspec.convert(items, _WIRES, strict=True)
    except msgspec.ValidationError:
        return None
    new, setattr_ = NormalizedEvent.__new__, object.__setattr__
    out = []
    for item, wire in zip(items, wires, strict=True):
        m = new(NormalizedEvent)
        setattr_(m, "__dict__", _asdict(wire))
        setattr_(m, "__pydantic_fields_set__", _FIELDS.intersection(item))
        setattr_(m, "__pydantic_extra__", None)
        setattr_(m, "__pydantic_private__", None)
        out.append(m)
    return out


def decode_normalized(value: bytes | None, entity_types: Collection[str] | None = None) -> Decoded:
    """Decode one message; ``entity_types``: read only events of these entity types (the
    others are skipped unread, not counted as errors)."""
    out = Decoded()
    if not value:
        return out
    direct = _direct(value, entity_types)
    if direct is not None:
        return direct
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
        objects = [item for _, item in wanted]
        models = _fast(objects)
        if models is None:
            models = _MANY.validate_python(objects)
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
