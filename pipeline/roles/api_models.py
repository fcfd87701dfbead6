"""The pydantic models of the /api/v1 answers: the handlers build them and FastAPI derives the
OpenAPI document (``/api/v1/openapi.json``) from the same classes.  Times are ISO 8601 in
UTC with milliseconds (``2026-11-30T09:12:00.000Z``); null when unknown.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Time = str | None


class Page(BaseModel):
    next_cursor: str | None = Field(
        description="Pass as `cursor` (with the same filters and sort) for the next page; null on the last page."
    )


class Task(BaseModel):
    task_id: str
    state: str = Field(description="CREATED, QUEUED, ASSIGNED, EXECUTING, REVIEWING, COMPLETED, FAILED, …")
    task_type: str
    group: str = Field(description="The task's group key ('' when none).")
    correlation_id: str
    agent: str = Field(description="The assigned agent ('' before assignment).")
    priority: str
    requester_id: str
    created_at: Time
    started_at: Time
    finished_at: Time
    last_event_at: Time
    deadline: Time
    progress: float = Field(description="Percent done (0–100).")
    retry_count: int
    invalid_transitions: int = Field(description="Transitions the lifecycle does not allow (applied, flagged).")
    finished: bool


class TaskPage(Page):
    items: list[Task]


class Execution(BaseModel):
    """The finished task's record (``task_executions``)."""

    finished_at: Time
    outcome: str = Field(description="success, failure, cancelled or abandoned")
    success: bool
    final_state: str
    error: str
    confidence: float | None
    other_agents: dict[str, float] = Field(description="Other agents' confidence at assignment.")
    queue_wait_ms: float | None
    execution_ms: float | None
    review_ms: float | None
    cycle_ms: float | None
    paused_ms: float
    invalid_transition_list: list[str]
    request: str


class TimelineEvent(BaseModel):
    id: str
    event_type: str
    time: Time
    from_state: str | None
    to_state: str | None = Field(description="The state the event moved the task to (null: not a transition).")
    valid_transition: bool = Field(description="False: the lifecycle does not allow this transition.")


class TaskDetail(BaseModel):
    task: Task
    execution: Execution | None = Field(description="Null while the task is open.")
    timeline: list[TimelineEvent] = Field(description="The task's events in event-time order.")
    timeline_truncated: bool = Field(description="True when the task has more events than the timeline cap.")


class Agent(BaseModel):
    agent: str
    status: str
    last_seen: Time
    uptime_s: int
    active_tasks: int
    cpu_percent: float | None
    memory_mb: float | None
    utilization: float | None = Field(description="Busy time / online time (0–1).")
    tasks_completed_today: int
    tasks_finished_today: int
    success_rate: float | None = Field(description="Today's successful / finished tasks.")
    avg_handling_ms: float | None = Field(description="Today's average execution time.")


class AgentPage(Page):
    items: list[Agent]


class AgentTask(BaseModel):
    task_id: str
    state: str
    task_type: str
    last_event_at: Time


class AgentExecution(BaseModel):
    task_id: str
    task_type: str
    outcome: str
    finished_at: Time
    execution_ms: float | None
    queue_wait_ms: float | None


class AgentDetail(BaseModel):
    agent: Agent
    current_tasks: list[AgentTask]
    recent_executions: list[AgentExecution] = Field(description="The latest finished tasks, newest first.")


class Group(BaseModel):
    group: str
    total: int
    pending: int
    in_progress: int
    completed: int
    failed: int
    percentage: float = Field(description="Finished tasks / all tasks of the group, in percent.")
    first_created_at: Time
    last_finished_at: Time
    estimated_completion: Time = Field(description="At the group's finishing rate so far (null: no estimate).")


class GroupPage(Page):
    items: list[Group]


class GroupDetail(Group):
    by_state: dict[str, int] = Field(description="Tasks of the group per current state.")


class KpiValue(BaseModel):
    name: str
    unit: str
    description: str
    value: float | None
    previous: float | None = Field(description="The same measure over the period before.")


class Kpis(BaseModel):
    period: Literal["day", "week", "month"]
    start: Time
    end: Time
    previous_start: Time
    previous_end: Time
    kpis: list[KpiValue]


class Alert(BaseModel):
    at: Time
    rule: str
    fingerprint: str
    state: str = Field(description="pending, firing, resolved or inactive")
    change: str = Field(description="pending, firing, resolved, inactive or renotify")
    severity: str
    group_labels: dict[str, str]
    labels: dict[str, str]
    value: float | None
    threshold: float
    active_since: Time
    fired_at: Time
    resolved_at: Time
    summary: str
    description: str


class AlertPage(Page):
    items: list[Alert]


class Anomaly(BaseModel):
    at: Time = Field(description="When the rule was evaluated.")
    rule: str
    labels: dict[str, str]
    value: float | None = Field(description="The judged window's value.")
    baseline: float = Field(description="EWMA mean of the windows before it.")
    stddev: float
    zscore: float
    samples: int
    breached: bool


class AnomalyPage(Page):
    items: list[Anomaly]


class Event(BaseModel):
    id: str
    event_time: Time
    event_type: str
    entity_type: str
    entity_id: str
    agent: str
    task_type: str
    outcome: str
    duration_ms: float | None
    previous_state: dict[str, Any]
    current_state: dict[str, Any]
    metadata: dict[str, Any]
    metrics: dict[str, Any]
    extra: dict[str, Any]
    ingested_at: Time


class EventList(BaseModel):
    items: list[Event] = Field(description="Newest first.")
    truncated: bool = Field(description="True when the entity has more events than `limit`.")
