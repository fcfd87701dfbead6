"""The answers of the KPI queries → named KPI values (JSON-ready: numbers or None when the
period holds nothing to measure).  Pure; the definitions are the README's "KPIs" table."""

from __future__ import annotations

from typing import Any

from pipeline.core.periods import Period


def _f(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    return None if v != v else v


def _ratio(a: Any, b: Any) -> float | None:
    return None if not b else float(a or 0) / float(b)


def _row(answers: dict[str, list[list[Any]]], name: str, width: int) -> list[Any]:
    rows = answers.get(name) or []
    return list(rows[0]) if rows else [None] * width


def summarize(p: Period, answers: dict[str, list[list[Any]]]) -> dict[str, Any]:
    """KPI name → value; each ``*_rate`` is a fraction (0-1), times in milliseconds."""
    hours = (p.end_ms - p.start_ms) / 3_600_000
    finished, completed = _row(answers, "throughput", 2)
    t = _row(answers, "task_times", 10)
    fts_n, fts_ok = _row(answers, "first_time_success", 2)
    rev_n, rev_ok = _row(answers, "review", 2)
    sat_n, sat_avg = _row(answers, "satisfaction", 2)
    del_n, defects = _row(answers, "defects", 2)
    dec_n, errors, abandoned = _row(answers, "errors", 3)
    c_tasks, c_ok, c_costed, c_sum, c_cur, c_tok, c_unpriced = _row(answers, "cost", 7)
    up_ms, seen_ms, agents_seen = _row(answers, "uptime", 3)
    rec_n, mttr = _row(answers, "mttr", 2)
    u_agents, busy_ms, u_up_ms = _row(answers, "utilization", 3)
    brier_n, brier = _row(answers, "brier", 2)
    utilization = _ratio(busy_ms, u_up_ms)
    cost = _f(c_sum) if c_costed else None
    return {
        "tasks_finished": int(finished or 0),
        "tasks_completed": int(completed or 0),
        "tasks_failed": int(errors or 0) - int(abandoned or 0),
        "tasks_abandoned": int(abandoned or 0),
        "tasks_cancelled": int(finished or 0) - int(dec_n or 0),
        "throughput_per_hour": (int(completed or 0) / hours) if hours > 0 else None,
        "cycle_ms": {"avg": _f(t[1]), "p50": _f(t[2]) if t[0] else None, "p95": _f(t[3]) if t[0] else None},
        "wait_ms": {"avg": _f(t[4]), "p50": _f(t[5]) if t[0] else None, "p95": _f(t[6]) if t[0] else None},
        "processing_ms": {"avg": _f(t[7]), "p50": _f(t[8]) if t[0] else None, "p95": _f(t[9]) if t[0] else None},
        "first_time_success_rate": _ratio(fts_ok, fts_n),
        "review_pass_rate": _ratio(rev_ok, rev_n),
        "reviews": int(rev_n or 0),
        "user_satisfaction": _f(sat_avg) if sat_n else None,
        "feedback_responses": int(sat_n or 0),
        "defect_rate": _ratio(defects, del_n),
        "defects": int(defects or 0),
        "error_rate": _ratio(errors, dec_n),
        "abandoned_rate": _ratio(abandoned, dec_n),
        "agent_uptime_rate": _ratio(up_ms, seen_ms),
        "agents_seen": int(agents_seen or 0),
        "mttr_ms": _f(mttr) if rec_n else None,
        "recoveries": int(rec_n or 0),
        "utilization_rate": utilization,
        "idle_rate": None if utilization is None else 1 - utilization,
        "cost_total": cost,
        "currency": (c_cur or "") if cost is not None else "",
        "cost_per_task": _ratio(c_sum, c_tasks) if cost is not None else None,
        "cost_per_successful_task": _ratio(c_sum, c_ok) if cost is not None else None,
        "tokens": int(c_tok or 0),
        "unpriced_tokens": int(c_unpriced or 0),
        "brier_score": _f(brier) if brier_n else None,
        "calibrated_tasks": int(brier_n or 0),
    }


def summarize_agents(answers: dict[str, list[list[Any]]]) -> list[dict[str, Any]]:
    """One dict per agent: tasks, success / error / first-time success rates, handling
    time, cost, uptime, utilization, MTTR, Brier score; best success rate first."""
    agents: dict[str, dict[str, Any]] = {}

    def slot(name: Any) -> dict[str, Any]:
        return agents.setdefault(str(name), {
            "agent": str(name), "tasks": 0, "successes": 0, "success_rate": None, "error_rate": None,
            "first_time_success_rate": None, "avg_handling_ms": None, "cost": None, "uptime_rate": None,
            "utilization_rate": None, "recoveries": 0, "mttr_ms": None, "brier_score": None, "calibrated_tasks": 0,
        })  # fmt: skip

    for agent, n, ok, err, fts, decided, avg_ms, cost in answers.get("agent_tasks", []):
        a = slot(agent)
        a.update(tasks=int(n), successes=int(ok), success_rate=_ratio(ok, decided), error_rate=_ratio(err, decided),
                 first_time_success_rate=_ratio(fts, decided), avg_handling_ms=_f(avg_ms), cost=_f(cost))
    for agent, up, seen in answers.get("agent_uptime", []):
        slot(agent)["uptime_rate"] = _ratio(up, seen)
    for agent, busy, up, _rate in answers.get("agent_utilization", []):
        slot(agent)["utilization_rate"] = _ratio(busy, up)
    for agent, n, avg in answers.get("agent_mttr", []):
        slot(agent).update(recoveries=int(n), mttr_ms=_f(avg))
    for agent, n, brier in answers.get("agent_brier", []):
        slot(agent).update(calibrated_tasks=int(n), brier_score=_f(brier))
    return sorted(agents.values(), key=lambda a: (-(a["success_rate"] or 0), -a["tasks"], a["agent"]))


#: The analytics KPIs the API's ``kpis`` resource serves beside its own (name, unit, what):
#: scalar values of ``summarize``; nested ones are flattened as ``<name>_<stat>``.
API_KPIS: tuple[tuple[str, str, str], ...] = (
    ("first_time_success_rate", "ratio", "Decided tasks that succeeded with no retry / decided tasks."),
    ("review_pass_rate", "ratio", "task.review events that passed / reviews with a verdict."),
    ("user_satisfaction", "score", "Mean score (0-10) of user.feedback events."),
    ("defect_rate", "ratio", "Delivered tasks reopened after COMPLETED or failing a review / delivered tasks."),
    ("error_rate", "ratio", "Decided tasks that failed or were abandoned / decided tasks."),
    ("agent_uptime_rate", "ratio", "Time agents were up / time they were observed."),
    ("mttr_ms", "ms", "Mean time from an agent's first failure after a success to its next success."),
    ("utilization_rate", "ratio", "Time agents executed at least one task / their up time."),
    ("idle_rate", "ratio", "1 - utilization_rate."),
    ("cycle_ms_p50", "ms", "Median cycle time (created → finished) of finished tasks."),
    ("cycle_ms_p95", "ms", "95th percentile cycle time of finished tasks."),
    ("processing_ms_p50", "ms", "Median processing time (started → finished, paused time excluded)."),
    ("cost_total", "currency", "Cost of the finished tasks (null: no event reported usage)."),
    ("cost_per_task", "currency", "Cost / finished tasks."),
    ("cost_per_successful_task", "currency", "Cost / succeeded tasks (failures' cost included)."),
    ("brier_score", "score", "Mean squared error of assignment confidence as a success probability (0 is perfect)."),
)


def api_values(values: dict[str, Any]) -> dict[str, Any]:
    """``summarize``'s answer flattened to the names of ``API_KPIS``."""
    flat: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, dict):
            flat.update({f"{name}_{stat}": v for stat, v in value.items()})
        else:
            flat[name] = value
    return {name: flat.get(name) for name, _, _ in API_KPIS}
