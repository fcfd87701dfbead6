"""The analytics reports (seed 000 "Periodic Reports" and "Ad-Hoc Reports"): which sections
each report type has, what each section says, and the two renderings (markdown, and
self-contained HTML with the charts inlined).  Pure: the KPIs, tables and forecasts arrive
computed (``pipeline.reports`` runs the queries and renders the charts).

A section with nothing behind it says "not tracked" and names the event that would feed it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipeline.core.analytics.forecast import CompletionForecast, GroupEta, VolumeForecast
from pipeline.core.periods import Period

#: report type → its sections (seed 000; ``custom`` is the ad-hoc report's analyses),
#: each with the assignment calibration of seed 001
SECTIONS: dict[str, tuple[str, ...]] = {
    "daily": ("executive_summary", "task_completion_statistics", "agent_performance_rankings",
              "system_health_summary", "notable_events", "recommendations", "assignment_calibration"),
    "weekly": ("trend_analysis", "capacity_planning", "quality_metrics", "learning_progress", "cost_analysis",
               "assignment_calibration"),
    "monthly": ("strategic_metrics", "long_term_trends", "agent_development", "system_evolution", "roi_analysis",
                "assignment_calibration"),
    "custom": ("task_analysis", "agent_performance", "system_bottlenecks", "user_satisfaction", "cost_breakdown",
               "assignment_calibration"),
}  # fmt: skip

TITLES = {
    "executive_summary": "Executive summary", "task_completion_statistics": "Task completion statistics",
    "agent_performance_rankings": "Agent performance rankings", "system_health_summary": "System health summary",
    "notable_events": "Notable events", "recommendations": "Recommendations", "trend_analysis": "Trend analysis",
    "capacity_planning": "Capacity planning", "quality_metrics": "Quality metrics",
    "learning_progress": "Learning progress", "cost_analysis": "Cost analysis",
    "strategic_metrics": "Strategic metrics",
    "long_term_trends": "Long-term trends", "agent_development": "Agent development",
    "system_evolution": "System evolution", "roi_analysis": "ROI analysis", "task_analysis": "Task analysis",
    "agent_performance": "Agent performance", "system_bottlenecks": "System bottlenecks",
    "user_satisfaction": "User satisfaction", "cost_breakdown": "Cost breakdown",
    "assignment_calibration": "Assignment calibration",
}  # fmt: skip

#: the charts a report can show (``pipeline.reports`` renders them)
CHARTS = ("throughput", "cycle_time", "agent_success", "by_type", "cost", "forecast", "reliability")


@dataclass
class ReportInput:
    """Everything a report shows, computed."""

    period: Period
    kpis: dict[str, Any]
    prev_kpis: dict[str, Any]
    agents: list[dict[str, Any]]
    prev_agents: list[dict[str, Any]]
    #: (bucket ms, finished, succeeded, failed, avg cycle ms, cost)
    series: list[list[Any]]
    #: (task type, finished, succeeded, avg cycle ms, p95 cycle ms, cost)
    by_type: list[list[Any]]
    top_errors: list[list[Any]]
    #: dlq rows, system.error events, alerts fired, events
    health: list[Any]
    prev_health: list[Any]
    progress_events: int
    #: (agent, bucket, tasks, mean confidence, observed success rate)
    reliability: list[list[Any]]
    #: (chosen top rated, tasks, success rate, mean confidence, mean best alternative confidence)
    choice: list[list[Any]]
    volume: VolumeForecast | None = None
    completion: list[CompletionForecast] = field(default_factory=list)
    groups: list[GroupEta] = field(default_factory=list)
    filters: dict[str, str] = field(default_factory=dict)
    #: (count, first, last finish time) of every finished task on record
    finished_span: list[Any] = field(default_factory=list)


# ----------------------------------------------------------------------------- blocks


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Chart:
    name: str
    caption: str


@dataclass
class NotTracked:
    what: str
    feed: str


Block = str | list[str] | Table | Chart | NotTracked


@dataclass
class Section:
    key: str
    title: str
    blocks: list[Block]


# ----------------------------------------------------------------------------- formatting


def pct(x: Any) -> str:
    return "–" if x is None else f"{100 * float(x):.1f}%"


def secs(ms: Any) -> str:
    if ms is None:
        return "–"
    s = float(ms) / 1000
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def num(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{float(x):,.{digits}f}"


def money(x: Any, currency: str) -> str:
    return "–" if x is None else f"{float(x):,.4f} {currency}".strip()


def _delta(now: Any, before: Any, points: bool = False) -> str:
    if now is None or before is None:
        return ""
    if points:
        return f" ({100 * (float(now) - float(before)):+.1f} pts vs previous)"
    if not before:
        return ""
    return f" ({(float(now) - float(before)) / float(before) * 100:+.0f}% vs previous)"


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _when(ms: int, tz: str = "UTC") -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


# ----------------------------------------------------------------------------- sections


def _headline(r: ReportInput) -> list[str]:
    k, p = r.kpis, r.prev_kpis
    dec_rate = None if k["error_rate"] is None else 1 - k["error_rate"]
    prev_rate = None if p["error_rate"] is None else 1 - p["error_rate"]
    cur = k["currency"]
    return [
        f"Tasks finished: {k['tasks_finished']:,}{_delta(k['tasks_finished'], p['tasks_finished'])}",
        f"Succeeded: {k['tasks_completed']:,} ({pct(_ratio(k['tasks_completed'], k['tasks_finished']))}); "
        f"failed: {k['tasks_failed']:,}; abandoned: {k['tasks_abandoned']:,}; cancelled: {k['tasks_cancelled']:,}",
        f"Success rate: {pct(dec_rate)}{_delta(dec_rate, prev_rate, True)}; first-time success: "
        f"{pct(k['first_time_success_rate'])}",
        f"Throughput: {num(k['throughput_per_hour'])} completed tasks / hour",
        f"Cycle time: p50 {secs(k['cycle_ms']['p50'])}, p95 {secs(k['cycle_ms']['p95'])}"
        f"{_delta(k['cycle_ms']['p50'], p['cycle_ms']['p50'])}",
        f"Error rate: {pct(k['error_rate'])}; MTTR: {secs(k['mttr_ms'])} (recoveries: {k['recoveries']})",
        f"Cost: {money(k['cost_total'], cur)} ({money(k['cost_per_task'], cur)} per task)"
        if k["cost_total"] is not None else "Cost: not tracked (no event reported metrics.cost or priced tokens)",
    ]  # fmt: skip


def _kpi_table(r: ReportInput) -> Table:
    k, p = r.kpis, r.prev_kpis
    cur = k["currency"]

    def row(name: str, key: str, fmt: Any, sub: str | None = None) -> list[str]:
        a = k[key][sub] if sub else k[key]
        b = p[key][sub] if sub else p[key]
        return [name, fmt(a), fmt(b)]

    return Table(["KPI", "this period", "previous period"], [
        row("Throughput (completed / h)", "throughput_per_hour", num),
        row("Cycle time p50", "cycle_ms", secs, "p50"), row("Cycle time p95", "cycle_ms", secs, "p95"),
        row("Wait time p50", "wait_ms", secs, "p50"), row("Processing time p50", "processing_ms", secs, "p50"),
        row("First-time success rate", "first_time_success_rate", pct),
        row("Review pass rate", "review_pass_rate", pct),
        row("User satisfaction (0-10)", "user_satisfaction", num),
        row("Defect rate", "defect_rate", pct), row("Error rate", "error_rate", pct),
        row("Agent uptime", "agent_uptime_rate", pct), row("MTTR", "mttr_ms", secs),
        row("Utilization", "utilization_rate", pct), row("Idle", "idle_rate", pct),
        [f"Cost per task ({cur or 'currency'})", num(k["cost_per_task"], 4), num(p["cost_per_task"], 4)],
        [f"Cost per successful task ({cur or 'currency'})", num(k["cost_per_successful_task"], 4),
         num(p["cost_per_successful_task"], 4)],
        row("Brier score (lower is better)", "brier_score", lambda x: num(x, 3)),
    ])  # fmt: skip


def _agents_table(agents: list[dict[str, Any]]) -> Table:
    return Table(
        ["rank", "agent", "tasks", "success", "first-time", "errors", "avg handling", "uptime", "utilization",
         "MTTR", "Brier", "cost"],
        [[str(i), a["agent"], f"{a['tasks']:,}", pct(a["success_rate"]), pct(a["first_time_success_rate"]),
          pct(a["error_rate"]), secs(a["avg_handling_ms"]), pct(a["uptime_rate"]), pct(a["utilization_rate"]),
          secs(a["mttr_ms"]), num(a["brier_score"], 3), num(a["cost"], 4)]
         for i, a in enumerate(agents, start=1)],
    )  # fmt: skip


def _by_type_table(r: ReportInput) -> Table:
    return Table(["task type", "finished", "success rate", "avg cycle", "p95 cycle", "cost"], [
        [t or "(none)", f"{int(n):,}", pct(int(ok) / int(n) if n else None), secs(avg), secs(p95), num(cost, 4)]
        for t, n, ok, avg, p95, cost in r.by_type
    ])  # fmt: skip


def _health(r: ReportInput) -> list[str]:
    dlq, errors, alerts, events = (int(x or 0) for x in (r.health or [0, 0, 0, 0]))
    k = r.kpis
    return [
        f"Events received: {events:,}; rejected input (DLQ): {dlq:,}",
        f"system.error events: {errors:,}; alerts fired: {alerts:,}",
        f"Agent uptime: {pct(k['agent_uptime_rate'])} over {k['agents_seen']} agents"
        if k["agents_seen"] else "Agent uptime: not tracked (no agent.online / heartbeat / offline events)",
        f"Mean time to recovery (failure → next success per agent): {secs(k['mttr_ms'])}",
    ]  # fmt: skip


def recommendations(r: ReportInput) -> list[str]:
    """What the numbers suggest doing (seed 000 "recommendations", seed 004's issue detection)."""
    k = r.kpis
    out: list[str] = []
    if k["tasks_finished"] == 0:
        span, events = r.finished_span, int((r.health or [0, 0, 0, 0])[3] or 0)
        if span and int(span[0] or 0):
            return [f"No task finished in this period; the {int(span[0]):,} finished tasks on record range from "
                    f"{span[1]} to {span[2]} (UTC): choose that period (--until, --since, or another report type)."]
        if events:
            return [f"No task finished in this period, but {events:,} events arrived: tasks are still open, "
                    "or the events carry no task lifecycle (task.created … task.completed)."]
        return ["No task finished in this period and no event arrived: check that services emit "
                "events to this pipeline's Kafka (TASKPULSE_KAFKA_URL)."]
    if k["abandoned_rate"] is not None and k["abandoned_rate"] > 0.1:
        out.append(f"High abandonment: {pct(k['abandoned_rate'])} of tasks went silent and were abandoned "
                   "(> 10%). Check agent crashes and TASKPULSE_ABANDON_AFTER_S per task type.")  # fmt: skip
    if k["error_rate"] is not None and k["error_rate"] > 0.2:
        out.append(f"Error rate {pct(k['error_rate'])} is above 20%: see the top errors in Notable events.")
    for a in r.agents:
        if a["tasks"] >= 5 and a["success_rate"] is not None and a["success_rate"] < 0.5:
            out.append(f"Agent {a['agent']} succeeded in {pct(a['success_rate'])} of {a['tasks']} tasks: "
                       "review what it is assigned.")  # fmt: skip
        if a["calibrated_tasks"] >= 10 and a["brier_score"] is not None and a["brier_score"] > 0.25:
            out.append(f"Agent {a['agent']}'s confidence predicts its success poorly (Brier {a['brier_score']:.3f} "
                       "> 0.25, no better than always saying 50%): recalibrate or discount its confidence.")
    if k["defect_rate"] is not None and k["defect_rate"] > 0.1:
        out.append(f"Defect rate {pct(k['defect_rate'])}: work is reopened or fails review; add checks before "
                   "completion.")  # fmt: skip
    if k["utilization_rate"] is not None and k["utilization_rate"] > 0.85:
        out.append(f"Agents are busy {pct(k['utilization_rate'])} of their online time: add capacity.")
    if k["unpriced_tokens"]:
        out.append(f"{k['unpriced_tokens']:,} tokens have no price: add their models to TASKPULSE_PRICES.")
    better = [c for c in r.choice if not c[0] and int(c[1]) >= 5]
    if better:
        out.append(f"{int(better[0][1])} tasks went to an agent rated below the best alternative: check the "
                   "assignment rule.")  # fmt: skip
    return out or ["No issues detected."]


def _calibration(r: ReportInput) -> list[Block]:
    k = r.kpis
    if not k["calibrated_tasks"]:
        return [NotTracked("assignment calibration", "task.assigned with the chosen agent's confidence "
                           "(confidence, and evaluations for the other agents), then task.completed / task.failed")]
    blocks: list[Block] = [
        f"Brier score over {k['calibrated_tasks']:,} tasks: {num(k['brier_score'], 3)} (0 is perfect; always "
        "answering 50% scores 0.25). Confidences above 1 are read as percentages.",
        Chart("reliability", "Predicted (mean confidence) vs observed success per confidence bucket; the "
              "diagonal is perfect calibration."),
        Table(["agent", "bucket", "tasks", "predicted", "observed"], [
            [str(a), f"{int(b) / 10:.1f}–{(int(b) + 1) / 10:.1f}", f"{int(n):,}", pct(p), pct(o)]
            for a, b, n, p, o in r.reliability
        ]),
        Table(["agent", "Brier", "tasks"], [
            [a["agent"], num(a["brier_score"], 3), f"{a['calibrated_tasks']:,}"] for a in r.agents
            if a["calibrated_tasks"]
        ]),
    ]  # fmt: skip
    if r.choice:
        blocks.append(Table(["assignment", "tasks", "success rate", "chosen confidence", "best alternative"], [
            ["chosen agent was the top-rated" if top else "an alternative was rated higher", f"{int(n):,}",
             pct(rate), pct(conf), pct(alt)] for top, n, rate, conf, alt in r.choice
        ]))  # fmt: skip
    else:
        blocks.append("Chosen vs best-rated alternative: no task carried other agents' confidence (evaluations).")
    return blocks


def _capacity(r: ReportInput) -> list[Block]:
    k = r.kpis
    blocks: list[Block] = [
        f"Utilization {pct(k['utilization_rate'])}, idle {pct(k['idle_rate'])} of agents' online time; "
        f"throughput {num(k['throughput_per_hour'])} completed tasks / hour."
    ]
    v = r.volume
    if v and v.points:
        blocks.append(Chart("forecast", f"Tasks created per hour and the next {len(v.points)} hours' forecast."))
        err = (f"error on the held-out last {v.holdout_hours} h: MAE {num(v.mae)} tasks/h (naive 'same as last "
               f"hour': {num(v.baseline_mae)})") if v.mae is not None else "too little history to measure its error"
        blocks.append(f"Volume forecast ({v.method}): next {len(v.points)} h ≈ "
                      f"{sum(x for _, x in v.points):,.1f} tasks; {err}.")  # fmt: skip
    else:
        blocks.append(NotTracked("task volume forecast", "task.created events over at least a few hours"))
    if r.completion:
        blocks.append(Table(["task type", "expected completion", "history", "held-out MAE", "relative error"], [
            [f.task_type or "(none)", secs(f.expected_ms), f"{f.tasks:,}", secs(f.mae_ms), pct(f.relative_mae)]
            for f in r.completion
        ]))  # fmt: skip
    return blocks + _group_lines(r)


def _group_lines(r: ReportInput) -> list[Block]:
    """Each requested group's ETA (``--group``)."""
    out: list[Block] = []
    for g in r.groups:
        if not g.open_tasks:
            out.append(f"Group {g.group}: no open task.")
            continue
        eta = _when(g.eta_ms) if g.eta_ms else "unknown (no completion history)"
        out.append(f"Group {g.group}: {g.open_tasks} open tasks ({g.executing} executing), ETA {eta} "
                   "(remaining work by task type / tasks executing).")  # fmt: skip
    return out


def _cost(r: ReportInput) -> list[Block]:
    k = r.kpis
    cur = k["currency"]
    if k["cost_total"] is None:
        return [NotTracked("cost", "metrics.cost (+ metrics.currency) on task events, or token counts "
                           "(metrics.model, input_tokens, output_tokens) with a price table in TASKPULSE_PRICES")]
    blocks: list[Block] = [[
        f"Total: {money(k['cost_total'], cur)}{_delta(k['cost_total'], r.prev_kpis['cost_total'])}",
        f"Per task: {money(k['cost_per_task'], cur)}; per successful task: {money(k['cost_per_successful_task'], cur)}",
        f"Tokens: {k['tokens']:,}" + (f" ({k['unpriced_tokens']:,} without a price)" if k["unpriced_tokens"] else ""),
    ], Chart("cost", f"Cost per {'hour' if _hourly(r) else 'day'} ({cur})."),
        Table(["agent", "tasks", "cost", "per task"], [
            [a["agent"], f"{a['tasks']:,}", num(a["cost"], 4), num(a["cost"] / a["tasks"] if a["cost"] and a["tasks"]
                                                                   else None, 4)] for a in r.agents]),
        _by_type_table(r)]  # fmt: skip
    return blocks


def _hourly(r: ReportInput) -> bool:
    return r.period.end_ms - r.period.start_ms <= 3 * 86_400_000


def _trends(r: ReportInput) -> list[Block]:
    unit = "hour" if _hourly(r) else "day"
    return [
        Chart("throughput", f"Tasks finished, succeeded and failed per {unit}."),
        Chart("cycle_time", f"Average cycle time per {unit}."),
        _kpi_table(r),
    ]


def _agent_development(r: ReportInput) -> list[Block]:
    before = {a["agent"]: a for a in r.prev_agents}
    rows = []
    for a in r.agents:
        b = before.get(a["agent"], {})
        rows.append([a["agent"], f"{a['tasks']:,}", pct(a["success_rate"]), pct(b.get("success_rate")),
                     num(a["brier_score"], 3), num(b.get("brier_score"), 3)])  # fmt: skip
    return [
        Table(["agent", "tasks", "success", "success before", "Brier", "Brier before"], rows),
        NotTracked("skill acquisition and capability expansion", "agent.online with capabilities, re-sent when "
                   "they change, or an agent.self_report carrying a skill / level"),
    ]  # fmt: skip


def _bottlenecks(r: ReportInput) -> list[Block]:
    k = r.kpis
    wait, proc = k["wait_ms"]["p50"], k["processing_ms"]["p50"]
    share = None if wait is None or proc is None or wait + proc == 0 else wait / (wait + proc)
    return [
        [f"Median wait {secs(wait)} vs median processing {secs(proc)}: tasks spend {pct(share)} of that in the queue",
         f"p95 wait {secs(k['wait_ms']['p95'])}; p95 processing {secs(k['processing_ms']['p95'])}",
         f"Utilization {pct(k['utilization_rate'])}"],
        _by_type_table(r),
    ]  # fmt: skip


def _satisfaction(r: ReportInput) -> list[Block]:
    k = r.kpis
    if not k["feedback_responses"]:
        return [NotTracked("user satisfaction", "user.feedback events (score 0-10, task_id)")]
    return [[f"Average score {num(k['user_satisfaction'])} / 10 over {k['feedback_responses']:,} responses"
             f"{_delta(k['user_satisfaction'], r.prev_kpis['user_satisfaction'])}"]]


def _quality(r: ReportInput) -> list[Block]:
    k = r.kpis
    out: list[Block] = [[
        f"First-time success rate: {pct(k['first_time_success_rate'])}",
        f"Review pass rate: {pct(k['review_pass_rate'])} of {k['reviews']:,} reviews"
        if k["reviews"] else "Review pass rate: not tracked (no task.review events with passed)",
        f"Defect rate (completed then reopened, or failed review): {pct(k['defect_rate'])} ({k['defects']:,})",
        f"Error rate: {pct(k['error_rate'])}",
    ]]  # fmt: skip
    out += _satisfaction(r)
    return out


def _section_blocks(key: str, r: ReportInput) -> list[Block]:
    k = r.kpis
    if key == "executive_summary":
        return [_headline(r)]
    if key in ("task_completion_statistics", "task_analysis"):
        return [Chart("throughput", "Tasks finished, succeeded and failed."), Chart("by_type", "Success rate by "
                "task type."), _by_type_table(r), *_group_lines(r)]  # fmt: skip
    if key in ("agent_performance_rankings", "agent_performance"):
        if not r.agents:
            return [NotTracked("agent rankings", "task.assigned (agent_id) on finished tasks")]
        return [Chart("agent_success", "Success rate per agent."), _agents_table(r.agents)]
    if key == "system_health_summary":
        return [_health(r)]
    if key == "notable_events":
        items = [f"{int(n):,} × {e}" for e, n in r.top_errors] or ["no task errors"]
        items.append(f"Recoveries after failures: {k['recoveries']}; defects: {k['defects']}")
        return [items]
    if key == "recommendations":
        return [recommendations(r)]
    if key == "trend_analysis":
        return _trends(r)
    if key == "capacity_planning":
        return _capacity(r)
    if key == "quality_metrics":
        return _quality(r)
    if key == "learning_progress":
        return [NotTracked("learning progress", "an agent.self_report (or agent.heartbeat) carrying "
                           "metrics.performance_data.skill_scores, or a learning milestone event")]
    if key in ("cost_analysis", "cost_breakdown"):
        return _cost(r)
    if key == "strategic_metrics":
        return [_headline(r), _kpi_table(r)]
    if key == "long_term_trends":
        return _trends(r)[:2] + _capacity(r)[1:]
    if key == "agent_development":
        return _agent_development(r)
    if key == "system_evolution":
        prev = r.prev_health or [0, 0, 0, 0]
        now = r.health or [0, 0, 0, 0]
        return [[f"Events: {int(now[3] or 0):,}{_delta(now[3], prev[3])}",
                 f"Rejected input (DLQ): {int(now[0] or 0):,}{_delta(now[0], prev[0])}",
                 f"Alerts fired: {int(now[2] or 0):,}{_delta(now[2], prev[2])}"]]  # fmt: skip
    if key == "roi_analysis":
        blocks: list[Block] = []
        if k["cost_total"] is not None:
            blocks.append(f"Spend this period: {money(k['cost_total'], k['currency'])}.")
        blocks.append(NotTracked("return on investment", "the value a task delivered, e.g. metrics.value (in the "
                                 "cost currency) on task.completed; ROI = (value - cost) / cost"))
        return blocks
    if key == "system_bottlenecks":
        return _bottlenecks(r)
    if key == "user_satisfaction":
        return _satisfaction(r)
    if key == "assignment_calibration":
        return _calibration(r)
    raise ValueError(f"unknown report section {key!r}")


def build(kind: str, r: ReportInput) -> list[Section]:
    """The sections of a ``kind`` report."""
    if kind not in SECTIONS:
        raise ValueError(f"unknown report type {kind!r}: choose {', '.join(SECTIONS)}")
    return [Section(key, TITLES[key], _section_blocks(key, r)) for key in SECTIONS[kind]]


def charts_used(sections: list[Section]) -> set[str]:
    return {b.name for s in sections for b in s.blocks if isinstance(b, Chart)}


# ----------------------------------------------------------------------------- rendering


def _subtitle(kind: str, r: ReportInput) -> str:
    f = ", ".join(f"{k}={v}" for k, v in sorted(r.filters.items()))
    return f"Period: {r.period.describe()}" + (f" · filter: {f}" if f else "")


def to_markdown(kind: str, r: ReportInput, sections: list[Section]) -> str:
    """The report as markdown (charts are named; the HTML file holds them)."""
    lines = [f"# taskpulse {kind} report", "", _subtitle(kind, r), ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, str):
                lines += [b, ""]
            elif isinstance(b, list):
                lines += [f"- {x}" for x in b] + [""]
            elif isinstance(b, Table):
                lines.append("| " + " | ".join(b.header) + " |")
                lines.append("| " + " | ".join("---" for _ in b.header) + " |")
                lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in b.rows]
                if not b.rows:
                    lines.append("| " + " | ".join(["–"] * len(b.header)) + " |")
                lines.append("")
            elif isinstance(b, Chart):
                lines += [f"*Chart: {b.caption} (in the HTML report)*", ""]
            else:
                lines += [f"**Not tracked:** {b.what}. Fed by: {b.feed}.", ""]
    return "\n".join(lines)


