"""Raw Kafka message bytes → normalized events and rejections.  Never raises on bad input.

A message holds one event object or a JSON array of them (the SDK batches); each element
of an array is accepted or rejected on its own.  Rejections carry a reason code, a detail
that names the offending field, and the original bytes.

Bounds (``Limits``, each a setting and a reason code): message bytes (``oversized``),
elements per array message (``too_many_elements``, the whole message), nesting depth of an
event (``too_deep``), id length and integer ranges of fields that land in fixed-width
columns (``out_of_range``), event time between a floor and now + skew (``bad_timestamp``).
Dimension values (agent, task type) longer than their limit are cut, not rejected.  So
every accepted event serializes with orjson (254 levels at most) and fits its columns.

Fast path: an event the strict msgspec mirrors of the models accept (``strict``: the values
the models take as sent, no alias, no top-level extra field) and that passes every bound is
normalized without pydantic; anything else, an element at a time, takes the pydantic path,
which decides every rejection.  Both give the same NormalizedEvent (a differential test
holds them to it, ``tests/unit/test_decode_fast.py``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
import orjson
from pydantic import BaseModel, ValidationError

from pipeline.core.ingest.strict import ENVELOPE, PAYLOAD_MIRRORS
from pipeline.core.privacy import CHANGED, TOO_DEEP, UNMEASURED, Privacy
from pipeline.core.timestamps import TimestampError, ms_to_datetime, to_epoch_ms
from pipeline.events import (
    PAYLOADS,
    EntityType,
    Envelope,
    Metadata,
    NormalizedEvent,
    Rejected,
    RejectReason,
    Source,
)

_TERMINAL_OUTCOMES = {
    "task.failed": "failure",
    "task.cancelled": "cancelled",
    "task.abandoned": "abandoned",
}
_SELF_REPORT_OUTCOMES = {
    "completed": "success",
    "failed": "failure",
    "abandoned": "abandoned",
    "timeout": "failure",
}


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """``field.path: message`` for the first few errors of a pydantic ValidationError."""
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = ".".join(str(p) for p in err["loc"])
        path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "<root>")
        parts.append(f"{path}: {err['msg']}")
    more = exc.error_count() - len(parts)
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)


#: pydantic error types that mean "a number too large for its column or for a float"
_RANGE_ERRORS = frozenset({"out_of_range", "int_parsing_size", "finite_number"})
#: metadata fields that hold ids (they land in the events table's columns)
_METADATA_IDS = ("triggered_by", "correlation_id", "session_id")
#: 2000-01-01T00:00:00Z
DEFAULT_MIN_EVENT_MS = 946_684_800_000
#: what a DateTime64(3) column holds: 1900-01-01 .. 2299-12-31T23:59:59.999Z
_DT64_MIN_MS, _DT64_MAX_MS = -2_208_988_800_000, 10_413_791_999_999


@dataclass(frozen=True)
class Limits:
    """The decoder's bounds on input (TASKPULSE_* settings of the same names)."""

    max_message_bytes: int = 1024 * 1024
    max_future_skew_ms: int = 300_000
    min_event_ms: int = DEFAULT_MIN_EVENT_MS
    max_depth: int = 64
    max_array_elements: int = 10_000
    max_id_length: int = 256
    max_dimension_length: int = 128


