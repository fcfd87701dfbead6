"""What the live web UI shows, as queries (text plus parameters, bound by the ClickHouse
client) and the pure functions that shape their rows into the snapshot the UI's
Server-Sent Events carry: the overview cards, the task board (one column per lifecycle
state), the agent grid, throughput and latency per minute over the last hour, firing
alerts, active groups with their ETA.  The browser computes nothing from these numbers but
their layout.  Pure: no I/O, no clock reads (``now_ms`` is passed in).

Definitions (the README's "Web UI" section says the same):
- active tasks: tasks not finished (any state but COMPLETED, FAILED, CANCELLED, ABANDONED);
- done today / success rate: tasks finished since 00:00 UTC, successful ones / all of them;
- p95 time: the 95th percentile of execution time (started → finished) of the tasks
  finished in the last hour;
- the board: every open task, and the tasks finished in the last hour, by current state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from pipeline.core.alerts import api_queries as alert_queries
from pipeline.core.tasks.timeline import timeline

Query = tuple[str, dict[str, Any]]

#: the board's columns, in lifecycle order (the last five: branches and ends)
BOARD_STATES = (
    "CREATED", "QUEUED", "ASSIGNED", "EXECUTING", "REVIEWING", "COMPLETED",
    "RETRY", "PAUSED", "REJECTED", "FAILED", "CANCELLED", "ABANDONED",
)  # fmt: skip
#: cards shown per board column (the column's count is always the full count)
CARDS_PER_COLUMN = 25
#: the charts' span and step
CHART_SPAN_S = 3600
CHART_STEP_S = 60
#: how long finished tasks stay on the board
BOARD_RECENT_S = 3600
#: firing alerts listed at most (the card counts up to this)
MAX_ALERTS = 100


@dataclass(frozen=True)
class BoardFilter:
    """The board's filters (empty: all)."""

    task_type: str = ""
    agent: str = ""
    group: str = ""

    @classmethod
    def of(cls, task_type: str | None, agent: str | None, group: str | None) -> BoardFilter:
        return cls((task_type or "")[:200], (agent or "")[:200], (group or "")[:200])

    def where(self, params: dict[str, Any]) -> str:
        parts = []
        for column, value, name in (
            ("task_type", self.task_type, "f_type"), ("agent", self.agent, "f_agent"),
            ("group_key", self.group, "f_group"),
        ):  # fmt: skip
            if value:
                parts.append(f"{column} = %({name})s")
                params[name] = value
        return "".join(f" AND {p}" for p in parts)


def _on_board(params: dict[str, Any]) -> str:
    params["recent"] = BOARD_RECENT_S
    return "(NOT finished OR last_event_at >= now64(3) - toIntervalSecond(%(recent)s))"


def board_counts(db: str, f: BoardFilter) -> Query:
    """(state, tasks) on the board (what ``board_cards``' counts must equal)."""
    params: dict[str, Any] = {}
    where = _on_board(params) + f.where(params)
    return f"SELECT state, count() FROM {db}.tasks FINAL WHERE {where} GROUP BY state", params


def board_cards(db: str, f: BoardFilter) -> Query:
    """The most recently active tasks of each board column (``CARDS_PER_COLUMN`` each), each
    row with its column's full count: one query, so counts and cards are of the same moment."""
    params: dict[str, Any] = {"per": CARDS_PER_COLUMN}
    where = _on_board(params) + f.where(params)
    return (
        "SELECT task_id, state, task_type, agent, group_key, toUnixTimestamp64Milli(last_event_at), progress, "
        f"retry_count, invalid_transitions, count() OVER (PARTITION BY state) FROM {db}.tasks FINAL WHERE {where} "
        "ORDER BY last_event_at DESC, task_id LIMIT %(per)s BY state",
        params,
    )


def task_kpis(db: str) -> Query:
    """(active, finished today, successful today, p95 execution ms of the last hour)."""
    return (
        f"SELECT (SELECT count() FROM {db}.tasks FINAL WHERE NOT finished), count(), countIf(outcome = 'success'), "
        "quantileExactIf(0.95)(execution_ms, execution_ms IS NOT NULL "
        "AND finished_at >= now64(3) - toIntervalSecond(%(span)s)) "
        f"FROM {db}.task_executions FINAL WHERE finished_at >= toStartOfDay(now64(3, 'UTC'))",
        {"span": CHART_SPAN_S},
    )


