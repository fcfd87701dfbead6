"""The alert state machine: inactive → pending → firing → resolved, one alert per rule and
group, with ``for`` and the repeat interval.  Observations in, state changes out.

Pure: the caller passes ``now_ms``, persists each ``Change`` (alerts table, alerts topic)
and hands those with ``notify`` to the notifiers.  ``AlertBook.restore`` takes the last
persisted row of each alert back after a restart, so a firing alert is neither paged
again nor forgotten (its resolve still goes out).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from pipeline.core.alerts.rules import Observation, Rule, RulesFile, format_value, render

State = Literal["inactive", "pending", "firing", "resolved"]
ChangeKind = Literal["pending", "firing", "resolved", "inactive", "renotify"]

ALERT_COLUMNS = [
    "at",
    "rule",
    "fingerprint",
    "state",
    "change",
    "severity",
    "group_labels",
    "labels",
    "value",
    "threshold",
    "active_since",
    "fired_at",
    "resolved_at",
    "last_notified_at",
    "notifications",
    "summary",
    "description",
]


def fingerprint(rule: str, group: dict[str, str]) -> str:
    """Stable id of one alert (rule + group labels)."""
    text = rule + "\x00" + "\x00".join(f"{k}={v}" for k, v in sorted(group.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """One alert's current state (what a row of the alerts table holds)."""

    rule: str
    fingerprint: str
    group_labels: dict[str, str]
    state: State
    severity: str
    value: float | None
    threshold: float
    active_since: int | None = None  # ms: condition first true (pending started)
    fired_at: int | None = None
    resolved_at: int | None = None
    last_notified_at: int | None = None
    notifications: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    description: str = ""