class Decoder:
    """Decodes and normalizes raw messages against the event models."""

    def __init__(
        self,
        max_message_bytes: int = 1024 * 1024,
        max_future_skew_ms: int = 300_000,
        *,
        limits: Limits | None = None,
        privacy: Privacy | None = None,
        keep_original: bool = False,
    ) -> None:
        self.limits = limits or Limits(max_message_bytes, max_future_skew_ms)
        #: pseudonymise + redact each event before validation (``core.privacy``); rejected
        #: originals are scrubbed too unless ``keep_original`` (TASKPULSE_DLQ_KEEP_ORIGINAL)
        self.privacy = privacy if privacy is not None and privacy.active else None
        self.keep_original = keep_original
        #: the fast path (strict msgspec mirrors).  Privacy rewrites an event before it is
        #: validated on either path; only a DLQ that keeps originals as sent (``keep_original``)
        #: needs the pydantic path alone, which copies an element before privacy touches it.
        self.fast = not (self.privacy is not None and keep_original) and self.limits.max_depth >= 4

    def decode(
        self, topic: str, partition: int, offset: int, value: bytes | None, now_ms: int
    ) -> list[NormalizedEvent | Rejected]:
        """One raw message → one result per event it holds (at least one)."""
        out = self._decode(topic, partition, offset, value, now_ms)
        if self.privacy is not None and not self.keep_original:
            for item in out:  # privacy hook: the one place a DLQ original is made safe to keep
                if isinstance(item, Rejected) and not item.original_redacted:
                    item.original, changed = self.privacy.scrub_bytes(item.original)
                    item.original_redacted = changed
        return out

    def _decode(
        self, topic: str, partition: int, offset: int, value: bytes | None, now_ms: int
    ) -> list[NormalizedEvent | Rejected]:
        raw = value or b""
        src = _Src(topic, partition, offset, 0)
        lim = self.limits
        if len(raw) > lim.max_message_bytes:
            return [
                _reject(
                    RejectReason.oversized,
                    f"message is {len(raw)} bytes; the limit is {lim.max_message_bytes} "
                    "(TASKPULSE_MAX_MESSAGE_BYTES)",
                    src,
                    raw,
                )
            ]
        if not raw.strip():
            return [_reject(RejectReason.invalid_json, "empty message", src, raw)]
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return [_reject(RejectReason.invalid_json, f"not valid JSON: {exc}", src, raw)]
        # Depth: a message with no more brackets than the limit cannot nest deeper (a count
        # in C, no walk); in the others each event's free-form parts are walked.
        shallow = raw.count(b"{") + raw.count(b"[") <= lim.max_depth
        if isinstance(doc, dict):
            if not self.fast:
                return [self._one(doc, src, raw, now_ms, shallow)]
            return [self._element(doc, topic, partition, offset, 0, raw, now_ms, shallow)]
        if isinstance(doc, list):
            if not doc:
                return [_reject(RejectReason.schema_violation, "empty array", src, raw)]
            if len(doc) > lim.max_array_elements:
                return [
                    _reject(
                        RejectReason.too_many_elements,
                        f"array message holds {len(doc)} elements; the limit is "
                        f"{lim.max_array_elements} (TASKPULSE_MAX_ARRAY_ELEMENTS)",
                        src,
                        raw,
                    )
                ]
            if not self.fast:
                return [self._one(item, _Src(topic, partition, offset, i), None, now_ms, shallow) for i, item in enumerate(doc)]  # noqa: E501
            element = self._element
            return [element(item, topic, partition, offset, i, None, now_ms, shallow) for i, item in enumerate(doc)]
        return [
            _reject(
                RejectReason.schema_violation,
                f"expected an event object or an array of them, got {type(doc).__name__}",
                src,
                raw,
            )
        ]

    def _element(  # noqa: PLR0913 (an element's source is only made when the models decide)
        self, doc: Any, topic: str, partition: int, offset: int, index: int, raw: bytes | None, now_ms: int,
        shallow: bool,
    ) -> NormalizedEvent | Rejected:
        """The fast path when it decides, else the pydantic path (``_one``); privacy first."""
        redacted = None
        within = shallow
        if self.privacy is not None and type(doc) is dict:  # privacy hook: before validation
            flags = self.privacy.apply_measured(doc, self.limits.max_depth)
            redacted = bool(flags & CHANGED)
            if not flags & (TOO_DEEP | UNMEASURED):
                within = True  # its walk saw every container: no depth walk needed
            elif flags & TOO_DEEP:
                return self._one(doc, _Src(topic, partition, offset, index), raw, now_ms, shallow, redacted)
        return self._fast(doc, now_ms, within) or self._one(
            doc, _Src(topic, partition, offset, index), raw, now_ms, shallow, redacted
        )

    def _one(
        self, doc: Any, src: _Src, raw: bytes | None, now_ms: int, shallow: bool, redacted: bool | None = None
    ) -> NormalizedEvent | Rejected:
        """One event object → NormalizedEvent or Rejected.  ``raw`` is None for an element
        of an array message: its own bytes are only made for a rejection.  ``redacted``: the
        privacy rules were applied already (by ``_element``), and whether they changed it."""
        lim = self.limits
        where = f"[{src.position}]" if raw is None else "<root>"
        reject = _Rejector(src, raw, doc, lim.max_depth)
        if redacted is not None:
            reject.redacted = redacted
        elif self.privacy is not None and isinstance(doc, dict):  # privacy hook: before validation
            if self.keep_original and raw is None:
                reject = _Rejector(src, None, _copy(doc), lim.max_depth)
            reject.redacted = self.privacy.apply(doc) and not self.keep_original
        if not isinstance(doc, dict):
            return reject(RejectReason.schema_violation, f"{where}: expected an event object, got {type(doc).__name__}")
        event_type = doc.get("event_type")
        if isinstance(event_type, str) and event_type not in PAYLOADS:
            return reject(
                RejectReason.unknown_event_type,
                f"event_type {event_type[:64]!r} is not one of the known types (see schemas/events/)",
            )
        try:
            env = Envelope.model_validate(doc)
        except ValidationError as exc:
            return reject(_reason_of(exc), describe_validation_error(exc))
        if not shallow and not _event_within(env, lim.max_depth):
            return reject(
                RejectReason.too_deep,
                f"{where}: the event nests deeper than {lim.max_depth} levels (TASKPULSE_MAX_DEPTH)",
            )
        n, md = lim.max_id_length, env.metadata
        if (
            len(env.id) > n or len(env.entity_id) > n or len(md.triggered_by or "") > n
            or len(md.correlation_id or "") > n or len(md.session_id or "") > n
        ):  # fmt: skip
            return reject(RejectReason.out_of_range, _long_id(env, n))
        prefix = env.event_type.split(".", 1)[0]
        if prefix != env.entity_type.value:
            return reject(
                RejectReason.schema_violation,
                f"entity_type: {env.entity_type.value!r} does not match event_type "
                f"{env.event_type!r} (expected {prefix!r})",
            )
        model = PAYLOADS[env.event_type]
        try:
            payload = model.model_validate(env.current_state)
        except ValidationError as exc:
            return reject(_reason_of(exc), describe_validation_error(exc, "current_state"))
        for name in model.id_fields:
            value = getattr(payload, name)
            if value is not None and len(value) > lim.max_id_length:
                return reject(RejectReason.out_of_range, _id_detail(f"current_state.{name}", value, lim.max_id_length))
        if event_type == "task.created" and not _deadline_fits(getattr(payload, "deadline", None)):
            return reject(
                RejectReason.out_of_range,
                "current_state.deadline: lies outside 1900..2299, the range of a DateTime64 column",
            )
        try:
            ts_ms = to_epoch_ms(env.timestamp)
        except TimestampError as exc:
            return reject(RejectReason.bad_timestamp, f"timestamp: {exc}")
        ahead = ts_ms - now_ms
        if ahead > lim.max_future_skew_ms:
            return reject(
                RejectReason.bad_timestamp,
                f"timestamp: {env.timestamp!r} is {ahead / 1000:.0f} s ahead of now; the limit "
                f"is {lim.max_future_skew_ms / 1000:.0f} s (TASKPULSE_MAX_FUTURE_SKEW_S)",
            )
        if ts_ms < lim.min_event_ms:
            return reject(
                RejectReason.bad_timestamp,
                f"timestamp: {str(env.timestamp)[:64]!r} is before {_iso_ms(lim.min_event_ms)} "
                "(TASKPULSE_MIN_EVENT_TIME)",
            )
        return _normalize(doc, env, payload, ts_ms, now_ms, lim.max_dimension_length)

    def _fast(self, doc: Any, now_ms: int, shallow: bool) -> NormalizedEvent | None:
        """The event normalized when the strict mirrors accept it and it passes every bound;
        else None, and ``doc`` untouched (the pydantic path then decides)."""
        if type(doc) is not dict:
            return None
        sent_type = doc.get("event_type")
        fast = PAYLOAD_MIRRORS.get(sent_type) if type(sent_type) is str else None
        state = doc.get("current_state", _EMPTY)
        previous = doc.get("previous_state", _EMPTY)
        # the envelope's mirror leaves the two states unchecked (ENVELOPE_DICTS): dicts here
        if fast is None or type(state) is not dict or type(previous) is not dict or not fast.aliases.isdisjoint(state):
            return None
        try:
            env: Any = msgspec.convert(doc, ENVELOPE)
            msgspec.convert(state, fast.struct)
        except Exception:  # noqa: BLE001 (whatever a mirror refuses, the models decide)
            return None
        event_type: str = env.event_type
        for name in fast.floats:  # an int the model's float differs from: written back there
            if not _exact(state.get(name)):
                return None
        lim = self.limits
        # the whole event walked = _event_within's walk (no top-level extras here; metadata's
        # own fields and metrics' typed ones nest at most 3 levels, and max_depth >= 4)
        if not shallow and not _within(doc, lim.max_depth):
            return None
        n, prefix = lim.max_id_length, fast.prefix
        md: dict[str, Any] = doc.get("metadata") or _EMPTY
        if (
            len(env.id) > n or len(env.entity_id) > n or len(md.get("triggered_by") or "") > n
            or len(md.get("correlation_id") or "") > n or len(md.get("session_id") or "") > n
            or prefix != env.entity_type
        ):  # fmt: skip
            return None
        for name in fast.id_fields:
            value = state.get(name)
            if value is not None and len(value) > n:
                return None
        if event_type == "task.created" and not _deadline_fits(state.get("deadline")):
            return None
        timestamp = env.timestamp
        try:
            ts_ms = to_epoch_ms(timestamp)
        except TimestampError:
            return None
        if ts_ms - now_ms > lim.max_future_skew_ms or ts_ms < lim.min_event_ms:
            return None
        # the models take every value as sent: current_state needs no canonical write-back
        agent = _text(state.get("agent_id")) or (env.entity_id if prefix == "agent" else "")
        task_type = _text(state.get("task_type"))
        dim_len = lim.max_dimension_length
        if len(agent) > dim_len:
            agent = _cut(state, "agent_id", agent, dim_len)
        if len(task_type) > dim_len:
            task_type = _cut(state, "task_type", task_type, dim_len)
        if event_type == "task.completed":
            outcome = "success" if state.get("success", True) else "failure"
        elif event_type == "agent.self_report":
            outcome = _SELF_REPORT_OUTCOMES.get(state["status"], "")
        else:
            outcome = _TERMINAL_OUTCOMES.get(event_type, "")
        metrics = doc.get("metrics") or {}
        return _built({
            "id": env.id, "event_time_ms": ts_ms,
            "timestamp_raw": timestamp if type(timestamp) is str else repr(timestamp),
            "event_type": event_type, "entity_type": fast.entity, "entity_id": env.entity_id, "agent": agent,
            "task_type": task_type, "outcome": outcome, "duration_ms": env.metrics.duration_ms if metrics else None,
            "previous_state": previous or {}, "current_state": state or {}, "metadata": md or {},
            "metrics": metrics, "extra": {}, "ingested_ms": now_ms,
        })  # fmt: skip


