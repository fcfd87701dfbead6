"""Alert notifiers over aiohttp: Prometheus Alertmanager (v2 API), a JSON webhook (plain or
Slack-compatible) and the log, behind a dispatcher that retries with backoff.

Each notifier has its own queue and delivery task: a notifier that is down delays only
its own deliveries (retried with exponential backoff for ``retry_for_s``, then dropped
with an error log), never the rule evaluation nor the other notifiers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp

from pipeline.backoff import Backoff
from pipeline.core.alerts.state import Change, change_json
from pipeline.settings import redact, url_for_display

log = logging.getLogger(__name__)

SLACK_COLORS = {"critical": "#d00000", "high": "#e8590c", "medium": "#f2c744", "low": "#439fe0"}


class NotifyError(Exception):
    """A notification was not accepted (network error or non-2xx answer): retry it.  The
    message never holds the URL's secret parts (``url_for_display`` / ``redact``)."""


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Notifier(Protocol):
    name: str

    async def send(self, changes: Sequence[Change]) -> None: ...


async def _post(
    session: aiohttp.ClientSession, url: str, payload: Any, timeout_s: float, shown: str | None = None
) -> None:
    """POST ``payload``; errors name ``shown`` (default: ``url`` redacted), never the URL's
    secret, and carry no cause (aiohttp's exceptions repeat the full URL)."""
    where = shown if shown is not None else redact(url)
    secrets = (url, url.split("?", 1)[0])
    try:
        async with session.post(url, json=payload, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            if r.status >= 300:
                text = redact((await r.text())[:300], secrets)
                raise NotifyError(f"HTTP {r.status} from {where}: {text}")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        detail = redact(f"{type(exc).__name__}: {exc}", secrets)
        raise NotifyError(f"POST {where} failed: {detail}") from None


@dataclass
class AlertmanagerNotifier:
    """POST /api/v2/alerts.  Firing alerts carry ``endsAt`` = now + ``ttl_s`` and are re-sent
    (``refresh``) before that passes; resolved ones carry their resolve time."""

    url: str
    session: aiohttp.ClientSession
    ttl_s: float = 240.0
    timeout_s: float = 5.0
    name: str = "alertmanager"

    def payload(self, changes: Sequence[Change], now_ms: int) -> list[dict[str, Any]]:
        out = []
        for c in changes:
            a = c.alert
            ends = a.resolved_at if a.state == "resolved" else now_ms + int(self.ttl_s * 1000)
            annotations = {"summary": a.summary, "value": "" if a.value is None else f"{a.value:g}"}
            if a.description:
                annotations["description"] = a.description
            out.append(
                {
                    "labels": {k: str(v) for k, v in a.labels.items()},
                    "annotations": annotations,
                    "startsAt": _iso(a.fired_at or a.active_since or c.at),
                    "endsAt": _iso(ends),
                }
            )
        return out

    async def send(self, changes: Sequence[Change]) -> None:
        now_ms = int(time.time() * 1000)
        url = f"{self.url.rstrip('/')}/api/v2/alerts"
        await _post(self.session, url, self.payload(changes, now_ms), self.timeout_s)


def webhook_payload(c: Change) -> dict[str, Any]:
    status = "resolved" if c.alert.state == "resolved" else "firing"
    return {"version": "1", "source": "taskpulse", "status": status, "change": c.kind, "alert": change_json(c)}


def slack_payload(c: Change) -> dict[str, Any]:
    a = c.alert
    status = "RESOLVED" if a.state == "resolved" else "FIRING"
    fields = [{"title": k, "value": v, "short": True} for k, v in sorted(a.labels.items()) if k != "alertname"]
    if a.value is not None:
        fields.append({"title": "value", "value": f"{a.value:g}", "short": True})
    return {
        "text": f"[{status}] {a.summary}",
        "attachments": [
            {
                "color": "#2eb886" if a.state == "resolved" else SLACK_COLORS.get(a.severity, "#808080"),
                "title": f"{a.rule} ({a.severity})",
                "text": a.description,
                "fields": fields,
                "footer": "taskpulse",
                "ts": c.at // 1000,
            }
        ],
    }


@dataclass
class WebhookNotifier:
    """One POST per change: taskpulse's JSON alert object, or a Slack incoming-webhook payload."""

    url: str
    session: aiohttp.ClientSession
    format: str = "json"
    timeout_s: float = 5.0
    name: str = "webhook"

    async def send(self, changes: Sequence[Change]) -> None:
        for c in changes:
            body = slack_payload(c) if self.format == "slack" else webhook_payload(c)
            await _post(self.session, self.url, body, self.timeout_s, shown=url_for_display(self.url))


@dataclass
class LogNotifier:
    """Alerts as log lines (WARNING for firing, INFO for resolved)."""

    name: str = "log"
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("taskpulse.alerts"))

    async def send(self, changes: Sequence[Change]) -> None:
        for c in changes:
            a = c.alert
            level = logging.INFO if a.state == "resolved" else logging.WARNING
            self.logger.log(
                level, "alert %s %s [%s] %s labels=%s value=%s",
                c.kind.upper(), a.rule, a.severity, a.summary, a.group_labels, a.value,
            )  # fmt: skip


@dataclass
class NotifierStats:
    sent: int = 0
    failed_attempts: int = 0
    dropped: int = 0
    queued: int = 0
    last_error: str | None = None


class Dispatcher:
    """One queue and one delivery task per notifier; retries with exponential backoff."""

    def __init__(
        self,
        notifiers: Sequence[Notifier],
        retry_for_s: float = 600.0,
        backoff_start_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.notifiers = {n.name: n for n in notifiers}
        self.retry_for_s = retry_for_s
        self.backoff_start_s = backoff_start_s
        self.backoff_max_s = backoff_max_s
        self.stats = {n: NotifierStats() for n in self.notifiers}
        self._queues: dict[str, asyncio.Queue[list[Change]]] = {n: asyncio.Queue() for n in self.notifiers}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for name in self.notifiers:
            self._tasks.append(asyncio.create_task(self._deliver(name), name=f"notifier-{name}"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    def submit(self, name: str, changes: list[Change]) -> bool:
        """Queue ``changes`` for notifier ``name``; False if there is no such notifier."""
        q = self._queues.get(name)
        if q is None or not changes:
            return False
        q.put_nowait(changes)
        self.stats[name].queued = q.qsize()
        return True

    def backlog(self, name: str) -> int:
        q = self._queues.get(name)
        return 0 if q is None else q.qsize()

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until every queue is empty and its delivery done."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues.values())), timeout_s)

    async def _deliver(self, name: str) -> None:
        q = self._queues[name]
        notifier = self.notifiers[name]
        st = self.stats[name]
        while True:
            changes = await q.get()
            try:
                await self._send_with_retry(notifier, st, changes)
            finally:
                q.task_done()
                st.queued = q.qsize()

    async def _send_with_retry(self, notifier: Notifier, st: NotifierStats, changes: list[Change]) -> None:
        deadline = time.monotonic() + self.retry_for_s
        backoff = Backoff(self.backoff_start_s, self.backoff_max_s)
        while True:
            try:
                await notifier.send(changes)
            except NotifyError as exc:
                st.failed_attempts += 1
                st.last_error = redact(str(exc))
                if time.monotonic() + backoff.delay > deadline:
                    st.dropped += len(changes)
                    log.error("notifier %s: giving up on %d alert(s): %s", notifier.name, len(changes), exc)
                    return
                log.warning("notifier %s failed (%s); retrying in %.1fs", notifier.name, exc, backoff.delay)
                await backoff.sleep()
            else:
                st.sent += len(changes)
                return
