"""Window measures as initial / add / merge / result, with a mergeable distribution.

``Measures`` holds count, successes, failures and the duration sum / min / max plus a
DDSketch-style log-bucket histogram (ddsketch's ``LogarithmicMapping``): bucket counts
add up under merge, so 1h is exactly the merge of its 1m parts, and any quantile comes
out within the mapping's relative accuracy of the exact value.  ClickHouse merges the
same buckets with ``sumMap`` and reads quantiles with the ``tpQuantile`` SQL function.

Quantile rank rule (the one DDSketch uses, and the one tests compare against): the
q-quantile of n values is the value of 0-based rank ``floor(q * (n - 1))`` in sorted order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ddsketch.mapping import LogarithmicMapping

#: The bucket that holds zero (and values too small to index).  With the accuracies allowed
#: below and durations from 1e-6 to 1e12 ms every other key lies within ±14,000, so this
#: key sorts first and every key fits ClickHouse's Int16.
ZERO_KEY = -32768
MIN_ACCURACY = 0.001
MAX_ACCURACY = 0.05
#: Values below this (ms) count as zero: far below any duration anyone measures.
MIN_INDEXABLE = 1e-6


class SketchMapping:
    """Value ↔ bucket key, with a relative accuracy guarantee."""

    def __init__(self, relative_accuracy: float = 0.005) -> None:
        if not MIN_ACCURACY <= relative_accuracy < MAX_ACCURACY:
            raise ValueError(
                f"relative accuracy {relative_accuracy} is outside [{MIN_ACCURACY}, {MAX_ACCURACY}) "
                "(TASKPULSE_SKETCH_RELATIVE_ACCURACY)"
            )
        self._m = LogarithmicMapping(relative_accuracy)
        self.relative_accuracy = relative_accuracy
        self.gamma: float = self._m.gamma
        self.multiplier: float = self._m._multiplier  # key = ceil(log2(v) * multiplier)

    def key(self, value: float) -> int:
        if value < MIN_INDEXABLE:
            return ZERO_KEY
        return int(self._m.key(value))

    def value(self, key: int) -> float:
        if key == ZERO_KEY:
            return 0.0
        return float(self._m.value(key))


def sketch_quantile(sketch: Mapping[int, int], q: float, mapping: SketchMapping) -> float | None:
    """The q-quantile (0..1) of the values in ``sketch``; ``None`` when it is empty."""
    total = sum(sketch.values())
    if total == 0:
        return None
    rank = math.floor(q * (total - 1))
    seen = 0
    for key in sorted(sketch):
        seen += sketch[key]
        if seen > rank:
            return mapping.value(key)
    return mapping.value(max(sketch))  # pragma: no cover - unreachable: seen reaches total


def exact_quantile(values: Iterable[float], q: float) -> float | None:
    """The reference: the value of rank ``floor(q * (n - 1))`` in sorted order."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[math.floor(q * (len(ordered) - 1))]


@dataclass(slots=True)
class Measures:
    """What one window holds for one dimension combination."""

    count: int = 0
    successes: int = 0
    failures: int = 0
    duration_count: int = 0
    duration_sum: float = 0.0
    duration_min: float = math.inf
    duration_max: float = -math.inf
    sketch: dict[int, int] = field(default_factory=dict)

    def add(self, outcome: str, duration_ms: float | None, key: int | None) -> None:
        """Fold one event in.  ``key`` is ``mapping.key(duration_ms)``, computed once per event."""
        self.count += 1
        if outcome == "success":
            self.successes += 1
        elif outcome == "failure":
            self.failures += 1
        if duration_ms is not None and key is not None:
            self.duration_count += 1
            self.duration_sum += duration_ms
            if duration_ms < self.duration_min:
                self.duration_min = duration_ms
            if duration_ms > self.duration_max:
                self.duration_max = duration_ms
            sk = self.sketch
            sk[key] = sk.get(key, 0) + 1

    def merge(self, other: Measures) -> Measures:
        """A new Measures holding both; neither input changes."""
        sketch = dict(self.sketch)
        for k, v in other.sketch.items():
            sketch[k] = sketch.get(k, 0) + v
        return Measures(
            count=self.count + other.count,
            successes=self.successes + other.successes,
            failures=self.failures + other.failures,
            duration_count=self.duration_count + other.duration_count,
            duration_sum=self.duration_sum + other.duration_sum,
            duration_min=min(self.duration_min, other.duration_min),
            duration_max=max(self.duration_max, other.duration_max),
            sketch=sketch,
        )

    def result(self, mapping: SketchMapping) -> dict[str, float | int | None]:
        """The figures a user reads: counts, mean, min/max and p50/p95/p99 (ms)."""
        has = self.duration_count > 0
        return {
            "count": self.count,
            "successes": self.successes,
            "failures": self.failures,
            "duration_count": self.duration_count,
            "duration_avg_ms": self.duration_sum / self.duration_count if has else None,
            "duration_min_ms": self.duration_min if has else None,
            "duration_max_ms": self.duration_max if has else None,
            "p50_ms": sketch_quantile(self.sketch, 0.50, mapping),
            "p95_ms": sketch_quantile(self.sketch, 0.95, mapping),
            "p99_ms": sketch_quantile(self.sketch, 0.99, mapping),
        }


#: (entity_type, event_type, agent, task_type, outcome)
Dims = tuple[str, str, str, str, str]
#: (granularity, window_start_ms, dims)
RollupKey = tuple[str, int, Dims]


def merge_all(parts: Iterable[Measures]) -> Measures:
    """Merge any number of partials (the identity is ``Measures()``)."""
    out = Measures()
    for part in parts:
        out = out.merge(part)
    return out