def _exact(value: Any) -> bool:
    """No int in ``value`` that a float holds inexactly (beyond 2**53)."""
    t = type(value)
    if t is int:
        return float(value) == value
    if t is dict:
        return all(_exact(v) for v in value.values())
    if t is list:
        return all(_exact(v) for v in value)
    return True


def _text(value: Any) -> str:
    return value if type(value) is str else ""


_EMPTY: dict[str, Any] = {}


class _Rejector:
    """Builds an event's rejections; the event's own bytes are made only when needed."""

    __slots__ = ("doc", "max_depth", "raw", "redacted", "src")

    def __init__(self, src: _Src, raw: bytes | None, doc: Any, max_depth: int) -> None:
        self.src, self.raw, self.doc, self.max_depth = src, raw, doc, max_depth
        self.redacted = False  # the doc was pseudonymised / redacted in place (privacy)

    def __call__(self, reason: RejectReason, detail: str) -> Rejected:
        if self.raw is not None:
            return _reject(reason, detail, self.src, self.raw, _id_of(self.doc))
        raw, cut = _dumps_clipped(self.doc, self.max_depth)
        rejected = _reject(reason, detail, self.src, raw, _id_of(self.doc))
        if cut:
            rejected.original_cut = True
        if self.redacted:
            rejected.original_redacted = True
        return rejected


