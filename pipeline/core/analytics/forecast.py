"""Forecasts from history (seed 000 "predictive analytics").  Pure: the history arrives as
rows, the current time is passed in.

- **Task volume, next hours** — *seasonal mean*: the forecast for an hour is the mean count
  of the same hour of day over the last ``season_days`` days (zeros included: a quiet hour
  is data).  With less than a day of history it falls back to the mean hourly count.
  Error: the last ``holdout_hours`` of history are held out, forecast from the history
  before them, and compared hour by hour (MAE, in tasks per hour), next to the naive
  baseline "same as the last hour seen" so the reader sees whether the method earns its keep.
- **Completion time per task type** — *exponential smoothing* (EWMA, ``alpha``) of the
  cycle time of succeeded tasks in finish order; the forecast is the smoothed level.
  Error: one-step-ahead — every task after the first ``warmup`` of its type is predicted
  from the tasks before it only; MAE over the last quarter of the tasks (the held-out part),
  in ms and relative to their mean.
- **A group's ETA** — the group's remaining work divided over the lanes working on it: each
  executing task still needs its type's expected time minus what it has run (at least 0),
  each pending task its type's expected time; ETA = now + work / max(1, tasks executing).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

HOUR_MS = 3_600_000


@dataclass
class VolumeForecast:
    method: str
    #: (hour start ms, expected tasks created)
    points: list[tuple[int, float]]
    #: (hour start ms, tasks created) of the history
    history: list[tuple[int, float]]
    holdout_hours: int = 0
    mae: float | None = None
    baseline_mae: float | None = None


def hourly_series(rows: Iterable[Sequence[Any]], start_ms: int, end_ms: int) -> list[tuple[int, float]]:
    """(hour ms, task type, count) rows → one count per hour of ``[start, end)``, zeros filled,
    task types summed."""
    counts: dict[int, float] = defaultdict(float)
    for t, _type, n in rows:
        counts[int(t)] += float(n)
    first = start_ms - start_ms % HOUR_MS
    return [(h, counts.get(h, 0.0)) for h in range(first, end_ms, HOUR_MS)]


def seasonal_mean(history: list[tuple[int, float]], hours_ahead: int, season_days: int = 7) -> list[tuple[int, float]]:
    """Forecast the ``hours_ahead`` hours after the history (see the module doc)."""
    if not history:
        return []
    last = history[-1][0]
    recent = [(t, v) for t, v in history if t > last - season_days * 86_400_000]
    by_hour: dict[int, list[float]] = defaultdict(list)
    for t, v in recent:
        by_hour[(t // HOUR_MS) % 24].append(v)
    overall = sum(v for _, v in recent) / len(recent)
    full_day = len(recent) >= 24
    out = []
    for k in range(1, hours_ahead + 1):
        t = last + k * HOUR_MS
        vals = by_hour.get((t // HOUR_MS) % 24)
        out.append((t, sum(vals) / len(vals) if full_day and vals else overall))
    return out


def volume_forecast(
    history: list[tuple[int, float]], hours_ahead: int = 12, holdout_hours: int = 24, season_days: int = 7
) -> VolumeForecast:
    """The next hours' forecast and its error on the held-out last hours."""
    fc = VolumeForecast(f"seasonal mean of the same hour over the last {season_days} days", [], history)
    fc.points = seasonal_mean(history, hours_ahead, season_days)
    hold = min(holdout_hours, len(history) // 2)
    if hold >= 1:
        train, test = history[:-hold], history[-hold:]
        pred = seasonal_mean(train, hold, season_days)
        fc.holdout_hours = hold
        fc.mae = sum(abs(p - a) for (_, p), (_, a) in zip(pred, test, strict=True)) / hold
        fc.baseline_mae = sum(abs(train[-1][1] - a) for _, a in test) / hold
    return fc


@dataclass
class CompletionForecast:
    task_type: str
    tasks: int
    expected_ms: float
    holdout: int = 0
    mae_ms: float | None = None
    #: MAE relative to the mean actual cycle time of the held-out tasks
    relative_mae: float | None = None


def ewma_forecasts(rows: Iterable[Sequence[Any]], alpha: float = 0.3, warmup: int = 3) -> list[CompletionForecast]:
    """(task type, finished ms, cycle ms) rows in finish order → one forecast per task type."""
    by_type: dict[str, list[float]] = defaultdict(list)
    for task_type, _t, cycle in rows:
        if cycle is not None:
            by_type[str(task_type)].append(float(cycle))
    out = []
    for task_type, values in sorted(by_type.items()):
        level = values[0]
        predictions: list[tuple[float, float]] = []  # (predicted, actual)
        for i, v in enumerate(values[1:], start=1):
            if i >= warmup:
                predictions.append((level, v))
            level = alpha * v + (1 - alpha) * level
        fc = CompletionForecast(task_type, len(values), level)
        held = predictions[-max(1, len(values) // 4) :] if predictions else []
        if held:
            fc.holdout = len(held)
            fc.mae_ms = sum(abs(p - a) for p, a in held) / len(held)
            mean = sum(a for _, a in held) / len(held)
            fc.relative_mae = fc.mae_ms / mean if mean else None
        out.append(fc)
    return out


@dataclass
class GroupEta:
    group: str
    open_tasks: int
    executing: int
    remaining_work_ms: float
    eta_ms: int | None
    #: task types with no history (their expected time is the mean over all types)
    unknown_types: list[str] = field(default_factory=list)


def group_eta(
    group: str, open_rows: Iterable[Sequence[Any]], forecasts: list[CompletionForecast], now_ms: int
) -> GroupEta:
    """``open_rows``: (task type, state, started ms or None) of the group's open tasks."""
    expected = {f.task_type: f.expected_ms for f in forecasts}
    fallback = sum(expected.values()) / len(expected) if expected else None
    work = 0.0
    executing = 0
    n = 0
    unknown: set[str] = set()
    for task_type, _state, started in open_rows:
        n += 1
        e = expected.get(str(task_type))
        if e is None:
            unknown.add(str(task_type))
            e = fallback
        if e is None:
            continue
        if started is not None:
            executing += 1
            work += max(0.0, e - max(0, now_ms - int(started)))
        else:
            work += e
    if n == 0:
        return GroupEta(group, 0, 0, 0.0, now_ms)
    eta = None if fallback is None else now_ms + int(work / max(1, executing))
    return GroupEta(group, n, executing, work, eta, sorted(unknown))