_CSS = """body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#111827;max-width:1040px;
margin:24px auto;padding:0 20px}h1{font-size:24px;margin-bottom:2px}h2{font-size:18px;margin-top:28px;
border-bottom:2px solid #e5e7eb;padding-bottom:4px}.sub{color:#4b5563}table{border-collapse:collapse;margin:10px 0;
font-size:13px}th,td{border-bottom:1px solid #e5e7eb;padding:4px 10px;text-align:right}th:first-child,
td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}th{background:#f9fafb}figure{margin:12px 0}
figcaption{color:#4b5563;font-size:12px}figure svg{max-width:100%;height:auto}.nt{background:#fef3c7;
border-left:4px solid #d97706;padding:6px 10px}.nochart{color:#6b7280;font-style:italic}"""


def to_html(kind: str, r: ReportInput, sections: list[Section], charts: dict[str, str], generated_ms: int) -> str:
    """The report as one self-contained HTML page: inline CSS, charts as inline SVG."""
    e = html.escape
    out = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>taskpulse {e(kind)} report</title><style>{_CSS}</style></head><body>",
        f"<h1>taskpulse {e(kind)} report</h1>", f'<p class="sub">{e(_subtitle(kind, r))} · generated '
        f"{e(_when(generated_ms))}</p>",
    ]  # fmt: skip
    for s in sections:
        out.append(f'<section id="{e(s.key)}"><h2>{e(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, str):
                out.append(f"<p>{e(b)}</p>")
            elif isinstance(b, list):
                out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b) + "</ul>")
            elif isinstance(b, Table):
                head = "".join(f"<th>{e(h)}</th>" for h in b.header)
                body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif isinstance(b, Chart):
                svg = charts.get(b.name, "")
                inner = svg if svg else '<p class="nochart">no data for this chart in the period</p>'
                out.append(f'<figure data-chart="{e(b.name)}">{inner}<figcaption>{e(b.caption)}</figcaption></figure>')
            else:
                out.append(f'<p class="nt"><b>Not tracked:</b> {e(b.what)}. Fed by: {e(b.feed)}.</p>')
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)
