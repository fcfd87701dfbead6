"""The report schedule: the leading worker (the Faust group leader, like the alerts
evaluator) writes the daily / weekly / monthly reports when their cron expressions
(``TASKPULSE_REPORT_*_CRON``, in ``TASKPULSE_REPORT_TZ``) come due, into
``TASKPULSE_REPORT_DIR``, and posts a summary to ``TASKPULSE_REPORT_WEBHOOK_URL`` when set.

Runs with the alerts role.  A worker that starts after a due time does not write the
missed report (``taskpulse report`` writes any report on demand); a report that fails
(the database unreachable) is retried at the next check until it is written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp

from pipeline.app import Pipeline
from pipeline.core.periods import zone_info
from pipeline.errors import ConfigError
from pipeline.reports import build_report, check_cron, due, scheduled_period, webhook_payload, write_report
from pipeline.settings import redact
from pipeline.sinks.privacy import audit

log = logging.getLogger(__name__)

#: seconds between checks of the schedule
CHECK_S = 20.0


@dataclass
class _State:
    schedules: dict[str, str]
    leader: bool = False
    written: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    next_runs: dict[str, str] = field(default_factory=dict)


def _is_leader(p: Pipeline) -> bool:
    try:
        return bool(p.app.is_leader())
    except Exception:  # noqa: BLE001 - the consumer is not up yet
        return False


def register(p: Pipeline) -> None:
    """Check the schedule settings (refusing to start on a bad one), then run the schedule."""
    s = p.settings
    schedules = {"daily": s.report_daily_cron, "weekly": s.report_weekly_cron, "monthly": s.report_monthly_cron}
    try:
        for kind, expr in schedules.items():
            check_cron(f"TASKPULSE_REPORT_{kind.upper()}_CRON", expr)
        zone_info(s.report_tz)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    st = _State(schedules)

    async def status() -> dict[str, Any]:
        return {"enabled": s.reports_enabled, "leader": st.leader, "directory": str(s.effective_report_dir),
                "schedules": st.schedules, "written": st.written[-10:], "errors": dict(st.errors)}  # fmt: skip

    p.status_sections["reports"] = status
    if not s.reports_enabled:
        return

    @p.app.task  # type: ignore[misc]
    async def report_schedule() -> None:
        await _run(p, st)


async def _run(p: Pipeline, st: _State) -> None:
    s = p.settings
    zone = zone_info(s.report_tz)
    started = datetime.now(zone)
    last = dict.fromkeys(st.schedules, started)
    while True:
        await asyncio.sleep(CHECK_S)
        now = datetime.now(zone)
        st.leader = _is_leader(p)
        if not st.leader:
            last = dict.fromkeys(st.schedules, now)
            continue
        for kind, expr in st.schedules.items():
            for _, run_at in due({kind: expr}, last[kind], now):
                try:
                    await _write(p, st, kind, run_at)
                    st.errors.pop(kind, None)
                except Exception as exc:  # noqa: BLE001 - retried at the next check
                    st.errors[kind] = redact(str(exc))[:500]
                    log.warning("reports: the %s report due at %s failed, retrying: %s", kind, run_at, st.errors[kind])
                    break
            else:
                last[kind] = now


async def _write(p: Pipeline, st: _State, kind: str, run_at: datetime) -> None:
    s = p.settings
    period = scheduled_period(kind, run_at, s.report_tz)

    def query(sql: str, params: dict[str, Any]) -> list[Any]:
        return p.store.rows(sql, params)

    rendered = await asyncio.to_thread(
        build_report, query, s.clickhouse_database, kind, period, {}, int(time.time() * 1000)
    )
    html_path, md_path = await asyncio.to_thread(write_report, s.effective_report_dir, rendered)
    st.written.append({"report": kind, "period": period.describe(), "html": str(html_path), "at": run_at.isoformat()})
    log.info("reports: wrote the %s report (%s) to %s", kind, period.describe(), html_path)
    await asyncio.to_thread(audit, p.store, "scheduler", "admin", "report", f"{kind} {period.describe()}", 1, 200,
                            str(html_path))  # fmt: skip
    hook = s.report_webhook_url.get_secret_value()
    if hook:
        try:
            async with aiohttp.ClientSession() as session, session.post(
                hook, json=webhook_payload(rendered, html_path, md_path),
                timeout=aiohttp.ClientTimeout(total=s.alert_notify_timeout_s),
            ) as r:  # fmt: skip
                if r.status >= 300:
                    raise RuntimeError(f"HTTP {r.status}")
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            # the files are written: the report is not redone for a webhook that failed
            st.errors[f"{kind} webhook"] = redact(str(exc))[:300]
            log.warning("reports: the %s report's webhook failed: %s", kind, st.errors[f"{kind} webhook"])