def agents(db: str) -> Query:
    """The agent grid: (agent, status, last seen ms, active tasks, utilization, success rate
    today, finished today, current task, cpu %, memory MB, uptime s) of every agent, by name."""
    return (
        "SELECT o.agent, o.status, toUnixTimestamp64Milli(o.last_seen), o.active_tasks, o.utilization, "
        "if(o.tasks_finished_today = 0, NULL, o.success_rate), o.tasks_finished_today, ifNull(c.task_id, ''), "
        "o.cpu_percent, o.memory_mb, o.uptime_s "
        f"FROM {db}.agent_overview AS o LEFT JOIN ("
        "SELECT agent, argMax(task_id, last_event_at) AS task_id "
        f"FROM {db}.tasks FINAL WHERE NOT finished AND agent != '' GROUP BY agent"
        ") AS c ON o.agent = c.agent ORDER BY o.agent",
        {},
    )


def per_minute(db: str) -> Query:
    """(minute start ms, succeeded, failed, p50 execution ms, p95 execution ms) of the tasks
    finished in each minute of the last hour."""
    return (
        "SELECT toUnixTimestamp(toStartOfMinute(finished_at)) * 1000 AS m, countIf(outcome = 'success'), "
        "countIf(outcome != 'success'), quantileExactIf(0.5)(execution_ms, execution_ms IS NOT NULL), "
        "quantileExactIf(0.95)(execution_ms, execution_ms IS NOT NULL) "
        f"FROM {db}.task_executions FINAL WHERE finished_at >= now64(3) - toIntervalSecond(%(span)s) "
        "GROUP BY m ORDER BY m",
        {"span": CHART_SPAN_S + CHART_STEP_S},
    )


def firing_alerts(db: str) -> Query:
    """Every alert firing now, newest first: the query of ``/api/v1/alerts?firing=true``
    (``ALERT_COLUMNS``, then its sort key)."""
    return alert_queries.alerts_page(db, True, (), (), None, MAX_ALERTS - 1)


def groups(db: str) -> Query:
    """Groups with unfinished tasks, or finished within the board's hour: (group, total,
    pending, in progress, completed, failed, percentage, ETA ms)."""
    return (
        "SELECT group_key, total, pending, in_progress, completed, failed, percentage, "
        "if(estimated_completion IS NULL, NULL, toUnixTimestamp64Milli(estimated_completion)) "
        f"FROM {db}.task_groups WHERE pending + in_progress > 0 "
        "OR last_finished_at >= now64(3) - toIntervalSecond(%(recent)s) "
        "ORDER BY pending + in_progress = 0, first_created_at DESC LIMIT 8",
        {"recent": BOARD_RECENT_S},
    )


def filter_options(db: str) -> Query:
    """(kind, value) of the task types, agents and groups on the board."""
    params: dict[str, Any] = {}
    on = _on_board(params)
    return (
        "SELECT 'task_type', task_type FROM (SELECT DISTINCT task_type FROM "
        f"{db}.tasks FINAL WHERE {on} AND task_type != '' ORDER BY task_type LIMIT 200) UNION ALL "
        f"SELECT 'agent', agent FROM (SELECT DISTINCT agent FROM {db}.tasks FINAL WHERE {on} AND agent != '' "
        "ORDER BY agent LIMIT 200) UNION ALL "
        f"SELECT 'group', group_key FROM (SELECT DISTINCT group_key FROM {db}.tasks FINAL WHERE {on} "
        "AND group_key != '' ORDER BY group_key LIMIT 200)",
        params,
    )


# ---------------------------------------------------------------------- shaping


def _num(v: Any) -> float | None:
    """A finite float, or None (ClickHouse's nan of an empty quantile)."""
    if v is None:
        return None
    x = float(v)
    return x if x == x and x not in (float("inf"), float("-inf")) else None


def shape_board(cards: list[tuple[Any, ...]]) -> dict[str, Any]:
    """``{"columns": [{"state", "count", "tasks": [...]}, …]}`` from ``board_cards``' rows:
    every lifecycle column, empty ones too, then any state the table holds that is not
    among them."""
    by_state = {str(c[1]): int(c[9]) for c in cards}
    states = [*BOARD_STATES, *sorted(s for s in by_state if s not in BOARD_STATES)]
    tasks: dict[str, list[dict[str, Any]]] = {s: [] for s in states}
    for task_id, state, task_type, agent, group, last_ms, progress, retries, invalid, _n in cards:
        tasks[str(state)].append({
            "id": task_id, "task_type": task_type, "agent": agent, "group": group, "last_event_ms": int(last_ms),
            "progress": _num(progress), "retries": int(retries), "invalid_transitions": int(invalid),
        })  # fmt: skip
    return {"columns": [{"state": s, "count": by_state.get(s, 0), "tasks": tasks.get(s, [])} for s in states]}


