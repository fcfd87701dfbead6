"""Builders of raw events and an independent reference for what the pipeline must derive.

The reference shares no code with ``pipeline``: plain ``datetime`` / integer arithmetic
for timestamps and windows, and the outcome rules restated from the product contract.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

#: 2025-11-03T00:00:00Z in epoch ms (calendar.timegm((2025, 11, 3, 0, 0, 0)) * 1000).
DAY0_MS = 1_762_128_000_000
TOPIC = "taskpulse.events"

#: Window length in ms per granularity, restated (not imported) from the product contract.
SIZES_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(ms: int) -> str:
    """Epoch ms → ISO 8601 with a Z, millisecond precision."""
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


#: A valid current_state for every event type (the minimum each payload needs).
VALID_STATES: dict[str, dict[str, Any]] = {
    "task.created": {"task_type": "code", "priority": "high", "request": "fix it"},
    "task.queued": {"task_type": "code", "queue": "default"},
    "task.assigned": {"task_type": "code", "agent_id": "coder", "confidence": 0.9},
    "task.started": {"task_type": "code", "agent_id": "coder"},
    "task.progress": {"task_type": "code", "agent_id": "coder", "percentage": 50},
    "task.status_changed": {"task_type": "code", "status": "EXECUTING"},
    "task.review": {"task_type": "code", "reviewer": "reviewer", "passed": True},
    "task.completed": {"task_type": "code", "agent_id": "coder", "success": True},
    "task.failed": {"task_type": "code", "agent_id": "coder", "error": "OOM"},
    "task.paused": {"task_type": "code", "agent_id": "coder"},
    "task.resumed": {"task_type": "code", "agent_id": "coder"},
    "task.cancelled": {"task_type": "code", "agent_id": "coder", "reason": "user"},
    "task.abandoned": {"task_type": "code", "agent_id": "coder"},
    "agent.online": {"capabilities": ["code"]},
    "agent.offline": {"reason": "shutdown"},
    "agent.heartbeat": {"cpu_percent": 12.5, "memory_mb": 512, "active_tasks": 2},
    "agent.self_report": {"status": "executing"},
    "agent.status_changed": {"status": "busy", "previous": "online", "active_tasks": 2},
    "system.metric": {"name": "queue_depth", "value": 3.0, "unit": "tasks"},
    "system.error": {"message": "upstream 503"},
    "system.health": {"component": "scheduler", "status": "ok"},
    "user.request": {"user_id": "u1", "request": "write a post"},
    "user.feedback": {"user_id": "u1", "score": 8},
}


def make_event(
    event_id: str = "evt-1",
    event_type: str = "task.completed",
    ts: Any = None,
    *,
    entity_id: str | None = None,
    state: dict[str, Any] | None = None,
    duration_ms: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A valid event envelope (as services publish it); ``extra`` adds top-level keys."""
    doc: dict[str, Any] = {
        "id": event_id,
        "timestamp": iso(DAY0_MS) if ts is None else ts,
        "event_type": event_type,
        "entity_type": event_type.split(".", 1)[0],
        "entity_id": entity_id or ("coder" if event_type.startswith("agent.") else "task-1"),
        "previous_state": {},
        "current_state": copy.deepcopy(VALID_STATES[event_type]) if state is None else state,
        "metadata": {"triggered_by": "system", "tags": ["unit"]},
        "metrics": {} if duration_ms is None else {"duration_ms": duration_ms},
    }
    doc.update(extra)
    return doc


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc)


# --------------------------------------------------------------------------- reference


def ref_event_ms(ts: str) -> int:
    """ISO text → epoch ms, half up, by integer arithmetic on timedelta fields."""
    dt = datetime.fromisoformat(ts)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    d = dt - _EPOCH
    micros = (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds
    return (micros + 500) // 1000


def ref_outcome(event: dict[str, Any]) -> str:
    et = event["event_type"]
    st = event.get("current_state") or {}
    if et == "task.completed":
        return "success" if st.get("success", True) else "failure"
    if et == "task.failed":
        return "failure"
    if et == "task.cancelled":
        return "cancelled"
    if et == "task.abandoned":
        return "abandoned"
    if et == "agent.self_report":
        return {"completed": "success", "failed": "failure", "timeout": "failure",
                "abandoned": "abandoned"}.get(st.get("status"), "")  # fmt: skip
    return ""


def ref_dims(event: dict[str, Any]) -> tuple[str, str, str, str, str]:
    st = event.get("current_state") or {}
    agent = st.get("agent_id") or (event["entity_id"] if event["entity_type"] == "agent" else "")
    return (
        event["entity_type"],
        event["event_type"],
        str(agent),
        str(st.get("task_type") or ""),
        ref_outcome(event),
    )


def unique_first(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first event of every id, in delivery order."""
    seen: set[str] = set()
    out = []
    for e in events:
        if e["id"] not in seen:
            seen.add(e["id"])
            out.append(e)
    return out


def ref_rollups(events: list[dict[str, Any]]) -> dict[tuple[str, int, tuple[str, ...]], dict]:
    """(granularity, window start ms, dims) → count, successes, failures and durations,
    for the first delivery of every id."""
    out: dict[tuple[str, int, tuple[str, ...]], dict] = defaultdict(
        lambda: {"count": 0, "successes": 0, "failures": 0, "durations": []}
    )
    for e in unique_first(events):
        ms = ref_event_ms(e["timestamp"])
        dims = ref_dims(e)
        dur = (e.get("metrics") or {}).get("duration_ms")
        for gran, size in SIZES_MS.items():
            acc = out[(gran, (ms // size) * size, dims)]
            acc["count"] += 1
            acc["successes"] += dims[4] == "success"
            acc["failures"] += dims[4] == "failure"
            if dur is not None:
                acc["durations"].append(float(dur))
    return dict(out)


def assert_rollups_match(actual: dict, expected: dict) -> None:
    """Every (granularity, window, dims) has the reference's count, outcomes and durations."""
    assert set(actual) == set(expected), (
        f"rollup keys differ: missing {sorted(set(expected) - set(actual))[:5]}, "
        f"unexpected {sorted(set(actual) - set(expected))[:5]}"
    )
    for key, ref in expected.items():
        m = actual[key]
        assert m.count == ref["count"], key
        assert m.successes == ref["successes"], key
        assert m.failures == ref["failures"], key
        durs = ref["durations"]
        assert m.duration_count == len(durs), key
        assert math.isclose(m.duration_sum, math.fsum(durs), rel_tol=1e-9, abs_tol=1e-9), key
        if durs:
            assert m.duration_min == min(durs), key
            assert m.duration_max == max(durs), key
        assert sum(m.sketch.values()) == len(durs), key
