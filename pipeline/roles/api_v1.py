"""The versioned resources under /api/v1 (role reader): tasks, tasks/{id} (with its event
timeline), agents, agents/{id}, groups, groups/{id}, kpis, alerts, anomalies and events.

Wiring only: the SQL is in ``core.tasks.api_queries`` / ``core.tasks.kpis`` /
``core.alerts.api_queries`` / ``core.ingest.queries``, the answer shapes in ``api_models``,
paging in ``core.paging``.  Queries run on the read-only store off the event loop.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query

from pipeline.core.alerts import api_queries as alert_q
from pipeline.core.analytics import kpis as analytics_kpis
from pipeline.core.ingest.queries import entity_events
from pipeline.core.paging import BadCursor, Cursor, page
from pipeline.core.periods import period
from pipeline.core.tasks import api_queries as task_q
from pipeline.core.tasks.kpis import API_PERIODS, KPIS, kpi_query
from pipeline.core.tasks.queries import group_states
from pipeline.core.tasks.timeline import timeline
from pipeline.errors import SinkUnavailable, TaskpulseError
from pipeline.reports import kpi_values
from pipeline.roles import api_models as m
from pipeline.roles.api_auth import COMMON_ERRORS, ApiError, ErrorResponse
from pipeline.settings import redact

if TYPE_CHECKING:
    from pipeline.roles.api import ApiContext

#: Events a task's timeline shows at most, and ``/api/v1/events`` returns at most.
TIMELINE_CAP = 1000
EVENTS_CAP = 1000

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "No such item."}}

Limit = Annotated[int, Query(ge=1, le=1000, description="Items per page (1–1000).")]
CursorParam = Annotated[str | None, Query(alias="cursor", description="The `next_cursor` of the previous page.")]
Many = Annotated[list[str] | None, Query(description="Repeat or comma-separate to match any of several values.")]
When = Annotated[datetime | None, Query(description="ISO 8601 (naive: UTC) or epoch seconds.")]


def iso(v: Any) -> str | None:
    """A ClickHouse time (datetime, or epoch ms) as ISO 8601 UTC with milliseconds."""
    if v is None:
        return None
    if isinstance(v, int | float):
        v = datetime.fromtimestamp(v / 1000, tz=UTC)
    if isinstance(v, datetime):
        v = v if v.tzinfo else v.replace(tzinfo=UTC)
        return v.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return str(v)


def epoch_ms(v: datetime | None) -> int | None:
    if v is None:
        return None
    return int((v if v.tzinfo else v.replace(tzinfo=UTC)).timestamp() * 1000)


def values(raw: list[str] | None) -> tuple[str, ...]:
    """Repeated and comma-separated query values, in order, without blanks."""
    return tuple(p.strip() for item in raw or () for p in item.split(",") if p.strip())


def _json(text: Any) -> dict[str, Any]:
    try:
        doc = orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {"_raw": str(text)}
    return doc if isinstance(doc, dict) else {"_value": doc}


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def _task(r: dict[str, Any]) -> m.Task:
    return m.Task(
        task_id=r["task_id"], state=r["state"], task_type=r["task_type"], group=r["group_key"],
        correlation_id=r["correlation_id"], agent=r["agent"], priority=r["priority"], requester_id=r["requester_id"],
        created_at=iso(r["created_at"]), started_at=iso(r["started_at"]), finished_at=iso(r["finished_at"]),
        last_event_at=iso(r["last_event_at"]), deadline=iso(r["deadline"]), progress=float(r["progress"]),
        retry_count=int(r["retry_count"]), invalid_transitions=int(r["invalid_transitions"]),
        finished=bool(r["finished"]),
    )  # fmt: skip


def _agent(r: dict[str, Any]) -> m.Agent:
    return m.Agent(
        agent=r["agent"], status=r["status"], last_seen=iso(r["last_seen"]), uptime_s=int(r["uptime_s"]),
        active_tasks=int(r["active_tasks"]), cpu_percent=_num(r["cpu_percent"]), memory_mb=_num(r["memory_mb"]),
        utilization=_num(r["utilization"]), tasks_completed_today=int(r["tasks_completed_today"]),
        tasks_finished_today=int(r["tasks_finished_today"]), success_rate=_num(r["success_rate"]),
        avg_handling_ms=_num(r["avg_handling_ms"]),
    )  # fmt: skip


def _group(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "group": r["group_key"], "total": int(r["total"]), "pending": int(r["pending"]),
        "in_progress": int(r["in_progress"]), "completed": int(r["completed"]), "failed": int(r["failed"]),
        "percentage": float(r["percentage"]), "first_created_at": iso(r["first_created_at"]),
        "last_finished_at": iso(r["last_finished_at"]), "estimated_completion": iso(r["estimated_completion"]),
    }  # fmt: skip


def _alert(r: dict[str, Any]) -> m.Alert:
    return m.Alert(
        at=iso(r["at"]), rule=r["rule"], fingerprint=r["fingerprint"], state=r["state"], change=r["change"],
        severity=r["severity"], group_labels=dict(r["group_labels"]), labels=dict(r["labels"]),
        value=_num(r["value"]), threshold=float(r["threshold"]), active_since=iso(r["active_since"]),
        fired_at=iso(r["fired_at"]), resolved_at=iso(r["resolved_at"]), summary=r["summary"],
        description=r["description"],
    )  # fmt: skip


def router(ctx: ApiContext) -> APIRouter:
    r = APIRouter(prefix="/api/v1", responses=COMMON_ERRORS)
    db = ctx.settings.clickhouse_database

    async def off_loop(fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in a thread; database failures as 503 answers."""
        try:
            return await asyncio.to_thread(fn, *args)
        except SinkUnavailable as exc:
            raise ApiError(503, "database_unavailable", redact(str(exc))) from exc
        except TaskpulseError as exc:
            raise ApiError(503, "query_failed", redact(str(exc)), {"Retry-After": "1"}) from exc

    async def rows(q: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
        result = await off_loop(ctx.query_store.read, *q)
        cols = list(result.column_names)
        return [dict(zip(cols, row, strict=True)) for row in result.result_rows]

    def cursor(text: str | None, sort: str, arity: int) -> tuple[Any, ...] | None:
        if text is None:
            return None
        try:
            return Cursor.decode(text, sort, arity).key
        except BadCursor as exc:
            raise ApiError(400, "bad_cursor", str(exc)) from exc

    @r.get("/tasks", response_model=m.TaskPage, tags=["tasks"])
    async def tasks(
        state: Many = None, agent: Many = None, task_type: Many = None, group: Many = None,
        since: When = None, until: When = None,
        finished: Annotated[bool | None, Query(description="Only finished (true) or open (false) tasks.")] = None,
        sort: Annotated[
            Literal["-last_event_at", "last_event_at", "-created_at", "created_at", "task_id", "-task_id"],
            Query(description="Order (`-`: descending); ties broken by task_id."),
        ] = "-last_event_at",
        limit: Limit = 100, cursor_: CursorParam = None,
    ) -> m.TaskPage:  # fmt: skip
        """Tasks (their current state), filtered; `since` / `until` bound the last activity."""
        f = task_q.TaskFilter(
            values(state), values(agent), values(task_type), values(group), epoch_ms(since), epoch_ms(until), finished
        )
        after = cursor(cursor_, sort, 2)
        found = await rows(task_q.tasks_page(db, f, sort, after, limit))  # type: ignore[arg-type]
        shown, nxt = page(found, limit, sort, lambda x: (int(x["k"]), x["task_id"]))
        return m.TaskPage(items=[_task(x) for x in shown], next_cursor=nxt)

    @r.get("/tasks/{task_id}", response_model=m.TaskDetail, responses=NOT_FOUND, tags=["tasks"])
    async def task(task_id: str) -> m.TaskDetail:
        """One task: its record, its execution (once finished) and its event timeline in event-time
        order, each transition marked valid or not."""
        found, execution, events = await asyncio.gather(
            rows(task_q.task_record(db, task_id)), rows(task_q.task_execution(db, task_id)),
            rows(task_q.task_timeline(db, task_id, TIMELINE_CAP + 1)),
        )  # fmt: skip
        if not found:
            raise ApiError(404, "not_found", f"no task {task_id!r}")
        steps = timeline(
            [(e["id"], e["event_type"], int(e["t"]), _json(e["current_state"]), _json(e["metadata"]))
             for e in events[:TIMELINE_CAP]]
        )  # fmt: skip
        ex = None
        if execution:
            x = execution[0]
            ex = m.Execution(
                **{k: x[k] for k in ("outcome", "success", "final_state", "error", "request")},
                finished_at=iso(x["finished_at"]), confidence=_num(x["confidence"]),
                other_agents={str(k): float(v) for k, v in dict(x["other_agents"]).items()},
                queue_wait_ms=_num(x["queue_wait_ms"]), execution_ms=_num(x["execution_ms"]),
                review_ms=_num(x["review_ms"]), cycle_ms=_num(x["cycle_ms"]), paused_ms=float(x["paused_ms"]),
                invalid_transition_list=list(x["invalid_transition_list"]),
            )  # fmt: skip
        return m.TaskDetail(
            task=_task(found[0]), execution=ex,
            timeline=[
                m.TimelineEvent(id=s.event_id, event_type=s.event_type, time=iso(s.time_ms), from_state=s.from_state,
                                to_state=s.to_state, valid_transition=s.valid)
                for s in steps
            ],
            timeline_truncated=len(events) > TIMELINE_CAP,
        )  # fmt: skip

    @r.get("/agents", response_model=m.AgentPage, tags=["agents"])
    async def agents(status: Many = None, limit: Limit = 100, cursor_: CursorParam = None) -> m.AgentPage:
        """Agents by name: status, load, utilization and today's work."""
        after = cursor(cursor_, "agent", 1)
        found = await rows(task_q.agents_page(db, values(status), after[0] if after else None, limit))
        shown, nxt = page(found, limit, "agent", lambda x: (x["agent"],))
        return m.AgentPage(items=[_agent(x) for x in shown], next_cursor=nxt)

    @r.get("/agents/{agent_id}", response_model=m.AgentDetail, responses=NOT_FOUND, tags=["agents"])
    async def agent(agent_id: str) -> m.AgentDetail:
        """One agent: status, utilization, success rate and average handling time (today), its
        open tasks and its latest finished tasks."""
        found, current, recent = await asyncio.gather(
            rows(task_q.agent_record(db, agent_id)), rows(task_q.agent_current_tasks(db, agent_id, 100)),
            rows(task_q.agent_recent_executions(db, agent_id, 20)),
        )  # fmt: skip
        if not found:
            raise ApiError(404, "not_found", f"no agent {agent_id!r}")
        return m.AgentDetail(
            agent=_agent(found[0]),
            current_tasks=[
                m.AgentTask(task_id=x["task_id"], state=x["state"], task_type=x["task_type"],
                            last_event_at=iso(x["last_event_at"]))
                for x in current
            ],
            recent_executions=[
                m.AgentExecution(task_id=x["task_id"], task_type=x["task_type"], outcome=x["outcome"],
                                 finished_at=iso(x["finished_at"]), execution_ms=_num(x["execution_ms"]),
                                 queue_wait_ms=_num(x["queue_wait_ms"]))
                for x in recent
            ],
        )  # fmt: skip

    @r.get("/groups", response_model=m.GroupPage, tags=["groups"])
    async def groups(limit: Limit = 100, cursor_: CursorParam = None) -> m.GroupPage:
        """Task groups by key, with progress and ETA."""
        after = cursor(cursor_, "group", 1)
        found = await rows(task_q.groups_page(db, after[0] if after else None, limit))
        shown, nxt = page(found, limit, "group", lambda x: (x["group_key"],))
        return m.GroupPage(items=[m.Group(**_group(x)) for x in shown], next_cursor=nxt)

    @r.get("/groups/{group_id}", response_model=m.GroupDetail, responses=NOT_FOUND, tags=["groups"])
    async def group(group_id: str) -> m.GroupDetail:
        """One task group: progress, ETA and its tasks by state."""
        found, states = await asyncio.gather(rows(task_q.group_record(db, group_id)), rows(group_states(db, group_id)))
        if not found:
            raise ApiError(404, "not_found", f"no task group {group_id!r}")
        by_state = {str(x["state"]): int(x["count()"]) for x in states}
        return m.GroupDetail(**_group(found[0]), by_state=by_state)

    @r.get("/kpis", response_model=m.Kpis, tags=["kpis"])
    async def kpis(
        period_: Annotated[Literal["day", "week", "month"], Query(alias="period")] = "day",
        end: Annotated[datetime | None, Query(description="End of the period (default: now).")] = None,
    ) -> m.Kpis:  # fmt: skip
        """Key figures of the last day (24 h), week (7 days) or calendar month to date, each with
        the period before beside it."""
        p = period(API_PERIODS[period_], int(time.time() * 1000), epoch_ms(end))
        cur, prev, more, more_prev = await asyncio.gather(
            rows(kpi_query(db, p)), rows(kpi_query(db, p.prev)), analytics(p), analytics(p.prev)
        )
        return m.Kpis(
            period=period_, start=iso(p.start_ms), end=iso(p.end_ms), previous_start=iso(p.prev.start_ms),
            previous_end=iso(p.prev.end_ms),
            kpis=[
                m.KpiValue(name=k.name, unit=k.unit, description=k.description, value=_num(cur[0][k.name]),
                           previous=_num(prev[0][k.name]))
                for k in KPIS
            ]
            + [
                m.KpiValue(name=name, unit=unit, description=what, value=_num(more[name]),
                           previous=_num(more_prev[name]))
                for name, unit, what in analytics_kpis.API_KPIS
            ],
        )  # fmt: skip

    async def analytics(p: Any) -> dict[str, Any]:
        """The analytics KPIs of ``p`` (``core.analytics``: the report's queries)."""

        def query(sql: str, params: dict[str, Any]) -> list[Any]:
            return list(ctx.query_store.read(sql, params).result_rows)

        return analytics_kpis.api_values(await off_loop(kpi_values, query, db, p))

    @r.get("/alerts", response_model=m.AlertPage, tags=["alerts"])
    async def alerts(
        state: Annotated[Literal["firing", "history"], Query(description="firing: alerts firing now; history: "
                                                               "every state change.")] = "firing",
        rule: Many = None, severity: Many = None, limit: Limit = 100, cursor_: CursorParam = None,
    ) -> m.AlertPage:  # fmt: skip
        """Alerts firing now, or the history of alert state changes, newest first."""
        after = cursor(cursor_, state, 3)
        q = alert_q.alerts_page(db, state == "firing", values(rule), values(severity), after, limit)  # type: ignore[arg-type]
        found = await rows(q)
        shown, nxt = page(found, limit, state, lambda x: (int(x["k"]), x["fingerprint"], x["change"]))
        return m.AlertPage(items=[_alert(x) for x in shown], next_cursor=nxt)

    @r.get("/anomalies", response_model=m.AnomalyPage, tags=["alerts"])
    async def anomalies(
        rule: Many = None,
        breached: Annotated[bool | None, Query(description="Only evaluations that breached (true) or not.")] = None,
        since: When = None, until: When = None, limit: Limit = 100, cursor_: CursorParam = None,
    ) -> m.AnomalyPage:  # fmt: skip
        """What the anomaly rules judged: each evaluation's value, baseline, deviation and z-score, newest first."""
        after = cursor(cursor_, "anomalies", 3)
        q = alert_q.anomalies_page(
            db, values(rule), breached, epoch_ms(since), epoch_ms(until), after, limit  # type: ignore[arg-type]
        )
        found = await rows(q)
        shown, nxt = page(found, limit, "anomalies", lambda x: (int(x["k"]), x["rule"], x["lk"]))
        return m.AnomalyPage(
            items=[
                m.Anomaly(at=iso(x["at"]), rule=x["rule"], labels=dict(x["labels"]), value=_num(x["value"]),
                          baseline=float(x["baseline"]), stddev=float(x["stddev"]), zscore=float(x["zscore"]),
                          samples=int(x["samples"]), breached=bool(x["breached"]))
                for x in shown
            ],
            next_cursor=nxt,
        )  # fmt: skip

    @r.get("/events", response_model=m.EventList, tags=["events"])
    async def events(
        entity_id: Annotated[str, Query(min_length=1, description="The task, agent, … whose events to show.")],
        entity_type: Annotated[Literal["task", "agent", "system", "user"] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=EVENTS_CAP, description=f"At most {EVENTS_CAP}.")] = 100,
    ) -> m.EventList:  # fmt: skip
        """The raw (normalized) events of one entity, newest first, capped."""
        found = await rows(entity_events(db, entity_id, entity_type, limit + 1))
        return m.EventList(
            items=[
                m.Event(
                    **{k: x[k] for k in ("id", "event_type", "entity_type", "entity_id", "agent", "task_type",
                                         "outcome")},
                    event_time=iso(x["event_time"]), duration_ms=_num(x["duration_ms"]),
                    previous_state=_json(x["previous_state"]), current_state=_json(x["current_state"]),
                    metadata=_json(x["metadata"]), metrics=_json(x["metrics"]), extra=_json(x["extra"]),
                    ingested_at=iso(x["ingested_at"]),
                )
                for x in found[:limit]
            ],
            truncated=len(found) > limit,
        )  # fmt: skip

    return r