def _copy(doc: Any) -> Any:
    """A copy of an array element as sent (TASKPULSE_DLQ_KEEP_ORIGINAL: its DLQ original)."""
    try:
        return copy.deepcopy(doc)
    except RecursionError:
        return doc


def _dumps_clipped(doc: Any, max_depth: int) -> tuple[bytes, bool]:
    """An array element's own bytes for its DLQ entry, and whether they were cut: below
    ``max_depth`` levels when it nests deeper (orjson writes 254 levels at most)."""
    if not nests_deeper(doc, max_depth):
        return orjson.dumps(doc), False
    return orjson.dumps(clip(doc, max_depth)), True


def _id_of(doc: Any) -> str | None:
    """The event id for a DLQ entry (cut to 256 characters: the DLQ names it, no more)."""
    value = doc.get("id") if isinstance(doc, dict) else None
    return value[:256] if isinstance(value, str) else None


def _reason_of(exc: ValidationError) -> RejectReason:
    if any(err["type"] in _RANGE_ERRORS for err in exc.errors(include_url=False, include_input=False)):
        return RejectReason.out_of_range
    return RejectReason.schema_violation


def _long_id(env: Envelope, limit: int) -> str:
    """The detail for the first envelope id longer than ``limit`` characters, else ''."""
    if len(env.id) > limit:
        return _id_detail("id", env.id, limit)
    if len(env.entity_id) > limit:
        return _id_detail("entity_id", env.entity_id, limit)
    md: Metadata = env.metadata
    for name in _METADATA_IDS:
        value = getattr(md, name)
        if value is not None and len(value) > limit:
            return _id_detail(f"metadata.{name}", value, limit)
    return ""


