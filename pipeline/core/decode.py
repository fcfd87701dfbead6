"""Raw Kafka message bytes → normalized events and rejections.  Never raises on bad input.

A message holds one event object or a JSON array of them (the SDK batches); each element
of an array is accepted or rejected on its own.  Rejections carry a reason code, a detail
that names the offending field, and the original bytes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ValidationError

from pipeline.core.timestamps import TimestampError, to_epoch_ms
from pipeline.events import (
    PAYLOADS,
    Envelope,
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


class Decoder:
    """Decodes and normalizes raw messages against the event models."""

    def __init__(self, max_message_bytes: int = 1024 * 1024, max_future_skew_ms: int = 300_000):
        self.max_message_bytes = max_message_bytes
        self.max_future_skew_ms = max_future_skew_ms

    def decode(
        self, topic: str, partition: int, offset: int, value: bytes | None, now_ms: int
    ) -> list[NormalizedEvent | Rejected]:
        """One raw message → one result per event it holds (at least one)."""
        raw = value or b""
        src = _Src(topic, partition, offset, 0)
        if len(raw) > self.max_message_bytes:
            return [
                _reject(
                    RejectReason.oversized,
                    f"message is {len(raw)} bytes; the limit is {self.max_message_bytes} "
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
        if isinstance(doc, dict):
            return [self._one(doc, src, raw, now_ms)]
        if isinstance(doc, list):
            if not doc:
                return [_reject(RejectReason.schema_violation, "empty array", src, raw)]
            out: list[NormalizedEvent | Rejected] = []
            for i, item in enumerate(doc):
                out.append(self._one(item, _Src(topic, partition, offset, i), None, now_ms))
            return out
        return [
            _reject(
                RejectReason.schema_violation,
                f"expected an event object or an array of them, got {type(doc).__name__}",
                src,
                raw,
            )
        ]

    def _one(
        self, doc: Any, src: _Src, raw: bytes | None, now_ms: int
    ) -> NormalizedEvent | Rejected:
        where = f"[{src.position}]" if raw is None else ""
        if raw is None:
            raw = orjson.dumps(doc)
        if not isinstance(doc, dict):
            return _reject(
                RejectReason.schema_violation,
                f"{where or '<root>'}: expected an event object, got {type(doc).__name__}",
                src,
                raw,
            )
        event_id = doc.get("id") if isinstance(doc.get("id"), str) else None
        event_type = doc.get("event_type")
        if isinstance(event_type, str) and event_type not in PAYLOADS:
            return _reject(
                RejectReason.unknown_event_type,
                f"event_type {event_type[:64]!r} is not one of the known types "
                "(see schemas/events/)",
                src,
                raw,
                event_id,
            )
        try:
            env = Envelope.model_validate(doc)
        except ValidationError as exc:
            return _reject(
                RejectReason.schema_violation, describe_validation_error(exc), src, raw, event_id
            )
        prefix = env.event_type.split(".", 1)[0]
        if prefix != env.entity_type.value:
            return _reject(
                RejectReason.schema_violation,
                f"entity_type: {env.entity_type.value!r} does not match event_type "
                f"{env.event_type!r} (expected {prefix!r})",
                src,
                raw,
                event_id,
            )
        try:
            payload = PAYLOADS[env.event_type].model_validate(env.current_state)
        except ValidationError as exc:
            return _reject(
                RejectReason.schema_violation,
                describe_validation_error(exc, "current_state"),
                src,
                raw,
                event_id,
            )
        try:
            ts_ms = to_epoch_ms(env.timestamp)
        except TimestampError as exc:
            return _reject(RejectReason.bad_timestamp, f"timestamp: {exc}", src, raw, event_id)
        ahead = ts_ms - now_ms
        if ahead > self.max_future_skew_ms:
            return _reject(
                RejectReason.bad_timestamp,
                f"timestamp: {env.timestamp!r} is {ahead / 1000:.0f} s ahead of now; the limit "
                f"is {self.max_future_skew_ms / 1000:.0f} s (TASKPULSE_MAX_FUTURE_SKEW_S)",
                src,
                raw,
                event_id,
            )
        return _normalize(doc, env, payload, ts_ms, now_ms)


def _normalize(
    doc: dict[str, Any], env: Envelope, payload: BaseModel, ts_ms: int, now_ms: int
) -> NormalizedEvent:
    # The validated input dicts are kept as sent (no model_dump round trip: it costs more
    # than the validation); values the pipeline computes with come from the models.
    state: dict[str, Any] = doc.get("current_state") or {}
    event_type = env.event_type
    agent = getattr(payload, "agent_id", None) or (
        env.entity_id if env.entity_type == "agent" else ""
    )
    task_type = getattr(payload, "task_type", None) or ""
    outcome = ""
    if event_type == "task.completed":
        outcome = "success" if getattr(payload, "success", True) else "failure"
    elif event_type in _TERMINAL_OUTCOMES:
        outcome = _TERMINAL_OUTCOMES[event_type]
    elif event_type == "agent.self_report":
        outcome = _SELF_REPORT_OUTCOMES.get(getattr(payload, "status", ""), "")
    metrics: dict[str, Any] = doc.get("metrics") or {}
    extra = env.__pydantic_extra__ or {}
    return _built(
        {
            "id": env.id,
            "event_time_ms": ts_ms,
            "timestamp_raw": env.timestamp if isinstance(env.timestamp, str) else repr(env.timestamp),
            "event_type": event_type,
            "entity_type": env.entity_type,
            "entity_id": env.entity_id,
            "agent": str(agent),
            "task_type": str(task_type),
            "outcome": outcome,
            "duration_ms": env.metrics.duration_ms,
            "previous_state": env.previous_state,
            "current_state": state,
            "metadata": doc.get("metadata") or {},
            "metrics": metrics,
            "extra": dict(extra),
            "ingested_ms": now_ms,
        }
    )


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
