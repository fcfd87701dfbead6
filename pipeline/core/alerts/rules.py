"""Alert rules: the YAML rules file as pydantic models, its validation (errors name the
file, the rule and the field), and rule evaluation: measures in, observations out.

Pure: the caller reads the file and runs the queries (``pipeline.core.alerts.queries``
builds them); this module turns query rows into one ``Observation`` per alert group
(breached or not) for ``pipeline.core.alerts.state`` to step the alert state machines.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

Severity = Literal["critical", "high", "medium", "low"]
SEVERITIES: tuple[str, ...] = ("critical", "high", "medium", "low")
NotifierName = Literal["alertmanager", "webhook", "log"]
Comparator = Literal[">", ">=", "<", "<=", "==", "!="]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
WINDOW_S = {"1m": 60, "5m": 300, "1h": 3600}


class RulesError(ValueError):
    """The rules file is missing, not YAML, or not valid; the message says where and why."""


def parse_duration(value: Any) -> float:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"250ms"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '1h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2) or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration (use e.g. '30s', '5m', '1h' or seconds)")
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError("a duration must be zero or positive")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


@dataclass(frozen=True)
class MeasureSpec:
    """Where a measure comes from and which labels it can be filtered and grouped by."""

    source: Literal["rollups", "tasks", "agent_status", "task_executions", "dlq"]
    labels: tuple[str, ...]
    description: str
    #: measures that sum events (missing windows count as 0 in anomaly baselines)
    additive: bool = False


_ROLLUP_LABELS = ("entity_type", "event_type", "agent", "task_type", "outcome")

MEASURES: dict[str, MeasureSpec] = {
    "failure_rate": MeasureSpec(
        "rollups", _ROLLUP_LABELS, "failures / (successes + failures) of finished tasks, 0..1"
    ),
    "count": MeasureSpec("rollups", _ROLLUP_LABELS, "events in the window", additive=True),
    "rate_per_minute": MeasureSpec("rollups", _ROLLUP_LABELS, "events per minute over the window", additive=True),
    "p50_duration_ms": MeasureSpec("rollups", _ROLLUP_LABELS, "median duration_ms"),
    "p95_duration_ms": MeasureSpec("rollups", _ROLLUP_LABELS, "95th percentile duration_ms"),
    "p99_duration_ms": MeasureSpec("rollups", _ROLLUP_LABELS, "99th percentile duration_ms"),
    "queue_depth": MeasureSpec("tasks", ("task_type", "priority"), "unfinished tasks in CREATED or QUEUED"),
    "stuck_tasks": MeasureSpec(
        "tasks", ("task_type", "agent", "state"), "started tasks with no event for `stuck_after`"
    ),
    "time_to_deadline_s": MeasureSpec(
        "tasks", ("task_type", "agent", "priority"), "seconds until the nearest deadline of an unfinished task"
    ),
    "agents_offline_fraction": MeasureSpec("agent_status", (), "offline agents / known agents, 0..1"),
    "agent_active_tasks": MeasureSpec("agent_status", ("agent",), "active tasks of the busiest non-offline agent"),
    "abandoned_tasks": MeasureSpec(
        "task_executions", ("task_type", "agent"), "tasks closed as abandoned in the window", additive=True
    ),
    "dlq_rate_per_minute": MeasureSpec("dlq", ("reason",), "rejected inputs per minute over the window", additive=True),
}
ROLLUP_MEASURES = tuple(k for k, v in MEASURES.items() if v.source == "rollups")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Annotations(_Strict):
    summary: str = "{rule}: {value} {op} {threshold}"
    description: str = ""


class Anomaly(_Strict):
    """EWMA baseline of the measure over the previous windows; z-score of the current one."""

    baseline_windows: int = Field(10, ge=2, le=1440, description="previous windows the baseline spans")
    alpha: float = Field(0.3, gt=0, le=1, description="EWMA smoothing factor")
    z: float = Field(3.0, gt=0, description="fire when the z-score passes this")
    direction: Literal["up", "down", "both"] = "up"
    min_samples: int = Field(5, ge=2, description="baseline windows with data needed before it can fire")
    min_stddev: float = Field(1.0, ge=0, description="floor of the baseline's standard deviation")
    min_relative_stddev: float = Field(
        0.1, ge=0, description="floor of the standard deviation as a fraction of the baseline mean"
    )


class Rule(_Strict):
    """One alert rule: a condition over a measure, per group, held for ``for``."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$", max_length=128)]
    type: Literal["threshold", "anomaly"] = "threshold"
    measure: str
    filter: dict[str, str | list[str]] = Field(default_factory=dict)
    group_by: list[str] = Field(default_factory=list)
    window: Literal["1m", "5m", "1h"] = "5m"
    op: Comparator = ">"
    threshold: float = 0.0
    for_: Duration = Field(0.0, alias="for")
    severity: Severity = "medium"
    min_count: int = Field(1, ge=0, description="samples (events, tasks…) needed before the rule can breach")
    stuck_after: Duration = Field(1800.0, gt=0, description="stuck_tasks: silence that makes a task stuck")
    repeat_interval: Duration | None = Field(None, description="overrides the file's repeat_interval")
    anomaly: Anomaly | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=Annotations)

    @model_validator(mode="after")
    def _check(self) -> Rule:
        spec = MEASURES.get(self.measure)
        if spec is None:
            raise ValueError(f"unknown measure {self.measure!r}; choose from {', '.join(MEASURES)}")
        for key in (*self.filter, *self.group_by):
            if key not in spec.labels:
                allowed = ", ".join(spec.labels) or "none"
                raise ValueError(f"measure {self.measure!r} has no label {key!r} (labels: {allowed})")
        if self.type == "anomaly":
            if spec.source != "rollups":
                raise ValueError(f"anomaly rules need a rollup measure ({', '.join(ROLLUP_MEASURES)})")
            if self.window == "1h":
                raise ValueError("anomaly rules use the 1m or 5m windows")
        elif self.anomaly is not None:
            raise ValueError("`anomaly` settings belong to rules with type: anomaly")
        reserved = {"alertname", "severity", *self.group_by}
        if clash := reserved & set(self.labels):
            raise ValueError(f"labels may not set {sorted(clash)} (set by the rule itself)")
        known = set(template_fields(self))
        for which, text in (("summary", self.annotations.summary), ("description", self.annotations.description)):
            for name in _placeholders(text, which):
                if name not in known:
                    raise ValueError(
                        f"annotations.{which} uses {{{name}}}; available: {', '.join(sorted(known))}"
                    )
        return self

    @property
    def anomaly_settings(self) -> Anomaly:
        return self.anomaly or Anomaly()

    @property
    def spec(self) -> MeasureSpec:
        return MEASURES[self.measure]

    @property
    def window_s(self) -> int:
        return WINDOW_S[self.window]