def _id_detail(path: str, value: str, limit: int) -> str:
    return f"{path}: {len(value)} characters; the limit is {limit} (TASKPULSE_MAX_ID_LENGTH)"


def _deadline_fits(value: Any) -> bool:
    """A deadline that can be read lands in a DateTime64(3) column: 1900..2299.  One that
    cannot be read is kept and ignored (it is descriptive)."""
    if value is None:
        return True
    try:
        ms = to_epoch_ms(value)
    except TimestampError:
        return True
    return _DT64_MIN_MS <= ms <= _DT64_MAX_MS


def _iso_ms(ms: int) -> str:
    return ms_to_datetime(ms).isoformat().replace("+00:00", "Z")


def nests_deeper(doc: Any, limit: int) -> bool:
    """True when ``doc`` nests more than ``limit`` levels of objects / arrays (a scalar is
    level 0, ``{}`` level 1).  Visits containers only; stops at the first one too deep."""
    t = type(doc)
    return (t is dict or t is list) and not _within(doc, limit)


def _event_within(env: Envelope, limit: int) -> bool:
    """The validated event nests at most ``limit`` levels (``limit`` ≥ 4).  Only the free-form
    parts are walked: the typed ones (metadata.tags, metrics.duration_ms, …) nest 3 levels."""
    below = limit - 1  # levels left under the event object
    if env.current_state and not _within(env.current_state, below):
        return False
    if env.previous_state and not _within(env.previous_state, below):
        return False
    md, mx = env.metadata, env.metrics
    if mx.resource_usage and not _within(mx.resource_usage, below - 1):
        return False
    if mx.performance_data and not _within(mx.performance_data, below - 1):
        return False
    # extras: an extras dict stands at its owner's level, its values one below
    extras: tuple[tuple[dict[str, Any] | None, int], ...] = (
        (env.__pydantic_extra__, limit), (md.__pydantic_extra__, below), (mx.__pydantic_extra__, below),
    )  # fmt: skip
    for extra, level_room in extras:
        if extra and not _within(extra, level_room):
            return False
    return True


