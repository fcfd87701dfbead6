"""The alerts role: every ``alert_interval_s`` measure each rule in ClickHouse, step the alert
state machines, persist every change (``alerts`` table, ``taskpulse.alerts`` topic) and
hand notifications to the notifiers (Alertmanager, webhook, log) by severity.

Only the Faust group leader evaluates (one evaluator however many workers run the role);
on becoming leader it reloads the last state of every alert from the ``alerts`` table,
so a restart neither pages twice nor loses a resolve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.app import Pipeline
from pipeline.backoff import Backoff
from pipeline.core.alerts.api_queries import ANOMALY_COLUMNS, anomaly_rows
from pipeline.core.alerts.queries import latest_states_query, rule_query
from pipeline.core.alerts.rules import Observation, RulesError, RulesFile, cap_groups, observe, parse_rules
from pipeline.core.alerts.state import ALERT_COLUMNS, AlertBook, Change, alert_from_row, change_json, change_row
from pipeline.errors import TaskpulseError
from pipeline.settings import Settings
from pipeline.sinks.kafka import OutputProducer
from pipeline.sinks.notifiers import AlertmanagerNotifier, Dispatcher, LogNotifier, Notifier, WebhookNotifier
from pipeline.topics import ALERTS

log = logging.getLogger(__name__)


def load_rules(settings: Settings) -> RulesFile | None:
    """The validated rules file; None (with a warning) when the *default* file is missing.

    Raises ``RulesError`` (a ValueError: the worker refuses to start) when the file is
    invalid, or when a path set through TASKPULSE_ALERT_RULES does not exist.
    """
    path = settings.alert_rules
    if not path.is_file():
        where = f"{path} (from {Path.cwd()})" if not path.is_absolute() else str(path)
        if "alert_rules" in settings.model_fields_set:
            raise RulesError(f"alert rules file {where} does not exist (TASKPULSE_ALERT_RULES)")
        log.warning(
            "alert rules file %s not found: the alerts role is idle; set TASKPULSE_ALERT_RULES "
            "to your rules file (the default is deploy/alerts/rules.yml in the working directory)",
            where,
        )
        return None
    return parse_rules(path.read_text(), str(path))


class AlertMetrics:
    """The evaluator's own health.  (``taskpulse_alerts_firing`` / ``_pending`` per severity
    come from the metrics role, which reads every change on ``taskpulse.alerts``.)"""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.evaluations = Counter(
            "taskpulse_alert_evaluations_total", "Rule evaluation rounds run by this worker", registry=registry
        )
        self.errors = Counter(
            "taskpulse_alert_rule_errors_total", "Rule queries that failed", ["rule"], registry=registry
        )
        self.folded = Counter(
            "taskpulse_alert_groups_folded_total",
            "Alert groups folded into the `other` group (over TASKPULSE_ALERT_MAX_GROUPS per rule)",
            ["rule"],
            registry=registry,
        )
        self.seconds = Gauge(
            "taskpulse_alert_evaluation_seconds", "Duration of the last evaluation round", registry=registry
        )


@dataclass
class _State:
    rules: RulesFile | None
    rules_path: str
    idle_reason: str | None = None
    leader: bool = False
    restored: bool = False
    evaluations: int = 0
    last_evaluation_at: float | None = None
    last_evaluation_ms: float | None = None
    errors: dict[str, str] = field(default_factory=dict)
    observations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    unwritten_rows: list[Change] = field(default_factory=list)
    #: anomaly evaluations not yet in ``anomaly_evaluations`` (``ANOMALY_COLUMNS`` rows)
    unwritten_anomalies: list[list[Any]] = field(default_factory=list)
    dropped_changes: int = 0
    unpublished: list[Change] = field(default_factory=list)
    publish_wanted: asyncio.Event = field(default_factory=asyncio.Event)
    last_refresh: float = 0.0
    book: AlertBook | None = None
    dispatcher: Dispatcher | None = None
    unrouted: set[str] = field(default_factory=set)


def register(p: Pipeline) -> None:
    """Load and validate the rules (refusing to start on a bad file), then run the loop."""
    settings = p.settings
    rules = load_rules(settings)
    st = _State(rules, str(settings.alert_rules))
    metrics = AlertMetrics(p.registry)
    if rules is None:
        st.idle_reason = f"rules file {settings.alert_rules} not found (TASKPULSE_ALERT_RULES)"
    else:
        st.book = AlertBook(rules)
        log.info("alerting: %d rules from %s", len(rules.rules), settings.alert_rules)

    async def status() -> dict[str, Any]:
        return _status(st)

    p.status_sections["alerts"] = status
    if rules is None:
        return

    @p.app.task  # type: ignore[misc]
    async def alerting() -> None:
        await _run(p, rules, st, metrics)


def _notifiers(settings: Settings, session: aiohttp.ClientSession) -> list[Notifier]:
    out: list[Notifier] = [LogNotifier()]
    if settings.alertmanager_url:
        # Like Prometheus: a firing alert stays active in Alertmanager for several re-send
        # periods (at least 2 minutes), so a restarting evaluator does not make it flap.
        ttl = max(4 * settings.alertmanager_resend_s, 3 * settings.alert_interval_s, 120.0)
        timeout = settings.alert_notify_timeout_s
        out.append(AlertmanagerNotifier(settings.alertmanager_url, session, ttl_s=ttl, timeout_s=timeout))
    webhook = settings.alert_webhook_url.get_secret_value()
    if webhook:
        out.append(
            WebhookNotifier(webhook, session, settings.alert_webhook_format, settings.alert_notify_timeout_s)
        )
    return out


async def _run(p: Pipeline, rules: RulesFile, st: _State, metrics: AlertMetrics) -> None:
    settings = p.settings
    session = aiohttp.ClientSession()
    dispatcher = Dispatcher(_notifiers(settings, session), retry_for_s=settings.alert_retry_for_s)
    st.dispatcher = dispatcher
    routed: set[str] = {n for names in rules.routing.values() for n in names}
    st.unrouted = routed - set(dispatcher.notifiers)
    if st.unrouted:
        log.warning(
            "alert routing names %s but they are not configured (TASKPULSE_ALERTMANAGER_URL / "
            "TASKPULSE_ALERT_WEBHOOK_URL): those alerts go to the log only",
            ", ".join(sorted(st.unrouted)),
        )
    dispatcher.start()
    publisher = asyncio.create_task(_publish_loop(p, st), name="alerts-publisher")
    try:
        while True:
            t0 = time.monotonic()
            try:
                await _tick(p, rules, st, metrics)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert evaluation round failed")
            await asyncio.sleep(max(0.05, settings.alert_interval_s - (time.monotonic() - t0)))
    finally:
        await dispatcher.drain(2.0)
        await dispatcher.stop()
        publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publisher
        await session.close()


async def _publish_loop(p: Pipeline, st: _State) -> None:
    """Publish changes to ``taskpulse.alerts`` in the background (a Kafka outage delays the
    topic, never the evaluation), in order, retrying with backoff."""
    producer = OutputProducer(p.kafka_servers, client_kwargs=p.kafka_kwargs)
    backoff = Backoff(0.5, 30.0)
    try:
        while True:
            await st.publish_wanted.wait()
            try:
                await producer.start()
                batch = list(st.unpublished)
                for c in batch:
                    await producer.send(ALERTS, orjson.dumps(change_json(c)), key=c.alert.fingerprint.encode())
                await producer.flush()
                del st.unpublished[: len(batch)]
                if not st.unpublished:
                    st.publish_wanted.clear()
                st.errors.pop("<alerts topic>", None)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any Kafka trouble: retry later
                st.errors["<alerts topic>"] = str(exc)[:500]
                log.warning("alerting: %d change(s) not published to %s yet: %s", len(st.unpublished), ALERTS, exc)
                await backoff.sleep()
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


def _is_leader(p: Pipeline) -> bool:
    try:
        return bool(p.app.is_leader())
    except Exception:  # noqa: BLE001 - the consumer is not up yet
        return False


async def _tick(p: Pipeline, rules: RulesFile, st: _State, metrics: AlertMetrics) -> None:
    book, dispatcher = st.book, st.dispatcher
    assert book is not None and dispatcher is not None
    if not _is_leader(p):
        if st.leader:
            log.warning("alerting: no longer the group leader; another worker evaluates the rules")
        st.leader = st.restored = False
        book.alerts.clear()
        return
    st.leader = True
    db = p.settings.clickhouse_database
    if not st.restored:
        try:
            result = await asyncio.to_thread(p.store.query, latest_states_query(db))
        except TaskpulseError as exc:
            st.errors["<restore>"] = str(exc)
            log.warning("alerting: cannot reload alert states yet (%s); retrying", exc)
            return
        cols = list(result.column_names)
        latest = [alert_from_row(dict(zip(cols, r, strict=True))) for r in result.result_rows]
        book.restore(latest)
        st.errors.pop("<restore>", None)
        st.restored = True
        log.info("alerting: restored %d live alert(s) from %s.alerts", len(book.alerts), db)

    t0 = time.monotonic()
    now_ms = int(time.time() * 1000)
    changes: list[Change] = []
    for rule in rules.rules:
        sql, params = rule_query(rule, db, now_ms)
        try:
            rows = await asyncio.to_thread(p.store.rows, sql, params)
        except TaskpulseError as exc:
            st.errors[rule.name] = str(exc)[:500]
            metrics.errors.labels(rule.name).inc()
            continue
        st.errors.pop(rule.name, None)
        obs, folded = cap_groups(rule, observe(rule, rows, now_ms), p.settings.alert_max_groups)
        if folded:
            metrics.folded.labels(rule.name).inc(folded)
        st.observations[rule.name] = [_obs_json(o) for o in obs[:20]]
        if rule.type == "anomaly":
            st.unwritten_anomalies += anomaly_rows(rule.name, obs, now_ms)
        changes += book.evaluate(rule, obs, now_ms)
    st.evaluations += 1
    metrics.evaluations.inc()
    st.last_evaluation_at = time.time()
    st.last_evaluation_ms = round((time.monotonic() - t0) * 1000, 1)
    metrics.seconds.set(st.last_evaluation_ms / 1000)

    st.unwritten_rows += changes
    over = len(st.unwritten_rows) - p.settings.alert_buffer_max
    if over > 0:  # a long outage: the oldest unwritten history goes first, counted
        del st.unwritten_rows[:over]
        st.dropped_changes += over
        p.metrics.state_dropped.labels("alerts", "unwritten_changes").inc(over)
    await _write_changes(p, st)
    await _write_anomalies(p, st)
    if changes:
        st.unpublished += changes
        st.publish_wanted.set()
    for c in changes:
        if c.notify:
            for name in rules.notifiers_for(c.alert.severity):
                dispatcher.submit(name, [c])
    _refresh_alertmanager(p, rules, st)


async def _write_changes(p: Pipeline, st: _State) -> None:
    """Write buffered changes to the alerts table; keep them for the next round if it fails."""
    if not st.unwritten_rows:
        return
    rows = [change_row(c) for c in st.unwritten_rows]
    try:
        await asyncio.to_thread(p.store.insert, "alerts", rows, ALERT_COLUMNS)
        st.unwritten_rows = []
        st.errors.pop("<alerts table>", None)
    except TaskpulseError as exc:
        st.errors["<alerts table>"] = str(exc)[:500]
        log.warning("alerting: %d change(s) not written to the alerts table yet: %s", len(rows), exc)


async def _write_anomalies(p: Pipeline, st: _State) -> None:
    """Write buffered anomaly evaluations (``/api/v1/anomalies`` serves them); keep at most
    ``alert_buffer_max`` of them across an outage, the oldest dropped first."""
    over = len(st.unwritten_anomalies) - p.settings.alert_buffer_max
    if over > 0:
        del st.unwritten_anomalies[:over]
        p.metrics.state_dropped.labels("alerts", "unwritten_anomalies").inc(over)
    if not st.unwritten_anomalies:
        return
    try:
        await asyncio.to_thread(p.store.insert, "anomaly_evaluations", st.unwritten_anomalies, ANOMALY_COLUMNS)
        st.unwritten_anomalies = []
        st.errors.pop("<anomaly_evaluations table>", None)
    except TaskpulseError as exc:
        st.errors["<anomaly_evaluations table>"] = str(exc)[:500]
        log.warning("alerting: %d anomaly evaluation(s) not written yet: %s", len(st.unwritten_anomalies), exc)


def _refresh_alertmanager(p: Pipeline, rules: RulesFile, st: _State) -> None:
    """Re-send firing alerts to Alertmanager before their endsAt passes (not a new page:
    Alertmanager deduplicates identical alerts)."""
    dispatcher, book = st.dispatcher, st.book
    assert dispatcher is not None and book is not None
    if "alertmanager" not in dispatcher.notifiers:
        return
    now = time.monotonic()
    if now - st.last_refresh < p.settings.alertmanager_resend_s or dispatcher.backlog("alertmanager"):
        return
    st.last_refresh = now
    now_ms = int(time.time() * 1000)
    firing = [
        Change(now_ms, "firing", a, False)
        for a in book.firing()
        if "alertmanager" in rules.notifiers_for(a.severity)
    ]
    dispatcher.submit("alertmanager", firing)


def _obs_json(o: Observation) -> dict[str, Any]:
    return {"labels": o.labels, "value": o.value, "breached": o.breached, "samples": o.samples, **o.extra}


def _status(st: _State) -> dict[str, Any]:
    out: dict[str, Any] = {"rules_file": st.rules_path}
    if st.rules is None:
        out["idle"] = st.idle_reason
        return out
    book, dispatcher = st.book, st.dispatcher
    alerts = list(book.alerts.values()) if book else []
    out.update(
        {
            "rules": len(st.rules.rules),
            "leader": st.leader,
            "restored": st.restored,
            "evaluations": st.evaluations,
            "last_evaluation_at": st.last_evaluation_at,
            "last_evaluation_ms": st.last_evaluation_ms,
            "firing": [_alert_json(a) for a in alerts if a.state == "firing"],
            "pending": [_alert_json(a) for a in alerts if a.state == "pending"],
            "notifiers": {n: vars(s) for n, s in dispatcher.stats.items()} if dispatcher else {},
            "unconfigured_notifiers": sorted(st.unrouted),
            "unwritten_changes": len(st.unwritten_rows),
            "dropped_unwritten_changes": st.dropped_changes,
            "unpublished_changes": len(st.unpublished),
            "errors": dict(st.errors),
            "observations": st.observations,
        }
    )
    return out


def _alert_json(a: Any) -> dict[str, Any]:
    return {
        "rule": a.rule,
        "severity": a.severity,
        "labels": a.group_labels,
        "value": a.value,
        "summary": a.summary,
        "fingerprint": a.fingerprint,
    }
