"""Notifier payloads (Alertmanager v2, JSON webhook, Slack) and the dispatcher: retries with
backoff, and a failing notifier never holds up another."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from pipeline.core.alerts.rules import Observation, parse_rules
from pipeline.core.alerts.state import AlertBook, Change
from pipeline.sinks.notifiers import (
    AlertmanagerNotifier,
    Dispatcher,
    LogNotifier,
    NotifyError,
    slack_payload,
    webhook_payload,
)

RULES = """
rules:
  - name: per_agent
    measure: failure_rate
    group_by: [agent]
    threshold: 0.2
    severity: high
    annotations: {summary: "{agent} failing at {value}", description: "over {window}"}
"""
T0 = 1_700_000_000_000


def changes() -> tuple[Change, Change]:
    rf = parse_rules(RULES)
    b = AlertBook(rf)
    fired = b.evaluate(rf.rules[0], [Observation({"agent": "a1"}, 0.5, True, 30)], T0)[0]
    resolved = b.evaluate(rf.rules[0], [Observation({"agent": "a1"}, 0.1, False, 30)], T0 + 60_000)[0]
    return fired, resolved


def test_alertmanager_payload_is_the_v2_alert_list() -> None:
    fired, resolved = changes()
    am = AlertmanagerNotifier("http://am", session=None, ttl_s=240)  # type: ignore[arg-type]
    [f] = am.payload([fired], T0 + 1000)
    assert f["labels"] == {"alertname": "per_agent", "severity": "high", "agent": "a1"}
    assert f["annotations"] == {"summary": "a1 failing at 0.5", "description": "over 5m", "value": "0.5"}
    assert f["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert f["endsAt"] == "2023-11-14T22:17:21.000Z"  # now + ttl: kept alive by re-sends
    [r] = am.payload([resolved], T0 + 61_000)
    assert r["endsAt"] == "2023-11-14T22:14:20.000Z"  # the resolve time: Alertmanager resolves it
    assert r["startsAt"] == f["startsAt"]


def test_webhook_and_slack_payloads() -> None:
    fired, resolved = changes()
    w = webhook_payload(fired)
    assert w["status"] == "firing" and w["alert"]["rule"] == "per_agent" and w["alert"]["value"] == 0.5
    assert webhook_payload(resolved)["status"] == "resolved"
    s = slack_payload(fired)
    assert s["text"] == "[FIRING] a1 failing at 0.5"
    att = s["attachments"][0]
    assert att["title"] == "per_agent (high)" and {"title": "agent", "value": "a1", "short": True} in att["fields"]
    assert slack_payload(resolved)["text"].startswith("[RESOLVED]")


class Flaky:
    def __init__(self, name: str, failures: int) -> None:
        self.name = name
        self.failures = failures
        self.got: list[str] = []

    async def send(self, changes: Sequence[Change]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise NotifyError("down")
        self.got += [c.kind for c in changes]


class Hanging:
    name = "slow"

    async def send(self, changes: Sequence[Change]) -> None:
        await asyncio.sleep(3600)


async def test_dispatcher_retries_with_backoff_then_delivers() -> None:
    fired, resolved = changes()
    flaky = Flaky("webhook", failures=3)
    d = Dispatcher([flaky], retry_for_s=10, backoff_start_s=0.01, backoff_max_s=0.02)
    d.start()
    d.submit("webhook", [fired])
    d.submit("webhook", [resolved])
    await d.drain(5)
    await d.stop()
    assert flaky.got == ["firing", "resolved"]  # in order, none lost
    assert d.stats["webhook"].failed_attempts == 3 and d.stats["webhook"].sent == 2


async def test_dispatcher_gives_up_after_retry_for() -> None:
    fired, _ = changes()
    dead = Flaky("webhook", failures=10**6)
    d = Dispatcher([dead], retry_for_s=0.05, backoff_start_s=0.01, backoff_max_s=0.01)
    d.start()
    d.submit("webhook", [fired])
    await d.drain(5)
    await d.stop()
    assert d.stats["webhook"].dropped == 1 and d.stats["webhook"].last_error == "down"


async def test_a_stuck_notifier_does_not_hold_up_the_others() -> None:
    fired, _ = changes()
    fine = Flaky("log", failures=0)
    d = Dispatcher([Hanging(), fine])
    d.start()
    assert d.submit("slow", [fired]) and d.submit("log", [fired])
    for _ in range(100):
        if fine.got:
            break
        await asyncio.sleep(0.01)
    await d.stop()
    assert fine.got == ["firing"]
    assert not d.submit("pager", [fired])  # not configured


async def test_log_notifier(caplog: pytest.LogCaptureFixture) -> None:
    fired, resolved = changes()
    with caplog.at_level(logging.INFO, logger="taskpulse.alerts"):
        await LogNotifier().send([fired, resolved])
    msgs: list[Any] = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert msgs[0][0] == logging.WARNING and "FIRING per_agent [high] a1 failing at 0.5" in msgs[0][1]
    assert msgs[1][0] == logging.INFO and "RESOLVED" in msgs[1][1]