def _within(node: dict[str, Any] | list[Any], room: int) -> bool:
    """``node`` and what it holds fit in ``room`` levels (an empty child needs one more)."""
    if room <= 0:
        return False
    room -= 1
    values: Any = node.values() if type(node) is dict else node
    for value in values:
        t = type(value)
        if t is dict or t is list:
            if value:
                if not _within(value, room):
                    return False
            elif room <= 0:
                return False
    return True


def clip(doc: Any, limit: int) -> Any:
    """``doc`` with everything below ``limit`` levels replaced by ``"…"`` (for a DLQ copy of
    an element too deep to serialize)."""
    if limit <= 0:
        return "…" if isinstance(doc, dict | list) else doc
    if isinstance(doc, dict):
        return {k: clip(v, limit - 1) for k, v in doc.items()}
    if isinstance(doc, list):
        return [clip(v, limit - 1) for v in doc]
    return doc


def _dimension(payload: BaseModel, name: str) -> str:
    """A dimension value of the payload (a declared field, or an extra field of that name)
    when it is text; anything else (``agent_id: 2**70`` on a heartbeat) is kept in
    current_state but is no dimension."""
    value = getattr(payload, name, None)
    return value if isinstance(value, str) else ""


def _normalize(
    doc: dict[str, Any], env: Envelope, payload: BaseModel, ts_ms: int, now_ms: int, dim_len: int
) -> NormalizedEvent:
    # The validated input dicts are kept as sent (no model_dump round trip: it costs more
    # than the validation); values the pipeline computes with come from the models, and are
    # written back into current_state under their canonical names (see _canonical).
    state: dict[str, Any] = doc.get("current_state") or {}
    if payload.__pydantic_fields_set__:
        _canonical(state, payload)
    event_type = env.event_type
    agent = _dimension(payload, "agent_id") or (env.entity_id if env.entity_type == "agent" else "")
    task_type = _dimension(payload, "task_type")
    if len(agent) > dim_len:
        agent = _cut(state, "agent_id", agent, dim_len)
    if len(task_type) > dim_len:
        task_type = _cut(state, "task_type", task_type, dim_len)
    outcome = ""
    if event_type == "task.completed":
        outcome = "success" if getattr(payload, "success", True) else "failure"
    elif event_type in _TERMINAL_OUTCOMES:
        outcome = _TERMINAL_OUTCOMES[event_type]
    elif event_type == "agent.self_report":
        outcome = _SELF_REPORT_OUTCOMES.get(getattr(payload, "status", ""), "")
    metrics: dict[str, Any] = doc.get("metrics") or {}
    extra = env.__pydantic_extra__ or {}
    return _event(
        env.id, ts_ms, env.timestamp, event_type, env.entity_type, env.entity_id, agent, task_type, outcome,
        env.metrics.duration_ms, env.previous_state, state, doc.get("metadata") or {}, metrics, dict(extra), now_ms,
    )  # fmt: skip