def shape_kpis(task_row: tuple[Any, ...], agent_rows: list[dict[str, Any]], firing: int) -> dict[str, Any]:
    """The overview cards."""
    active, finished, succeeded, p95 = task_row
    status = [str(a["status"]) for a in agent_rows]
    return {
        "active_tasks": int(active),
        "done_today": int(succeeded),
        "finished_today": int(finished),
        "success_rate": (int(succeeded) / int(finished)) if finished else None,
        "p95_execution_ms": _num(p95),
        "agents_online": status.count("online"),
        "agents_busy": status.count("busy"),
        "agents_offline": status.count("offline"),
        "agents_total": len(status),
        "alerts_firing": firing,
    }


def shape_agents(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [
        {
            "agent": agent, "status": status, "last_seen_ms": int(seen), "active_tasks": int(active),
            "utilization": _num(util), "success_rate_today": _num(rate), "finished_today": int(finished),
            "current_task": current or None, "cpu_percent": _num(cpu), "memory_mb": _num(mem),
            "uptime_s": int(up) if up else 0,
        }
        for agent, status, seen, active, util, rate, finished, current, cpu, mem, up in rows
    ]  # fmt: skip


def shape_series(rows: list[tuple[Any, ...]], now_ms: int) -> dict[str, Any]:
    """Per minute of the last hour, gaps filled (a minute without finished tasks has 0
    tasks and no latency): ``{"t": [minute start s], "succeeded", "failed", "p50_ms", "p95_ms"}``."""
    step = CHART_STEP_S * 1000
    end = now_ms // step * step
    start = end - CHART_SPAN_S * 1000 + step
    by_minute = {int(r[0]): r for r in rows}
    out: dict[str, list[Any]] = {"t": [], "succeeded": [], "failed": [], "p50_ms": [], "p95_ms": []}
    for m in range(start, end + step, step):
        r = by_minute.get(m)
        out["t"].append(m // 1000)
        out["succeeded"].append(int(r[1]) if r else 0)
        out["failed"].append(int(r[2]) if r else 0)
        out["p50_ms"].append(_num(r[3]) if r else None)
        out["p95_ms"].append(_num(r[4]) if r else None)
    return out


def shape_alerts(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """``firing_alerts``' rows for the banner."""
    out = []
    for row in rows:
        a = dict(zip(alert_queries.ALERT_COLUMNS, row, strict=False))
        out.append({"rule": a["rule"], "severity": a["severity"], "summary": a["summary"],
                    "fired_ms": _ms(a["fired_at"] or a["at"]), "value": _num(a["value"]),
                    "threshold": _num(a["threshold"])})  # fmt: skip
    return out


def shape_groups(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [
        {"group": g, "total": int(total), "pending": int(pending), "in_progress": int(running),
         "completed": int(done), "failed": int(failed), "percentage": _num(pct), "eta_ms": int(eta) if eta else None}
        for g, total, pending, running, done, failed, pct, eta in rows
    ]  # fmt: skip


def shape_options(rows: list[tuple[Any, ...]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"task_type": [], "agent": [], "group": []}
    for kind, value in rows:
        out[str(kind)].append(str(value))
    return out


# ---------------------------------------------------------------------- a task, an agent


def agent_executions(db: str, agent: str, limit: int = 50) -> Query:
    """The agent's most recently finished tasks: (task, type, outcome, finished ms, queue
    wait, execution ms, retries, confidence, error)."""
    return (
        "SELECT task_id, task_type, outcome, toUnixTimestamp64Milli(finished_at), queue_wait_ms, execution_ms, "
        f"retry_count, confidence, error FROM {db}.task_executions FINAL WHERE agent = %(agent)s "
        "ORDER BY finished_at DESC, task_id LIMIT %(limit)s",
        {"agent": agent, "limit": int(limit)},
    )


def agent_status_changes(db: str, agent: str) -> Query:
    """(event time ms, status) of the agent's status changes in the charts' span, and the
    last one before it (the status the span starts in), in time order."""
    span = {"agent": agent, "span": CHART_SPAN_S}
    since = "now64(3) - toIntervalSecond(%(span)s)"
    base = (
        "SELECT toUnixTimestamp64Milli(event_time) AS t, JSONExtractString(current_state, 'status') AS s "
        f"FROM {db}.events WHERE entity_type = 'agent' AND entity_id = %(agent)s "
        "AND event_type = 'agent.status_changed'"
    )
    return (
        f"SELECT t, s FROM (({base} AND event_time < {since} ORDER BY event_time DESC LIMIT 1) "
        f"UNION ALL ({base} AND event_time >= {since})) ORDER BY t",
        span,
    )


def shape_task(
    task_id: str, row: dict[str, Any] | None, execution: dict[str, Any] | None, events: list[tuple[Any, ...]]
) -> dict[str, Any] | None:
    """A task's page: its row (``api_queries.TASK_COLUMNS``), its finished record
    (``EXECUTION_COLUMNS``: durations, the last assignment) and its events (rows of
    ``api_queries.task_timeline``) in lifecycle order, each with the state it led to, the
    transition marked when the lifecycle does not allow it (``core.tasks.timeline``, as the
    API's), and the event's fields (every agent's confidence on an assignment)."""
    if row is None and not events:
        return None
    parsed = [(str(i), str(et), int(t), _json_object(cs), _json_object(md)) for i, et, t, cs, md in events]
    data = {p[0]: p[3] for p in parsed}
    out: dict[str, Any] = {"id": task_id, "timeline": [
        {"id": s.event_id, "event_type": s.event_type, "time_ms": s.time_ms, "state": s.to_state,
         "invalid": None if s.valid else f"{s.from_state}->{s.to_state}", "data": data[s.event_id]}
        for s in timeline(parsed)
    ]}  # fmt: skip
    if row is not None:
        out.update(
            state=row["state"], task_type=row["task_type"], agent=row["agent"], group=row["group_key"],
            priority=row["priority"], requester=row["requester_id"], created_ms=_ms(row["created_at"]),
            started_ms=_ms(row["started_at"]), finished_ms=_ms(row["finished_at"]),
            last_event_ms=_ms(row["last_event_at"]), progress=_num(row["progress"]), retries=int(row["retry_count"]),
            invalid_transitions=int(row["invalid_transitions"]), finished=bool(row["finished"]),
        )  # fmt: skip
    out["execution"] = None
    if execution is not None:
        x = execution
        out["execution"] = {
            "outcome": x["outcome"], "queue_wait_ms": _num(x["queue_wait_ms"]), "execution_ms": _num(x["execution_ms"]),
            "review_ms": _num(x["review_ms"]), "cycle_ms": _num(x["cycle_ms"]), "paused_ms": _num(x["paused_ms"]),
            "confidence": _num(x["confidence"]),
            "other_agents": {str(k): float(v) for k, v in dict(x["other_agents"]).items()},
            "invalid": list(x["invalid_transition_list"]), "error": x["error"], "request": x["request"],
        }  # fmt: skip
    return out


def _ms(v: Any) -> int | None:
    """A ClickHouse time (a datetime; naive is UTC) as epoch ms."""
    if v is None:
        return None
    if isinstance(v, int | float):
        return int(v)
    return int((v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp() * 1000)


def _json_object(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str | bytes) else text
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def shape_agent(
    agent: str,
    overview: dict[str, Any] | None,
    executions: list[tuple[Any, ...]],
    changes: list[tuple[Any, ...]],
    now_ms: int,
) -> dict[str, Any] | None:
    """An agent's page: its grid entry, recent executions and busy share per minute."""
    if overview is None and not executions:
        return None
    return {
        "agent": agent,
        "overview": overview,
        "executions": [
            {"task_id": t, "task_type": tt, "outcome": o, "finished_ms": int(f), "queue_wait_ms": _num(w),
             "execution_ms": _num(x), "retries": int(r), "confidence": _num(c), "error": e}
            for t, tt, o, f, w, x, r, c, e in executions
        ],  # fmt: skip
        "utilization": busy_share(changes, now_ms),
    }


def busy_share(changes: list[tuple[Any, ...]], now_ms: int) -> dict[str, list[Any]]:
    """Per minute of the charts' span, the share of the minute the agent was ``busy``
    (from its status changes; None before its first known status): ``{"t", "busy"}``."""
    step = CHART_STEP_S * 1000
    end = now_ms // step * step + step
    start = end - CHART_SPAN_S * 1000
    spans: list[tuple[int, int, str]] = []
    ordered = sorted((int(t), str(s)) for t, s in changes)
    for i, (t, s) in enumerate(ordered):
        until = ordered[i + 1][0] if i + 1 < len(ordered) else now_ms
        spans.append((max(t, start), min(until, now_ms), s))
    out: dict[str, list[Any]] = {"t": [], "busy": []}
    for m in range(start, end, step):
        lo, hi = m, min(m + step, now_ms)
        known = busy = 0
        for a, b, s in spans:
            overlap = min(b, hi) - max(a, lo)
            if overlap > 0:
                known += overlap
                busy += overlap if s == "busy" else 0
        out["t"].append(m // 1000)
        out["busy"].append(round(busy / known, 4) if known else None)
    return out
