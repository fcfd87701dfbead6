"""The Kafka topics of taskpulse (the product's outside: producers and consumers rely on them)."""

from __future__ import annotations

RAW_TASK = "taskpulse.events.task"
RAW_AGENT = "taskpulse.events.agent"
RAW_SYSTEM = "taskpulse.events.system"
RAW_USER = "taskpulse.events.user"
#: entity type → raw topic
RAW_TOPICS: dict[str, str] = {
    "task": RAW_TASK,
    "agent": RAW_AGENT,
    "system": RAW_SYSTEM,
    "user": RAW_USER,
}
NORMALIZED = "taskpulse.events.normalized"
DLQ = "taskpulse.events.dlq"
LIFECYCLE = "taskpulse.tasks.lifecycle"
ROLLUPS = "taskpulse.rollups"
ALERTS = "taskpulse.alerts"

ALL_TOPICS = [*RAW_TOPICS.values(), NORMALIZED, DLQ, LIFECYCLE, ROLLUPS, ALERTS]


def role_consumers(consumer_group: str, ingest_engine: str) -> dict[str, tuple[str, list[str]]]:
    """Role → (consumer group, topics it reads): where each role's lag is measured."""
    raw = list(RAW_TOPICS.values())
    return {
        "ingest": (consumer_group if ingest_engine == "faust" else f"{consumer_group}-ingest", raw),
        "correlate": (consumer_group, [NORMALIZED]),
        "metrics": (f"{consumer_group}-metrics", [NORMALIZED, LIFECYCLE, ROLLUPS, ALERTS]),
    }
