"""Strict msgspec mirrors of the event models, for the decoder's fast path.  Pure.

Derived from the pydantic models of ``pipeline.events`` (they stay the one source of the
behaviour and of the JSON Schema): each mirror accepts a subset of what its model accepts,
the values the model takes without changing them (no lax coercion: no number as text, no
other case of a status word, no alias, no list as a count).  The decoder gives everything
a mirror refuses to the models.  A model, field type or validator this module does not know
gets no mirror: its events always take the pydantic path.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, replace
from enum import Enum
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
import msgspec
from pydantic import AliasChoices, AliasPath, BaseModel
from pydantic.fields import FieldInfo
from pydantic.functional_validators import AfterValidator, BeforeValidator
from pydantic.json_schema import WithJsonSchema
from pydantic.types import AllowInfNan

from pipeline.events import (
    PAYLOADS,
    UINT32_MAX,
    EntityType,
    Envelope,
    _count_of,
    _fits_uint32,
    _review_passed,
    _task_state,
    error_text,
)

#: before-validators that hand back every value of their field's strict type unchanged
#: (a count as an int, a status word in its own case, a flag, an error as text)
_IDENTITY_ON_STRICT = frozenset({_count_of, _task_state, _review_passed, error_text})
_BOUNDS = {at.Ge: "ge", at.Gt: "gt", at.Le: "le", at.Lt: "lt", at.MinLen: "min_length", at.MaxLen: "max_length"}


class Unsupported(Exception):
    """A model or a type that has no strict mirror."""


@dataclass(frozen=True)
class Mirror:
    """A model's strict mirror and what the fast path needs to know about it."""

    struct: type[msgspec.Struct]
    #: keys under which the model reads a field other than that field's own name (all of
    #: them, even one that is another field's name)
    aliases: frozenset[str]
    #: fields whose type holds floats: the model makes a float of an int sent there, and
    #: writes it back when the two differ (an int beyond 2**53)
    floats: tuple[str, ...]
    #: fields that hold ids (the model's ``id_fields``)
    id_fields: tuple[str, ...] = ()
    #: a payload's event type's first part ("task" of "task.created") and that entity type
    prefix: str = ""
    entity: EntityType | None = None


def _constrain(meta: Any, out: dict[str, Any]) -> None:
    """Add what a piece of pydantic metadata demands to msgspec ``Meta`` keywords."""
    kind = _BOUNDS.get(type(meta))
    if kind is not None:
        out[kind] = getattr(meta, kind)
    elif isinstance(meta, FieldInfo):
        for inner in meta.metadata:
            _constrain(inner, out)
    elif isinstance(meta, AllowInfNan | WithJsonSchema):
        pass  # orjson reads no inf / nan: every float it makes is finite
    elif isinstance(meta, AfterValidator) and meta.func is _fits_uint32:
        out["le"] = min(out.get("le", UINT32_MAX), UINT32_MAX)
    elif not (isinstance(meta, BeforeValidator) and meta.func in _IDENTITY_ON_STRICT):
        raise Unsupported(repr(meta))


def _strict(tp: Any, metadata: Any = ()) -> Any:
    bounds: dict[str, Any] = {}
    for meta in metadata:
        _constrain(meta, bounds)
    base = _base(tp)
    if not bounds:
        return base
    if get_origin(base) is Union:
        raise Unsupported(f"bounds on a union: {tp!r}")
    return Annotated[base, msgspec.Meta(**bounds)]


def _base(tp: Any) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any or tp in (str, int, float, bool):
        return tp
    if tp is type(None):
        return None
    if origin is Annotated:
        return _strict(args[0], tp.__metadata__)
    if origin is Union or origin is types.UnionType:
        return Union[tuple(_base(a) for a in args)]  # noqa: UP007 (built from a tuple)
    if origin is Literal and all(type(a) is str for a in args):
        return tp
    if isinstance(tp, type) and issubclass(tp, Enum) and all(type(m.value) is str for m in tp):
        return Literal[tuple(m.value for m in tp)]
    if origin is list and len(args) == 1:
        return list[_base(args[0])]  # type: ignore[misc]
    if origin is dict and len(args) == 2 and args[0] is str:
        return dict[str, _base(args[1])]  # type: ignore[misc]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return mirror(tp, allow_extra=True).struct
    raise Unsupported(repr(tp))