def _event(  # noqa: PLR0913 (the fields of a NormalizedEvent, in order)
    event_id: str, ts_ms: int, timestamp: Any, event_type: str, entity_type: EntityType, entity_id: str,
    agent: str, task_type: str, outcome: str, duration_ms: float | None, previous_state: dict[str, Any],
    state: dict[str, Any], metadata: dict[str, Any], metrics: dict[str, Any], extra: dict[str, Any], now_ms: int,
) -> NormalizedEvent:  # fmt: skip
    return _built(
        {
            "id": event_id,
            "event_time_ms": ts_ms,
            "timestamp_raw": timestamp if isinstance(timestamp, str) else repr(timestamp),
            "event_type": event_type,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "agent": agent,
            "task_type": task_type,
            "outcome": outcome,
            "duration_ms": duration_ms,
            "previous_state": previous_state,
            "current_state": state,
            "metadata": metadata,
            "metrics": metrics,
            "extra": extra,
            "ingested_ms": now_ms,
        }
    )


def _canonical(state: dict[str, Any], payload: BaseModel) -> None:
    """Write each validated field of ``payload`` into ``state`` under its canonical name.

    A field sent under an alias (``error_message``) gains its canonical key (``error``), the
    alias stays.  A field sent under its own name in another form (an error object, a status
    in lower case, a number as text, ``"false"`` for a flag) is replaced by the validated
    value and the sent value is kept under ``<name>_raw``.  So every consumer reads one form.
    """
    declared = _DECLARED[type(payload)]
    values = payload.__dict__
    for name in payload.__pydantic_fields_set__:
        if name not in declared:
            continue  # an unknown extra field: kept as sent
        value = values[name]
        sent = state.get(name, _MISSING)
        if sent is value or value is None:
            continue  # the common case: pydantic hands back the object it was given
        if sent is _MISSING:
            state[name] = value
        elif not _same_form(sent, value):
            state.setdefault(f"{name}_raw", sent)
            state[name] = value


def _same_form(sent: Any, value: Any) -> bool:
    """Values equal for every consumer: 3 and 3.0, a StrEnum and its text, equal dicts."""
    if sent is value:
        return True
    if isinstance(value, bool) or isinstance(sent, bool):
        return type(sent) is type(value) and sent == value
    if isinstance(sent, str) is not isinstance(value, str):
        return False
    return bool(sent == value)


def _cut(state: dict[str, Any], key: str, value: str, limit: int) -> str:
    """A dimension value cut to ``limit`` characters; current_state gets the cut value, the
    sent one is kept under ``<key>_raw``."""
    cut = value[:limit]
    if state.get(key) == value:
        state.setdefault(f"{key}_raw", value)
        state[key] = cut
    return cut


_MISSING = object()
_DECLARED: dict[type[BaseModel], frozenset[str]] = {m: frozenset(m.model_fields) for m in PAYLOADS.values()}


class _Src(NamedTuple):
    """Where an item came from; a pydantic ``Source`` is only built for rejections."""

    topic: str
    partition: int
    offset: int
    position: int  # index inside a batch message


def _reject(
    reason: RejectReason, detail: str, src: _Src, raw: bytes, event_id: str | None = None
) -> Rejected:
    source = Source.model_construct(
        topic=src.topic, partition=src.partition, offset=src.offset, index=src.position
    )
    return Rejected.model_construct(
        reason=reason, detail=detail, source=source, original=raw, event_id=event_id
    )


_NORMALIZED_FIELDS = frozenset(NormalizedEvent.model_fields)


def _built(values: dict[str, Any]) -> NormalizedEvent:
    """A NormalizedEvent from values already validated upstream.

    What ``model_construct`` does, without its per-field default handling, which costs more
    than the validation of the event itself (every field is given here).
    """
    obj = NormalizedEvent.__new__(NormalizedEvent)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", _NORMALIZED_FIELDS)
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj
