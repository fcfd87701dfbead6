"""The alerts role end to end: real broker, real worker (chDB), real Alertmanager and a local
webhook receiver.  Events published with the SDK fill the rollups; the rules fire, resolve,
survive a restart without a duplicate page, and a bad rules file stops the worker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.embedded import EmbeddedBroker
from pipeline.sdk import make_event
from pipeline.topics import ALERTS
from tests.integration.alerting_fixtures import Alertmanager, Receiver, alertmanager, receiver  # noqa: F401
from tests.integration.api_client import all_pages, get
from tests.integration.conftest import ROOT, Worker, publish, publish_raw, wait_for

pytestmark = pytest.mark.integration

FAILURE_RULES = """
repeat_interval: 1h
routing:
  high: [alertmanager, webhook, log]
rules:
  - name: high_failure_rate
    measure: failure_rate
    window: 5m
    op: ">"
    threshold: 0.2
    min_count: 10
    for: 2s
    severity: high
    labels: {team: oncall}
    annotations:
      summary: "failure rate {value} > {threshold}"
"""

ANOMALY_RULES = """
routing:
  medium: [webhook, log]
rules:
  - name: failure_spike
    type: anomaly
    measure: count
    filter: {event_type: task.failed}
    window: 1m
    severity: medium
    anomaly: {baseline_windows: 10, alpha: 0.3, z: 4, min_samples: 5, min_stddev: 2}
    annotations:
      summary: "spike {value} vs {baseline} (z={z})"
"""


def _finished(n: int, success: bool, prefix: str, ts: Any = None) -> list[dict[str, Any]]:
    etype = "task.completed" if success else "task.failed"
    state: dict[str, Any] = {"task_type": "research", "agent_id": "researcher"}
    if success:
        state["success"] = True
    else:
        state["error"] = "boom"
    return [
        make_event(etype, f"{prefix}-{i}", state, timestamp=ts, metrics={"duration_ms": 100})
        for i in range(n)
    ]


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _alert_status(w: Worker) -> dict[str, Any]:
    return (w.status() or {}).get("alerts", {})


def _evaluated(w: Worker) -> int:
    st = _alert_status(w)
    return int(st.get("evaluations", 0)) if st.get("leader") else 0


def _webhook(rcv: Receiver, status: str, rule: str) -> list[dict[str, Any]]:
    return [b for b in rcv.bodies("/hook") if b["status"] == status and b["alert"]["rule"] == rule]


def _am_notes(rcv: Receiver, status: str) -> list[dict[str, Any]]:
    return [b for b in rcv.bodies("/from-alertmanager") if b["status"] == status]


def _cli_list(w: Worker, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "alerts", "list", "--format", "json", *args],
        env={**os.environ, "TASKPULSE_API_URL": w.api}, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _read_alert_topic(broker: EmbeddedBroker) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        c = AIOKafkaConsumer(ALERTS, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
        await c.start()
        try:
            out: list[dict[str, Any]] = []
            for _ in range(6):
                batch = await c.getmany(timeout_ms=1000)
                for records in batch.values():
                    out += [json.loads(r.value) for r in records]
            return out
        finally:
            await c.stop()

    return asyncio.run(go())


def test_failure_rate_alert_pending_firing_restart_resolved(
    broker: EmbeddedBroker,
    make_worker: Callable[..., Worker],
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
    alertmanager: Alertmanager,  # noqa: F811
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(FAILURE_RULES)
    env = {
        "TASKPULSE_ROLES": "ingest,alerts",
        "TASKPULSE_ALERT_RULES": str(rules),
        "TASKPULSE_ALERT_INTERVAL_S": "0.5",
        "TASKPULSE_ALERTMANAGER_URL": alertmanager.url,
        "TASKPULSE_ALERTMANAGER_RESEND_S": "2",
        "TASKPULSE_ALERT_WEBHOOK_URL": receiver.url("/hook"),
    }
    # the first webhook delivery fails: it must be retried, not lost
    receiver.fail_next["/hook"] = 1
    w = make_worker(**env).start()
    wait_for(lambda: _evaluated(w) > 0, 60, "the alerts role to lead and evaluate")

    publish(broker, _finished(20, True, "ok"))
    wait_for(lambda: w.scalar("SELECT sum(successes) FROM taskpulse.rollups WHERE granularity = '1m'") == 20,
             30, "the successes in the rollups")  # fmt: skip
    time.sleep(1.5)
    assert _alert_status(w)["pending"] == [] and _alert_status(w)["firing"] == []

    breach_at = time.time()
    publish(broker, _finished(30, False, "bad"))
    wait_for(lambda: _alert_status(w)["pending"] or _alert_status(w)["firing"], 30, "the alert to go pending")
    fired = wait_for(lambda: _webhook(receiver, "firing", "high_failure_rate"), 40, "the webhook firing notification")
    hook_delay = receiver.received("/hook")[0].at - breach_at
    body = fired[0]["alert"]
    assert body["state"] == "firing" and body["severity"] == "high"
    assert body["labels"] == {"alertname": "high_failure_rate", "severity": "high", "team": "oncall"}
    assert body["value"] == pytest.approx(0.6)
    assert body["summary"] == "failure rate 0.6 > 0.2"
    am = wait_for(
        lambda: [a for a in alertmanager.alerts() if a["labels"].get("alertname") == "high_failure_rate"],
        20, "the alert in Alertmanager's /api/v2/alerts",
    )  # fmt: skip
    assert am[0]["labels"]["severity"] == "high" and am[0]["status"]["state"] == "active"
    wait_for(lambda: _am_notes(receiver, "firing"), 20, "Alertmanager to notify its receiver")
    am_delay = receiver.received("/from-alertmanager")[0].at - breach_at
    print(f"\nbreach → webhook {hook_delay:.2f}s (1 retry), breach → Alertmanager's receiver {am_delay:.2f}s")
    assert _alert_status(w)["notifiers"]["webhook"]["failed_attempts"] == 1

    rows = w.sql("SELECT change FROM taskpulse.alerts WHERE rule = 'high_failure_rate' ORDER BY at")
    assert [r[0] for r in rows] == ["pending", "firing"]

    # `alerts list --firing` shows it, through the worker's API
    listed = _cli_list(w, "--firing")
    assert [(r["rule"], r["state"], r["severity"]) for r in listed] == [("high_failure_rate", "firing", "high")]

    # still firing, several evaluations and Alertmanager refreshes later: no second page
    time.sleep(4)
    assert len(_webhook(receiver, "firing", "high_failure_rate")) == 1
    assert len(_am_notes(receiver, "firing")) == 1

    # a crash and restart while firing: the state comes back from the alerts table; nothing is re-sent
    w.kill()
    w2 = make_worker(**env).start()
    wait_for(lambda: _evaluated(w2) > 5, 60, "the restarted worker to evaluate")
    st = _alert_status(w2)
    assert [a["rule"] for a in st["firing"]] == ["high_failure_rate"], st
    time.sleep(3)
    assert len(_webhook(receiver, "firing", "high_failure_rate")) == 1
    assert len(_am_notes(receiver, "firing")) == 1
    assert [a for a in alertmanager.alerts() if a["labels"].get("alertname") == "high_failure_rate"]

    # the failures stop, successes go on: the rate drops under 20% and both receivers hear it
    publish(broker, _finished(200, True, "ok2"))
    resolved = wait_for(lambda: _webhook(receiver, "resolved", "high_failure_rate"), 40, "the resolve at the webhook")
    assert resolved[0]["alert"]["value"] < 0.2
    wait_for(lambda: _am_notes(receiver, "resolved"), 30, "Alertmanager to send the resolve")
    wait_for(
        lambda: not [a for a in alertmanager.alerts() if a["labels"].get("alertname") == "high_failure_rate"],
        20, "the alert to leave Alertmanager's active alerts",
    )  # fmt: skip
    assert len(_webhook(receiver, "firing", "high_failure_rate")) == 1
    assert len(_webhook(receiver, "resolved", "high_failure_rate")) == 1

    rows = w2.sql("SELECT change, state FROM taskpulse.alerts WHERE rule = 'high_failure_rate' ORDER BY at")
    assert [r[0] for r in rows] == ["pending", "firing", "resolved"]
    topic = [m for m in _read_alert_topic(broker) if m["rule"] == "high_failure_rate"]
    assert [m["change"] for m in topic] == ["pending", "firing", "resolved"]

    # the CLI reads the history through the worker
    assert [r["change"] for r in _cli_list(w2)] == ["resolved", "firing", "pending"]
    assert _cli_list(w2, "--firing") == []


def test_anomaly_rule_ignores_steady_noise_and_fires_on_a_spike(
    broker: EmbeddedBroker,
    make_worker: Callable[..., Worker],
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(ANOMALY_RULES)
    w = make_worker(
        TASKPULSE_ROLES="ingest,alerts",
        TASKPULSE_ALERT_RULES=str(rules),
        TASKPULSE_ALERT_INTERVAL_S="0.5",
        TASKPULSE_ALERT_WEBHOOK_URL=receiver.url("/hook"),
    ).start()
    wait_for(lambda: _evaluated(w) > 0, 60, "the alerts role to lead and evaluate")

    # steady noise: 8..12 failures a minute for the last 12 minutes, and as many this minute
    now = time.time()
    minute = int(now // 60) * 60
    noise = [10, 8, 12, 9, 11, 10, 12, 8, 10, 11, 9, 10]
    events: list[dict[str, Any]] = []
    for k, n in enumerate(noise):
        start = minute - (len(noise) - k) * 60
        for i in range(n):
            ts = datetime.fromtimestamp(start + 1 + i * 4, UTC)
            events += _finished(1, False, f"noise-{k}-{i}", ts)
    events += _finished(9, False, "noise-now")
    publish(broker, events)
    total = len(events)
    wait_for(
        lambda: w.scalar("SELECT sum(count) FROM taskpulse.rollups WHERE granularity = '1m' "
                         "AND event_type = 'task.failed'") == total,
        30, "the noise in the rollups",
    )  # fmt: skip
    start_evals = _evaluated(w)
    wait_for(lambda: _evaluated(w) >= start_evals + 6, 30, "several evaluations over the noise")
    obs = _alert_status(w)["observations"]["failure_spike"]
    assert obs and "z" in obs[0], obs  # the baseline is established: the rule is live, not starved
    assert obs[0]["z"] < 4 and not obs[0]["breached"]  # (a new minute starting empty gives z < 0)
    assert receiver.bodies("/hook") == []
    assert w.scalar("SELECT count() FROM taskpulse.alerts") == 0

    spike_at = time.time()
    publish(broker, _finished(80, False, "spike"))
    fired = wait_for(lambda: _webhook(receiver, "firing", "failure_spike"), 30, "the spike alert")
    print(f"\nspike → webhook {receiver.received('/hook')[0].at - spike_at:.2f}s")
    alert = fired[0]["alert"]
    assert alert["value"] >= 80
    assert "z=" in alert["summary"]

    # /api/v1/anomalies serves each evaluation's value, baseline and z-score as stored;
    # /api/v1/alerts the alert firing now and the history of changes
    until = datetime.now(UTC)
    time.sleep(2)  # the evaluations before `until` are written by now (each in its own round)
    served = all_pages(w, "/api/v1/anomalies", rule="failure_spike", until=until.isoformat(), limit=25)
    stored = w.sql("SELECT toUnixTimestamp64Milli(at), value, baseline, zscore, breached FROM "
                   "taskpulse.anomaly_evaluations WHERE rule = 'failure_spike' "
                   f"AND at < '{until:%Y-%m-%d %H:%M:%S.%f}' ORDER BY at DESC")  # fmt: skip
    assert len(served) == len(stored) > 6
    assert [[_ms(a["at"]), a["value"], a["baseline"], a["zscore"], a["breached"]] for a in served] == stored
    spike = [a for a in served if a["breached"]]
    assert spike and spike[0]["zscore"] > 4 and spike[0]["value"] >= 80
    firing = get(w, "/api/v1/alerts")["items"]
    assert [(a["rule"], a["state"]) for a in firing] == [("failure_spike", "firing")]
    history = all_pages(w, "/api/v1/alerts", state="history", limit=1)
    changes = w.sql("SELECT rule, change FROM taskpulse.alerts ORDER BY at DESC, fingerprint DESC, change DESC")
    assert [[a["rule"], a["change"]] for a in history] == changes


BAD_RULES = """
rules:
  - name: fine
    measure: count
  - name: broken_rule
    measure: failure_rate
    op: "=>"
    threshold: 0.2
"""


def test_worker_refuses_a_malformed_rules_file(broker: EmbeddedBroker, tmp_path: Path) -> None:
    rules = tmp_path / "bad-rules.yml"
    rules.write_text(BAD_RULES)
    env = {
        **os.environ,
        "TASKPULSE_KAFKA_URL": broker.url,
        "TASKPULSE_DATA_DIR": str(tmp_path / "data"),
        "TASKPULSE_ROLES": "alerts",
        "TASKPULSE_ALERT_RULES": str(rules),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "worker"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = " ".join(proc.stderr.split())  # rich wraps long lines
    assert f"{rules}: rule 'broken_rule' (rules[1]), field 'op'" in text, proc.stderr
    assert "Input should be '>', '>=', '<', '<=', '==' or '!='" in text


DLQ_RULES = """
routing:
  low: [webhook, log]
rules:
  - name: dlq_rate_high
    measure: dlq_rate_per_minute
    window: 1m
    op: ">"
    threshold: 5
    severity: low
    annotations: {summary: "{value} rejects/min"}
"""


def test_dlq_rate_rule_watches_the_pipeline_itself(
    broker: EmbeddedBroker,
    make_worker: Callable[..., Worker],
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(DLQ_RULES)
    w = make_worker(
        TASKPULSE_ROLES="ingest,alerts",
        TASKPULSE_ALERT_RULES=str(rules),
        TASKPULSE_ALERT_INTERVAL_S="0.5",
        TASKPULSE_ALERT_WEBHOOK_URL=receiver.url("/hook"),
        TASKPULSE_ALERT_WEBHOOK_FORMAT="slack",
    ).start()
    wait_for(lambda: _evaluated(w) > 0, 60, "the alerts role to lead and evaluate")
    publish_raw(broker, [("taskpulse.events.task", b"{not json")] * 12)
    got = wait_for(lambda: receiver.bodies("/hook"), 30, "the DLQ alert at the webhook (Slack format)")
    assert got[0]["text"] == "[FIRING] 12 rejects/min"
    assert got[0]["attachments"][0]["title"] == "dlq_rate_high (low)"
    wait_for(lambda: "alert FIRING dlq_rate_high [low] 12 rejects/min" in w.log(), 10, "the log notifier's line")


def test_an_alerts_only_worker_leads_and_evaluates(make_worker: Callable[..., Worker]) -> None:
    w = make_worker(TASKPULSE_ROLES="alerts", TASKPULSE_ALERT_INTERVAL_S="0.5").start()
    wait_for(lambda: _evaluated(w) > 2, 60, "the alerts-only worker to evaluate the shipped rules")
    st = _alert_status(w)
    assert st["rules_file"] == "deploy/alerts/rules.yml" and st["rules"] == 9
    assert st["errors"] == {} and st["firing"] == []
    # without Alertmanager / webhook URLs the routes fall back to the log, and it says so
    assert st["unconfigured_notifiers"] == ["alertmanager", "webhook"]
    with urllib.request.urlopen(f"{w.api}/metrics", timeout=5) as r:
        body = r.read().decode()
    assert "taskpulse_alert_evaluations_total" in body


STATE_RULES = """
routing:
  high: [webhook]
  medium: [webhook]
