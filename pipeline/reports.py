"""Reports end to end: run the analytics queries (through any query function: the CLI's
``Querier``, or the worker's store), compute KPIs and forecasts, render the charts
(``pipeline.charts``) and the report (``pipeline.core.analytics.report``), write the HTML
and markdown files; and the schedule (cron expressions read with ``croniter``) the leading
worker follows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from croniter import croniter

from pipeline.core.analytics import forecast as fc
from pipeline.core.analytics import kpis, queries
from pipeline.core.analytics import report as rep
from pipeline.core.periods import Period, period, zone_info

#: runs one query: (text, parameters) → rows
QueryFn = Callable[[str, dict[str, Any]], list[Any]]

#: history the forecasts learn from
FORECAST_DAYS = 28


def _run(query: QueryFn, qs: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, list[list[Any]]]:
    return {name: [list(r) for r in query(sql, params)] for name, (sql, params) in qs.items()}


def kpi_values(query: QueryFn, db: str, p: Period, filters: dict[str, str] | None = None) -> dict[str, Any]:
    """The KPIs of period ``p`` as named values (what an API ``kpis`` resource answers)."""
    return kpis.summarize(p, _run(query, queries.kpi_queries(db, p, filters)))


def report_period(kind: str, now_ms: int, since_ms: int | None, until_ms: int | None, tz: str) -> Period:
    """The period of a ``kind`` report: ``custom`` is ``[since, until or now)``; the others are
    ``pipeline.core.periods`` (ending at ``until`` when given)."""
    if kind == "custom":
        if since_ms is None:
            raise ValueError("a custom report needs --since (and --until, default now)")
        end = now_ms if until_ms is None else until_ms
        if end <= since_ms:
            raise ValueError("--until must be after --since")
        zone_info(tz)
        return Period("custom", since_ms, end, tz)
    if since_ms is not None:
        raise ValueError(f"--since is for custom reports; a {kind} report ends at --until (default now)")
    return period(kind, now_ms, until_ms, tz)


def gather(
    query: QueryFn, db: str, kind: str, p: Period, filters: dict[str, str], now_ms: int, groups: tuple[str, ...] = ()
) -> rep.ReportInput:
    """Everything the report shows, from the database."""
    prev = Period(p.name, p.start_ms - (p.end_ms - p.start_ms), p.start_ms, p.tz)
    cur_k = _run(query, queries.kpi_queries(db, p, filters))
    prev_k = _run(query, queries.kpi_queries(db, prev, filters))
    extra = _run(query, queries.report_extra_queries(db, p, filters))
    prev_extra = _run(query, {"health": queries.report_extra_queries(db, prev, filters)["health"]})
    cal = _run(query, queries.calibration_queries(db, p, filters))
    hist = _run(query, queries.history_queries(db, p.end_ms, FORECAST_DAYS, filters))
    volume = fc.volume_forecast(
        fc.hourly_series(hist["hourly_volume"], p.end_ms - FORECAST_DAYS * 86_400_000, p.end_ms)
        if hist["hourly_volume"] else []
    )  # fmt: skip
    completion = fc.ewma_forecasts(hist["cycle_times"])
    etas = [fc.group_eta(g, query(*queries.group_open_tasks(db, g)), completion, now_ms) for g in groups]
    return rep.ReportInput(
        period=p,
        kpis=kpis.summarize(p, cur_k),
        prev_kpis=kpis.summarize(prev, prev_k),
        agents=kpis.summarize_agents(_run(query, queries.agent_queries(db, p, filters))),
        prev_agents=kpis.summarize_agents(_run(query, queries.agent_queries(db, prev, filters))),
        series=extra["series"],
        by_type=extra["by_type"],
        top_errors=extra["top_errors"],
        health=extra["health"][0] if extra["health"] else [],
        prev_health=prev_extra["health"][0] if prev_extra["health"] else [],
        progress_events=int(extra["progress"][0][0]) if extra["progress"] else 0,
        reliability=cal["reliability"],
        choice=cal["choice"],
        volume=volume if volume.history else None,
        completion=completion,
        groups=etas,
        filters=dict(filters),
        finished_span=extra["finished_span"][0] if extra["finished_span"] else [],
    )


def render_charts(r: rep.ReportInput, wanted: set[str]) -> dict[str, str]:
    """The SVG of each wanted chart ('' when it has no data)."""
    from pipeline import charts  # matplotlib loads only when a report is drawn

    out: dict[str, str] = {}
    times = [int(row[0]) for row in r.series]
    unit = "hour" if r.period.end_ms - r.period.start_ms <= 3 * 86_400_000 else "day"
    if "throughput" in wanted:
        out["throughput"] = charts.time_series(
            f"Tasks per {unit}", times,
            {"finished": [row[1] for row in r.series], "succeeded": [row[2] for row in r.series],
             "failed": [row[3] for row in r.series]}, bars=True)  # fmt: skip
    if "cycle_time" in wanted:
        out["cycle_time"] = charts.time_series(
            f"Average cycle time per {unit} (s)", times,
            {"cycle time": [None if row[4] is None else float(row[4]) / 1000 for row in r.series]})  # fmt: skip
    if "cost" in wanted:
        out["cost"] = charts.time_series(f"Cost per {unit}", times, {"cost": [row[5] for row in r.series]}, bars=True)
    if "agent_success" in wanted:
        out["agent_success"] = charts.bars("Success rate per agent", [a["agent"] for a in r.agents],
                                           [a["success_rate"] for a in r.agents], percent=True)  # fmt: skip
    if "by_type" in wanted:
        out["by_type"] = charts.bars("Success rate per task type", [str(t[0]) for t in r.by_type],
                                     [int(t[2]) / int(t[1]) if int(t[1]) else None for t in r.by_type],
                                     percent=True)  # fmt: skip
    if "reliability" in wanted:
        curves: dict[str, list[tuple[float, float, int]]] = {}
        for agent, _bucket, n, pred, obs in r.reliability:
            curves.setdefault(str(agent), []).append((float(pred), float(obs), int(n)))
        out["reliability"] = charts.reliability_diagram(curves)
    if "forecast" in wanted and r.volume:
        recent = r.volume.history[-72:]
        out["forecast"] = charts.forecast_chart("Task volume: last 3 days and forecast", recent, r.volume.points)
    return out


@dataclass
class Rendered:
    kind: str
    period: Period
    markdown: str
    html: str
    sections: list[rep.Section]
    input: rep.ReportInput


def build_report(
    query: QueryFn, db: str, kind: str, p: Period, filters: dict[str, str], now_ms: int, groups: tuple[str, ...] = ()
) -> Rendered:
    r = gather(query, db, kind, p, filters, now_ms, groups)
    sections = rep.build(kind, r)
    svgs = render_charts(r, rep.charts_used(sections))
    return Rendered(kind, p, rep.to_markdown(kind, r, sections), rep.to_html(kind, r, sections, svgs, now_ms),
                    sections, r)  # fmt: skip


def file_stem(kind: str, p: Period) -> str:
    """``daily-20261130T0600Z``: the report type and the end of its period (UTC)."""
    end = datetime.fromtimestamp(p.end_ms / 1000, tz=zone_info("UTC"))
    return f"{kind}-{end.strftime('%Y%m%dT%H%MZ')}"


def write_report(directory: Path, r: Rendered) -> tuple[Path, Path]:
    """Write ``<stem>.html`` and ``<stem>.md`` into ``directory`` (created); written to a
    temporary name first, so a reader never sees half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = file_stem(r.kind, r.period)
    out = []
    for ext, text in (("html", r.html), ("md", r.markdown)):
        path = directory / f"{stem}.{ext}"
        tmp = path.with_suffix(f".{ext}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        out.append(path)
    return out[0], out[1]


# ----------------------------------------------------------------------------- schedule

def check_cron(name: str, expr: str) -> None:
    """ValueError naming the setting when ``expr`` is not a cron expression ('' is: never)."""
    if expr.strip() and not croniter.is_valid(expr):
        raise ValueError(f"{name}: {expr!r} is not a cron expression (e.g. '0 6 * * *'; empty: never)")


def previous_run(expr: str, now: datetime) -> datetime:
    """The latest time at or before ``now`` the cron expression names (in ``now``'s zone)."""
    it = croniter(expr, now + timedelta(seconds=1))
    prev: datetime = it.get_prev(datetime)
    return prev


def scheduled_period(kind: str, run_at: datetime, tz: str) -> Period:
    """The period a scheduled run covers: daily and weekly end at the run time; monthly is the
    whole calendar month before the run (seed 000: ``0 9 1 * *`` reports the month just ended)."""
    end_ms = int(run_at.timestamp() * 1000)
    if kind == "monthly":
        local = run_at.astimezone(zone_info(tz))
        month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return period("monthly", end_ms, int(month_start.timestamp() * 1000), tz)
    return period(kind, end_ms, end_ms, tz)


def due(schedules: dict[str, str], last_checked: datetime, now: datetime) -> list[tuple[str, datetime]]:
    """(kind, run time) of every schedule that fell in ``(last_checked, now]``: the latest
    run only (a worker that was away does not write every missed report)."""
    out = []
    for kind, expr in schedules.items():
        if not expr.strip():
            continue
        run_at = previous_run(expr, now)
        if run_at > last_checked:
            out.append((kind, run_at))
    return out


def webhook_payload(r: Rendered, html_path: Path, md_path: Path) -> dict[str, Any]:
    """What the report webhook receives: the report, its period, its files and the headline."""
    return {
        "kind": "taskpulse.report",
        "report": r.kind,
        "period": {"start_ms": r.period.start_ms, "end_ms": r.period.end_ms, "tz": r.period.tz,
                   "text": r.period.describe()},
        "html_path": str(html_path),
        "markdown_path": str(md_path),
        "kpis": r.input.kpis,
        "text": f"taskpulse {r.kind} report ({r.period.describe()}): {html_path}",
    }  # fmt: skip
