"""Event envelopes as the pipeline's decoder accepts them (``schemas/envelope.schema.json``),
and the raw topic each one goes to.  No I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

#: entity type → raw topic (the same names as ``pipeline.topics.RAW_TOPICS``; a test checks)
RAW_TOPICS: dict[str, str] = {
    "task": "taskpulse.events.task",
    "agent": "taskpulse.events.agent",
    "system": "taskpulse.events.system",
    "user": "taskpulse.events.user",
}


def now_iso() -> str:
    """The current UTC time, ISO 8601 with microseconds and an offset."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def envelope(
    event_type: str,
    entity_id: str,
    current_state: Mapping[str, Any] | None = None,
    *,
    timestamp: str | int | float | None = None,
    metadata: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    previous_state: Mapping[str, Any] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """One event (a fresh random id and the current time unless given).  ``None`` values are
    left out of ``current_state`` and ``metrics``: absent and unknown are the same here."""
    return {
        "id": event_id or str(uuid.uuid4()),
        "timestamp": now_iso() if timestamp is None else timestamp,
        "event_type": event_type,
        "entity_type": event_type.split(".", 1)[0],
        "entity_id": entity_id,
        "previous_state": dict(previous_state or {}),
        "current_state": {k: v for k, v in (current_state or {}).items() if v is not None},
        "metadata": {k: v for k, v in (metadata or {}).items() if v is not None},
        "metrics": {k: v for k, v in (metrics or {}).items() if v is not None},
    }


def topic_of(event: Mapping[str, Any]) -> str:
    """The raw topic of an event (by entity type; anything else goes to the system topic,
    where the decoder dead-letters what it cannot place)."""
    return RAW_TOPICS.get(str(event.get("entity_type", "")), RAW_TOPICS["system"])