def template_fields(rule: Rule) -> list[str]:
    """Names a summary/description template may use."""
    base = ["rule", "measure", "value", "threshold", "op", "window", "severity", "for", "samples"]
    if rule.type == "anomaly":
        base += ["z", "baseline", "stddev"]
    return base + list(rule.group_by) + list(rule.labels)


def _placeholders(text: str, which: str) -> list[str]:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"annotations.{which} is not a valid template: {exc}") from exc
    out = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name or not name.isidentifier():
            raise ValueError(f"annotations.{which}: use named placeholders like {{value}}, not {{{name}}}")
        out.append(name)
    return out


def _default_routing() -> dict[Severity, list[NotifierName]]:
    return {
        "critical": ["alertmanager", "webhook", "log"],
        "high": ["alertmanager", "webhook", "log"],
        "medium": ["alertmanager", "webhook", "log"],
        "low": ["log"],
    }


class RulesFile(_Strict):
    """The whole file: rules, the severity → notifiers routing and the repeat interval."""

    rules: list[Rule]
    routing: dict[Severity, list[NotifierName]] = Field(default_factory=_default_routing)
    repeat_interval: Duration = Field(4 * 3600.0, gt=0)

    @model_validator(mode="after")
    def _unique(self) -> RulesFile:
        seen: set[str] = set()
        for r in self.rules:
            if r.name in seen:
                raise ValueError(f"two rules are named {r.name!r}")
            seen.add(r.name)
        return self

    def notifiers_for(self, severity: str) -> list[str]:
        return list(self.routing.get(severity, ["log"]))  # type: ignore[call-overload]

    def repeat_for(self, rule: Rule) -> float:
        return rule.repeat_interval if rule.repeat_interval is not None else self.repeat_interval