def _holds_float(tp: Any) -> bool:
    return tp is float or any(_holds_float(a) for a in get_args(tp))


def mirror(model: type[BaseModel], *, allow_extra: bool, unchecked: frozenset[str] = frozenset()) -> Mirror:
    """The strict mirror of ``model``.  Unknown keys are ignored when ``allow_extra`` (the
    model keeps them as extras), else refused (the caller has no place for them).  Fields
    named in ``unchecked`` must be ``dict[str, Any]``: the mirror takes any value there
    without copying it, and the caller checks that it is a dict."""
    decorators = model.__pydantic_decorators__
    if set(model.model_config) - {"extra"} or model.model_config.get("extra") != "allow":
        raise Unsupported(f"{model.__name__}: model config {model.model_config}")
    if any((decorators.validators, decorators.field_validators, decorators.root_validators,
            decorators.model_validators, decorators.field_serializers)):  # fmt: skip
        raise Unsupported(f"{model.__name__}: validators of its own")
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    aliases: set[str] = set()
    floats = []
    for name, info in model.model_fields.items():
        if info.alias is not None or info.discriminator is not None:
            raise Unsupported(f"{model.__name__}.{name}")
        choices = info.validation_alias
        if choices is not None:
            if not isinstance(choices, AliasChoices) or choices.choices[0] != name:
                raise Unsupported(f"{model.__name__}.{name}: alias {choices!r}")
            for choice in choices.choices[1:]:
                aliases.add(choice if isinstance(choice, str) else str(_first(choice)))
        tp = _strict(info.annotation, info.metadata)
        if name in unchecked:
            if tp != dict[str, Any]:
                raise Unsupported(f"{model.__name__}.{name}: {tp!r} is not dict[str, Any]")
            tp = Any  # msgspec would copy the dict to check it; the caller tests its type
        fields.append((name, tp) if info.is_required() else (name, tp, None))
        if _holds_float(tp):
            floats.append(name)
    try:
        struct = msgspec.defstruct(
            f"Strict{model.__name__}", fields, kw_only=True, forbid_unknown_fields=not allow_extra
        )
        msgspec.json.Decoder(struct)  # msgspec refuses some unions only here
    except TypeError as exc:
        raise Unsupported(f"{model.__name__}: {exc}") from None
    return Mirror(struct, frozenset(aliases), tuple(floats), getattr(model, "id_fields", ()))


def _first(choice: AliasPath | str) -> Any:
    return choice.path[0] if isinstance(choice, AliasPath) else choice


def _payload_mirrors() -> dict[str, Mirror]:
    out = {}
    for event_type, model in PAYLOADS.items():
        try:
            found = mirror(model, allow_extra=True)
        except Unsupported:
            continue  # this type takes the pydantic path
        prefix = event_type.split(".", 1)[0]
        out[event_type] = replace(found, prefix=prefix, entity=EntityType(prefix))
    return out


#: the envelope's mirror: top-level keys it does not define are refused (the pydantic path
#: keeps them as the event's ``extra``)
#: (its free-form states are not copied to be checked: the caller tests that each one it
#: is given is a dict — ENVELOPE_DICTS)
ENVELOPE_DICTS = ("previous_state", "current_state")
ENVELOPE: type[msgspec.Struct] = mirror(Envelope, allow_extra=False, unchecked=frozenset(ENVELOPE_DICTS)).struct
#: event_type → its payload's mirror (types without one are absent)
PAYLOAD_MIRRORS: dict[str, Mirror] = _payload_mirrors()