@dataclass(frozen=True)
class Change:
    """A state change (or a repeat notification) of one alert at ``at`` (ms)."""

    at: int
    kind: ChangeKind
    alert: Alert
    notify: bool


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _ms(v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return int((v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp() * 1000)
    if isinstance(v, int | float):
        return int(v)
    text = str(v)
    dt = datetime.fromisoformat(text)
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)


def change_row(c: Change) -> list[Any]:
    """A change as a row of the alerts table (``ALERT_COLUMNS`` order)."""
    a = c.alert
    return [
        _dt(c.at),
        a.rule,
        a.fingerprint,
        a.state,
        c.kind,
        a.severity,
        a.group_labels,
        a.labels,
        a.value,
        a.threshold,
        _dt(a.active_since),
        _dt(a.fired_at),
        _dt(a.resolved_at),
        _dt(a.last_notified_at),
        a.notifications,
        a.summary,
        a.description,
    ]


def change_json(c: Change) -> dict[str, Any]:
    """A change as the JSON object published on ``taskpulse.alerts``."""

    def iso(ms: int | None) -> str | None:
        d = _dt(ms)
        return None if d is None else d.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    a = c.alert
    return {
        "at": iso(c.at),
        "rule": a.rule,
        "fingerprint": a.fingerprint,
        "state": a.state,
        "change": c.kind,
        "severity": a.severity,
        "group_labels": a.group_labels,
        "labels": a.labels,
        "value": a.value,
        "threshold": a.threshold,
        "active_since": iso(a.active_since),
        "fired_at": iso(a.fired_at),
        "resolved_at": iso(a.resolved_at),
        "notifications": a.notifications,
        "summary": a.summary,
        "description": a.description,
    }


def alert_from_row(row: dict[str, Any]) -> Alert:
    """The inverse of ``change_row`` (a row read back from the alerts table)."""
    value = row.get("value")
    return Alert(
        rule=str(row["rule"]),
        fingerprint=str(row["fingerprint"]),
        group_labels={str(k): str(v) for k, v in dict(row.get("group_labels") or {}).items()},
        state=row["state"],
        severity=str(row["severity"]),
        value=None if value is None else float(value),
        threshold=float(row.get("threshold") or 0.0),
        active_since=_ms(row.get("active_since")),
        fired_at=_ms(row.get("fired_at")),
        resolved_at=_ms(row.get("resolved_at")),
        last_notified_at=_ms(row.get("last_notified_at")),
        notifications=int(row.get("notifications") or 0),
        labels={str(k): str(v) for k, v in dict(row.get("labels") or {}).items()},
        summary=str(row.get("summary") or ""),
        description=str(row.get("description") or ""),
    )


class AlertBook:
    """Every live (pending or firing) alert, keyed by fingerprint; steps them per evaluation."""

    def __init__(self, rules: RulesFile) -> None:
        self.rules = rules
        self.alerts: dict[str, Alert] = {}

    def restore(self, latest: list[Alert]) -> None:
        """Take back the last persisted state of each alert (pending and firing ones live on)."""
        known = {r.name for r in self.rules.rules}
        for a in latest:
            if a.state in ("pending", "firing") and a.rule in known:
                self.alerts[a.fingerprint] = a

    def firing(self) -> list[Alert]:
        return [a for a in self.alerts.values() if a.state == "firing"]

    def evaluate(self, rule: Rule, observations: list[Observation], now_ms: int) -> list[Change]:
        """Step every alert of ``rule``: the groups observed now and the live ones not seen
        (a group that vanished from the data no longer breaches)."""
        changes: list[Change] = []
        seen: set[str] = set()
        for obs in observations:
            fp = fingerprint(rule.name, obs.labels)
            seen.add(fp)
            changes += self._step(rule, fp, obs, now_ms)
        for fp, a in list(self.alerts.items()):
            if a.rule == rule.name and fp not in seen:
                changes += self._step(rule, fp, Observation(a.group_labels, None, False), now_ms)
        return changes

    def _step(self, rule: Rule, fp: str, obs: Observation, now: int) -> list[Change]:
        prev = self.alerts.get(fp)
        if not obs.breached:
            if prev is None:
                return []
            del self.alerts[fp]
            value = obs.value if obs.value is not None else prev.value
            if prev.state == "firing":
                a = self._describe(rule, prev, obs, value, state="resolved", resolved_at=now, last_notified_at=now)
                return [Change(now, "resolved", replace(a, notifications=a.notifications + 1), True)]
            a = self._describe(rule, prev, obs, value, state="inactive")
            return [Change(now, "inactive", a, False)]
        if prev is None:
            base = Alert(
                rule.name, fp, dict(obs.labels), "pending", rule.severity, obs.value, rule.threshold,
                active_since=now,
            )  # fmt: skip
            if rule.for_ <= 0:
                return [self._fire(rule, base, obs, now)]
            a = self._describe(rule, base, obs, obs.value)
            self.alerts[fp] = a
            return [Change(now, "pending", a, False)]
        if prev.state == "pending":
            if now - (prev.active_since or now) >= rule.for_ * 1000:
                return [self._fire(rule, prev, obs, now)]
            self.alerts[fp] = self._describe(rule, prev, obs, obs.value)
            return []
        # firing: still breached
        repeat_ms = self.rules.repeat_for(rule) * 1000
        a = self._describe(rule, prev, obs, obs.value)
        if now - (prev.last_notified_at or prev.fired_at or now) >= repeat_ms:
            a = replace(a, last_notified_at=now, notifications=a.notifications + 1)
            self.alerts[fp] = a
            return [Change(now, "renotify", a, True)]
        self.alerts[fp] = a
        return []

    def _fire(self, rule: Rule, prev: Alert, obs: Observation, now: int) -> Change:
        a = self._describe(
            rule, prev, obs, obs.value, state="firing", fired_at=now, last_notified_at=now,
            notifications=prev.notifications + 1,
        )  # fmt: skip
        self.alerts[a.fingerprint] = a
        return Change(now, "firing", a, True)

    def _describe(self, rule: Rule, a: Alert, obs: Observation, value: float | None, **updates: Any) -> Alert:
        """``a`` with the current value, labels and filled-in annotations."""
        values: dict[str, Any] = {
            "rule": rule.name,
            "measure": rule.measure,
            "value": format_value(value),
            "threshold": format_value(rule.threshold),
            "op": rule.op,
            "window": rule.window,
            "severity": rule.severity,
            "for": format_value(rule.for_) + "s",
            "samples": obs.samples,
            **{k: format_value(v) for k, v in obs.extra.items()},
            **rule.labels,
            **a.group_labels,
        }
        labels = {"alertname": rule.name, "severity": rule.severity, **rule.labels, **a.group_labels}
        return replace(
            a,
            value=value,
            severity=rule.severity,
            threshold=rule.threshold,
            labels=labels,
            summary=render(rule.annotations.summary, values),
            description=render(rule.annotations.description, values),
            **updates,
        )