def _where(source: str, doc: Any, loc: tuple[int | str, ...]) -> str:
    """``rule 'x' (rules[2]), field 'threshold'`` for a pydantic error location."""
    parts: list[str] = []
    rest = list(loc)
    if len(rest) >= 2 and rest[0] == "rules" and isinstance(rest[1], int):
        idx = rest[1]
        name = None
        rules = doc.get("rules") if isinstance(doc, dict) else None
        if isinstance(rules, list) and idx < len(rules) and isinstance(rules[idx], dict):
            name = rules[idx].get("name")
        parts.append(f"rule {name!r} (rules[{idx}])" if name else f"rules[{idx}]")
        rest = rest[2:]
    field_path = ".".join(str(x) for x in rest if not str(x).startswith("function-"))
    if field_path:
        parts.append(f"field {field_path!r}")
    return f"{source}: " + (", ".join(parts) if parts else "top level")


def parse_rules(text: str, source: str = "<rules>") -> RulesFile:
    """Validate rules YAML; raises ``RulesError`` naming ``source``, the rule and the field."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise RulesError(f"{source}: expected a mapping with a `rules:` list, got {type(doc).__name__}")
    try:
        return RulesFile.model_validate(doc)
    except ValidationError as exc:
        lines = []
        for e in exc.errors(include_url=False):
            msg = str(e["msg"]).removeprefix("Value error, ")
            lines.append(f"{_where(source, doc, tuple(e['loc']))}: {msg}")
        raise RulesError(f"{source}: invalid alert rules\n  " + "\n  ".join(lines)) from None


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Observation:
    """One alert group's measure at one evaluation: the value and whether it breaches."""

    labels: dict[str, str]
    value: float | None
    breached: bool
    samples: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def compare(value: float, op: str, threshold: float) -> bool:
    if op == ">":
        return value > threshold
    if op == ">=":
        return value >= threshold
    if op == "<":
        return value < threshold
    if op == "<=":
        return value <= threshold
    if op == "==":
        return value == threshold
    return value != threshold


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def observe_threshold(rule: Rule, rows: list[tuple[Any, ...]]) -> list[Observation]:
    """Rows ``(*group_by values, value, samples)`` → observations of a threshold rule."""
    n = len(rule.group_by)
    out = []
    for row in rows:
        labels = {k: str(v) for k, v in zip(rule.group_by, row[:n], strict=True)}
        value = _num(row[n])
        samples = int(row[n + 1] or 0)
        breached = value is not None and samples >= rule.min_count and compare(value, rule.op, rule.threshold)
        out.append(Observation(labels, value, breached, samples))
    return out


@dataclass(frozen=True)
class Baseline:
    mean: float
    stddev: float
    samples: int


def ewma_baseline(values: list[float], alpha: float) -> Baseline | None:
    """Exponentially weighted mean and standard deviation of ``values`` (oldest first)."""
    if not values:
        return None
    mean = values[0]
    var = 0.0
    for x in values[1:]:
        diff = x - mean
        incr = alpha * diff
        mean += incr
        var = (1 - alpha) * (var + diff * incr)
    return Baseline(mean, math.sqrt(max(var, 0.0)), len(values))


def zscore(current: float, base: Baseline, a: Anomaly) -> float:
    floor = max(a.min_stddev, a.min_relative_stddev * abs(base.mean))
    return (current - base.mean) / max(base.stddev, floor, 1e-12)


def observe_anomaly(rule: Rule, rows: list[tuple[Any, ...]], now_ms: int) -> list[Observation]:
    """Rows ``(*group_by values, window_start_ms, value, samples)`` over the baseline and the
    current window → one observation per group: breached when the current window's value
    is ``z`` standard deviations from the EWMA baseline of the previous windows.

    The last complete window is judged the same way (against the windows before it), so a
    spike in the last seconds of a window is not missed when the window ends before the
    evaluation sees it; of the two, the one further from its baseline is reported.
    """
    a = rule.anomaly_settings
    n = len(rule.group_by)
    step = rule.window_s * 1000
    current_start = now_ms - now_ms % step
    first = current_start - (a.baseline_windows + 1) * step
    series: dict[tuple[str, ...], dict[int, tuple[float, int]]] = {}
    for row in rows:
        key = tuple(str(v) for v in row[:n])
        start, value = int(row[n]), _num(row[n + 1])
        samples = int(row[n + 2] or 0)
        if value is None or start < first or start > current_start:
            series.setdefault(key, {})
            continue
        series.setdefault(key, {})[start - start % step] = (value, samples)
    out = []
    for key, points in series.items():
        labels = dict(zip(rule.group_by, key, strict=True))
        judged = [_judge(rule, points, target, step) for target in (current_start, current_start - step)]
        live = [j for j in judged if j.extra]
        if not live:
            out.append(Observation(labels, judged[0].value, False, judged[0].samples))
            continue
        best = max(live, key=lambda j: (j.breached, abs(j.extra["z"])))
        out.append(Observation(labels, best.value, best.breached, best.samples, best.extra))
    return out


