"""Periodic reports (seed 000: daily / weekly / monthly; seed 004: issue detection).  Pure:
the markdown made from the answers to ``pipeline.core.tasks.queries.report_queries``; the
CLI runs the queries.

Sections: summary (against the previous period), tasks by type, agent rankings, system
health (DLQ, system errors, alerts), top errors, and findings with recommendations.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.periods import PERIOD_NAMES, Period, period

__all__ = ["PERIOD_NAMES", "Period", "findings", "period", "render"]


def _pct(x: Any) -> str:
    return "–" if x is None or x != x else f"{100 * float(x):.1f}%"


def _s(ms: Any) -> str:
    return "–" if ms is None or ms != ms else f"{float(ms) / 1000:.1f} s"


def _delta(now: float, before: float) -> str:
    if not before:
        return ""
    return f" ({(now - before) / before * 100:+.0f}% vs previous)"


def findings(
    summary: list[Any], agents: list[list[Any]], events: int | None = None, span: list[Any] | None = None
) -> list[str]:
    """Seed 004's issue detection: high abandonment, poor agents, failure and queue problems.
    With no finished task, what the data does hold (``events`` in the period, ``span``: count,
    first and last finish time of every task) decides the advice."""
    out: list[str] = []
    total, ok, failed, abandoned = (int(summary[i] or 0) for i in range(4))
    if total == 0:
        if span and int(span[0] or 0):
            return [f"No task finished in this period; the {int(span[0]):,} finished tasks on record range from "
                    f"{span[1]} to {span[2]} (UTC): choose that period (--end, or another period name)."]
        if events:
            return [f"No task finished in this period, but {events:,} events arrived: tasks are still open, "
                    "or the events carry no task lifecycle (task.created … task.completed)."]
        return ["No task finished in this period and no event arrived: check that services emit "
                "events to this pipeline's Kafka (TASKPULSE_KAFKA_URL)."]
    if abandoned / total > 0.10:
        out.append(f"High abandonment: {_pct(abandoned / total)} of tasks went silent and were abandoned "
                   "(> 10%). Check agent crashes and TASKPULSE_ABANDON_AFTER_S per task type.")  # fmt: skip
    if (failed + abandoned) / total > 0.20:
        out.append(f"Failure rate {_pct((failed + abandoned) / total)} is above 20%: see the top errors below.")
    for agent, n, _ok, rate, _avg, _ab in agents:
        if int(n) >= 5 and rate is not None and float(rate) < 0.5:
            out.append(f"Agent {agent} succeeded in {_pct(rate)} of {n} tasks (< 50%): review its assignments.")
    if not out:
        out.append("No issues detected.")
    return out


def render(p: Period, answers: dict[str, list[list[Any]]]) -> str:
    """The report as markdown."""
    s = answers["summary"][0] if answers["summary"] else [0] * 10
    prev = answers["summary_prev"][0] if answers["summary_prev"] else [0] * 10
    total, ok, failed, abandoned, cancelled = (int(s[i] or 0) for i in range(5))
    lines = [f"# taskpulse {p.name} report", "", f"Period: {p.describe()}", "", "## Summary", ""]
    lines += [
        f"- Tasks finished: {total:,}{_delta(total, float(prev[0] or 0))}",
        f"- Succeeded: {ok:,} ({_pct(ok / total if total else None)}); failed: {failed:,}; "
        f"abandoned: {abandoned:,}; cancelled: {cancelled:,}",
        f"- Cycle time: average {_s(s[5])}, p95 {_s(s[6])}; queue wait average {_s(s[7])}",
        f"- Retries: {int(s[8] or 0):,}; invalid lifecycle transitions: {int(s[9] or 0):,}",
        "", "## Tasks by type", "", "| task type | finished | success rate | avg execution | p95 execution |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for t, n, rate, avg, p95 in answers["by_type"]:
        lines.append(f"| {t or '(none)'} | {int(n):,} | {_pct(rate)} | {_s(avg)} | {_s(p95)} |")
    lines += ["", "## Agents", "", "| agent | finished | completed | success rate | avg handling | abandoned |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for agent, n, done, rate, avg, ab in answers["agents"]:
        lines.append(f"| {agent} | {int(n):,} | {int(done):,} | {_pct(rate)} | {_s(avg)} | {int(ab):,} |")
    dlq = ", ".join(f"{r} {int(n):,}" for r, n in answers["dlq"]) or "none"
    alerts = ", ".join(f"{sev} {int(n):,}" for sev, n in answers["alerts"]) or "none"
    errors = int(answers["system_errors"][0][0]) if answers["system_errors"] else 0
    lines += ["", "## System health", "", f"- Rejected input (DLQ): {dlq}", f"- system.error events: {errors:,}",
              f"- Alerts fired: {alerts}", "", "## Top errors", ""]  # fmt: skip
    lines += [f"- {int(n):,} × {e}" for e, n in answers["top_errors"]] or ["- none"]
    events = int(answers["events"][0][0]) if answers.get("events") else None
    span = answers["finished_span"][0] if answers.get("finished_span") else None
    lines += ["", "## Findings", ""] + [f"- {f}" for f in findings(list(s), answers["agents"], events, span)]
    return "\n".join(lines) + "\n"
