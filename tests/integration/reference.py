"""An independent computation of what the rollups must say, straight from the events
published (plain datetime and integer arithmetic; shares no code with the pipeline)."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from tests.unit.helpers import unique_first as unique

SIZES_S = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}


def event_ms(event: dict[str, Any]) -> int:
    dt = datetime.fromisoformat(event["timestamp"])
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds + 500) // 1000


def success_failure(event: dict[str, Any]) -> tuple[int, int]:
    et = event["event_type"]
    st = event.get("current_state", {})
    if et == "task.completed":
        return (1, 0) if st.get("success", True) else (0, 1)
    if et == "task.failed":
        return 0, 1
    if et == "agent.self_report":
        if st.get("status") == "completed":
            return 1, 0
        if st.get("status") in ("failed", "timeout"):
            return 0, 1
    return 0, 0


def expected_windows(events: list[dict[str, Any]]) -> dict[tuple[str, int, str], list[float]]:
    """(granularity, window start epoch s, event_type) → [count, successes, failures,
    duration count, duration sum, duration min, duration max]."""
    out: dict[tuple[str, int, str], list[float]] = defaultdict(
        lambda: [0, 0, 0, 0, 0.0, math.inf, -math.inf]
    )
    for e in unique(events):
        ms = event_ms(e)
        s, f = success_failure(e)
        dur = e.get("metrics", {}).get("duration_ms")
        for gran, size in SIZES_S.items():
            start = (ms // 1000) // size * size
            acc = out[(gran, start, e["event_type"])]
            acc[0] += 1
            acc[1] += s
            acc[2] += f
            if dur is not None:
                acc[3] += 1
                acc[4] += dur
                acc[5] = min(acc[5], dur)
                acc[6] = max(acc[6], dur)
    return dict(out)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]
