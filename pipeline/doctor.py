"""``taskpulse doctor``: measures what an operator asks first when nothing moves (the broker,
its topics, each role's consumer lag, ClickHouse, the schema version and TTLs, disk space,
the alert rules, Alertmanager and the webhook, the clocks) and returns the findings, each
judged by ``pipeline.core.doctor``.  ClickHouse is read through the running worker when one
answers (chDB: one engine per process), else directly; nothing is changed.  Secrets never
appear: notifier URLs are shown by host (``url_for_display``), errors pass ``redact``.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pipeline.core import doctor as judge
from pipeline.core.alerts.rules import RulesError, parse_rules
from pipeline.core.doctor import Finding
from pipeline.core.ingest import queries as ingest_queries
from pipeline.errors import TaskpulseError
from pipeline.kafka_security import KafkaSecurity, client_kwargs
from pipeline.query import worker_call
from pipeline.settings import Settings, kafka_bootstrap, redact, url_for_display
from pipeline.sinks.kafka import group_offsets
from pipeline.topics import ALL_TOPICS, RAW_TOPICS, role_consumers


def run(settings: Settings) -> list[Finding]:
    """Every check's findings, in the order an operator reads them."""
    findings = _kafka(settings)
    findings += _clickhouse(settings)
    findings.append(_disk(settings))
    findings.append(_rules(settings))
    findings += _notifiers(settings)
    return findings


# --------------------------------------------------------------------------- Kafka


def _kafka(settings: Settings) -> list[Finding]:
    if not settings.kafka_url:
        return [Finding("broker", "fail", "TASKPULSE_KAFKA_URL is not set",
                        "export the URL `taskpulse up` printed, or your cluster's (kafka://host:9092)")]  # fmt: skip
    servers = kafka_bootstrap(settings.kafka_url)
    consumers = {r: c for r, c in role_consumers(settings.consumer_group, settings.ingest_engine).items()
                 if r in settings.role_list}  # fmt: skip
    try:
        kwargs = client_kwargs(KafkaSecurity.from_settings(settings))
        ends, commits = asyncio.run(
            group_offsets(servers, ALL_TOPICS, sorted({g for g, _ in consumers.values()}), kwargs, timeout_s=5)
        )
    except TaskpulseError as exc:
        return [Finding("broker", "fail", f"cannot reach Kafka at {redact(servers)}: {redact(str(exc))[:300]}",
                        "start the broker (or `taskpulse up`), check TASKPULSE_KAFKA_URL and the "
                        "TASKPULSE_KAFKA_SECURITY_PROTOCOL / _SSL_* / _SASL_* settings")]  # fmt: skip
    partitions: dict[str, int] = {}
    for topic, _ in ends:
        partitions[topic] = partitions.get(topic, 0) + 1
    out = [judge.ok("broker", f"{redact(servers)} answers"), judge.topics(ALL_TOPICS, partitions, RAW_TOPICS.values())]
    for role, (group, topics) in consumers.items():
        out.append(judge.lag(role, group, ends, commits.get(group), topics, settings.doctor_max_lag))
    return out


# --------------------------------------------------------------------------- ClickHouse


def _clickhouse(settings: Settings) -> list[Finding]:
    """Reachability, schema, TTLs and clocks: through the worker's API, else directly."""
    answer = worker_call(settings, "GET", "/api/schema", timeout_s=30)
    db = settings.clickhouse_database
    host_ms = int(time.time() * 1000)
    try:
        if answer is not None and answer[0] == 200:
            status: dict[str, Any] = answer[1]
            sql = worker_call(settings, "POST", "/api/sql", {"query": ingest_queries.clock(db)}, timeout_s=30)
            if sql is None or sql[0] != 200:
                raise TaskpulseError(f"the worker's /api/sql answered {sql}")
            row = sql[1]["rows"][0]
            where = f"through the worker at {settings.effective_api_url}"
        else:
            status, row = _direct(settings, ingest_queries.clock(db))
            where = f"directly ({redact(settings.effective_clickhouse_url)}; no worker answers)"
    except TaskpulseError as exc:
        return [Finding("clickhouse", "fail", redact(str(exc))[:400],
                        "start ClickHouse, check TASKPULSE_CLICKHOUSE_URL and its password")]  # fmt: skip
    newest = int(row[0]) if row[1] else None
    out = [judge.ok("clickhouse", f"answers {where}"), judge.schema(status), judge.ttls(status)]
    return out + judge.clock(host_ms, newest, int(row[2]), settings.doctor_max_clock_skew_s)


def _direct(settings: Settings, sql: str) -> tuple[dict[str, Any], list[Any]]:
    from pipeline.sinks.clickhouse import ClickHouseStore

    store = ClickHouseStore.from_settings(settings)
    try:
        if settings.clickhouse_database not in {str(r[0]) for r in store.rows("SHOW DATABASES")}:
            raise TaskpulseError(f"ClickHouse has no database {settings.clickhouse_database}: run `taskpulse migrate`")
        return store.schema_status(), list(store.rows(sql)[0])
    finally:
        store.close()


# --------------------------------------------------------------------------- host


def _disk(settings: Settings) -> Finding:
    path = Path(settings.data_dir).resolve()
    while not path.exists():
        path = path.parent
    usage = shutil.disk_usage(path)
    return judge.disk(str(path), usage.free, usage.total, settings.doctor_min_free_disk_mb)


def _rules(settings: Settings) -> Finding:
    path = Path(settings.alert_rules)
    if not path.is_file():
        return Finding("alert rules", "fail", f"{path}: no such file", "set TASKPULSE_ALERT_RULES to the rules file")
    try:
        rules = parse_rules(path.read_text(), str(path))
    except RulesError as exc:
        return Finding("alert rules", "fail", str(exc)[:400], f"fix {path} (`taskpulse alerts check {path}`)")
    return judge.ok("alert rules", f"{path}: {len(rules.rules)} rules valid")


def _notifiers(settings: Settings) -> list[Finding]:
    out = []
    am = settings.alertmanager_url
    if not am:
        out.append(judge.ok("alertmanager", "not configured (TASKPULSE_ALERTMANAGER_URL)"))
    else:
        shown = url_for_display(am)
        try:
            with urllib.request.urlopen(f"{am.rstrip('/')}/-/healthy", timeout=5) as r:  # noqa: S310 - the operator's URL
                out.append(judge.ok("alertmanager", f"{shown} healthy (HTTP {r.status})"))
        except (OSError, ValueError) as exc:
            out.append(Finding("alertmanager", "fail", f"{shown}: {redact(str(exc))[:200]}",
                               "start Alertmanager or fix TASKPULSE_ALERTMANAGER_URL"))  # fmt: skip
    hook = settings.alert_webhook_url.get_secret_value()
    if not hook:
        out.append(judge.ok("webhook", "not configured (TASKPULSE_ALERT_WEBHOOK_URL)"))
        return out
    shown = url_for_display(hook)
    try:  # a connection only: a request would post to the channel
        parts = urlsplit(hook)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=5):
            out.append(judge.ok("webhook", f"{shown} reachable (TCP)"))
    except (OSError, ValueError) as exc:
        out.append(Finding("webhook", "fail", f"{shown}: {type(exc).__name__}",
                           "check TASKPULSE_ALERT_WEBHOOK_URL and the network path to it"))  # fmt: skip
    return out