def _judge(rule: Rule, points: dict[int, tuple[float, int]], target: int, step: int) -> Observation:
    """One window against the EWMA baseline of the ``baseline_windows`` before it."""
    a = rule.anomaly_settings
    first = target - a.baseline_windows * step
    history: list[float] = []
    for w in range(first, target, step):
        if w in points:
            history.append(points[w][0])
        elif rule.spec.additive:
            history.append(0.0)
    observed = sum(1 for w in range(first, target, step) if w in points)
    cur_value, cur_samples = points.get(target, (0.0 if rule.spec.additive else None, 0))
    base = ewma_baseline(history, a.alpha)
    if cur_value is None or base is None or observed < a.min_samples:
        return Observation({}, cur_value, False, cur_samples)
    z = zscore(cur_value, base, a)
    if a.direction == "up":
        breached = z > a.z
    elif a.direction == "down":
        breached = z < -a.z
    else:
        breached = abs(z) > a.z
    breached = breached and (cur_samples >= rule.min_count or rule.spec.additive)
    extra = {"z": round(z, 3), "baseline": round(base.mean, 6), "stddev": round(base.stddev, 6)}
    return Observation({}, cur_value, breached, cur_samples, extra)


def observe(rule: Rule, rows: list[tuple[Any, ...]], now_ms: int) -> list[Observation]:
    if rule.type == "anomaly":
        return observe_anomaly(rule, rows, now_ms)
    return observe_threshold(rule, rows)


#: The label value every ``group_by`` key takes in the group that holds the folded ones.
OTHER_GROUP = "other"


def _badness(rule: Rule, o: Observation) -> float:
    """How far an observation is on the alerting side (larger: worse)."""
    if rule.type == "anomaly":
        return abs(o.extra.get("z", 0.0))
    if o.value is None:
        return -math.inf
    return -o.value if rule.op in ("<", "<=") else o.value


def cap_groups(rule: Rule, obs: list[Observation], max_groups: int) -> tuple[list[Observation], int]:
    """At most ``max_groups`` observations per rule: breached groups first, the worst first
    (ties by labels, so the choice is deterministic); the rest fold into one group whose
    every ``group_by`` label is ``other``, breached if any folded group is, with the worst
    folded value and the summed samples.  Returns (observations, groups folded)."""
    if len(obs) <= max_groups or not rule.group_by:
        return obs, 0
    ranked = sorted(obs, key=lambda o: (not o.breached, -_badness(rule, o), sorted(o.labels.items())))
    kept, rest = ranked[: max_groups - 1], ranked[max_groups - 1 :]
    worst = rest[0]  # ranked: the first folded group is the worst of them
    other = Observation(
        labels=dict.fromkeys(rule.group_by, OTHER_GROUP),
        value=worst.value,
        breached=any(o.breached for o in rest),
        samples=sum(o.samples for o in rest),
        extra={**worst.extra, "folded_groups": float(len(rest))},
    )
    return [*kept, other], len(rest)


def render(template: str, values: dict[str, Any]) -> str:
    """Fill a summary/description template; unknown names stay as written."""

    class _Keep(dict[str, Any]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        return string.Formatter().vformat(template, (), _Keep(values))
    except (ValueError, IndexError, KeyError):
        return template


def format_value(value: float | None) -> str:
    """A measured value for people: whole numbers from 100 up (``72050``, never
    ``7.205e+04``), two decimals from 1, three significant digits below (``0.234``)."""
    if value is None:
        return "n/a"
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if abs(value) >= 1e15:
        return f"{value:.4g}"
    if value == int(value) or abs(value) >= 100:
        return str(round(value))
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"