rules:
  - name: queue_depth_high
    measure: queue_depth
    op: ">"
    threshold: 3
    severity: high
    annotations: {summary: "{value} tasks queued"}
  - name: agent_overload
    measure: agent_active_tasks
    group_by: [agent]
    op: ">"
    threshold: 10
    severity: medium
    annotations: {summary: "{agent} has {value} active tasks"}
"""


def test_state_rules_on_the_correlated_task_and_agent_tables(
    broker: EmbeddedBroker,
    make_worker: Callable[..., Worker],
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(STATE_RULES)
    w = make_worker(
        TASKPULSE_ROLES="ingest,correlate,alerts",
        TASKPULSE_ALERT_RULES=str(rules),
        TASKPULSE_ALERT_INTERVAL_S="0.5",
        TASKPULSE_ALERT_WEBHOOK_URL=receiver.url("/hook"),
    ).start()
    wait_for(lambda: _evaluated(w) > 0, 60, "the alerts role to lead and evaluate")
    created = [make_event("task.created", f"q-{i}", {"task_type": "research", "request": "r"}) for i in range(5)]
    busy = [make_event("agent.heartbeat", a, {"active_tasks": n}) for a, n in (("busy", 14), ("calm", 2))]
    publish(broker, created + busy)

    def firing(rule: str) -> list[dict[str, Any]]:
        return [b["alert"] for b in _webhook(receiver, "firing", rule)]

    q = wait_for(lambda: firing("queue_depth_high"), 60, f"the queue depth alert\n{w.log()}")
    assert q[0]["summary"] == "5 tasks queued"
    o = wait_for(lambda: firing("agent_overload"), 30, "the agent overload alert")
    assert [a["group_labels"] for a in o] == [{"agent": "busy"}] and o[0]["summary"] == "busy has 14 active tasks"

    # the queue drains (tasks assigned) and the agent calms down: both resolve
    assigned = [make_event("task.assigned", f"q-{i}", {"agent_id": "calm", "confidence": 0.9}) for i in range(5)]
    publish(broker, [*assigned, make_event("agent.heartbeat", "busy", {"active_tasks": 3})])
    wait_for(lambda: _webhook(receiver, "resolved", "queue_depth_high"), 60, "the queue depth resolve")
    wait_for(lambda: _webhook(receiver, "resolved", "agent_overload"), 30, "the overload resolve")
    assert len(firing("queue_depth_high")) == 1 and len(firing("agent_overload")) == 1
