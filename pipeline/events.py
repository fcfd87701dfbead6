"""The pydantic v2 models of taskpulse: the event envelope, each event type's payload,
and the values the pipeline makes from them (NormalizedEvent, Rejected).

The envelope is the tracking record of the source design.  Type-specific data lives in
``current_state`` and is validated by the payload model of its ``event_type``.  Unknown
extra fields are kept everywhere (``extra="allow"``): real emitters send more than we
know about, and dropping it would lose their data.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema


class _Open(BaseModel):
    """A model that keeps unknown fields."""

    model_config = ConfigDict(extra="allow")


class EntityType(StrEnum):
    task = "task"
    agent = "agent"
    system = "system"
    user = "user"


class TaskState(StrEnum):
    """Task lifecycle states: CREATED → QUEUED → ASSIGNED → EXECUTING → REVIEWING → COMPLETED."""

    CREATED = "CREATED"
    QUEUED = "QUEUED"
    ASSIGNED = "ASSIGNED"
    EXECUTING = "EXECUTING"
    REVIEWING = "REVIEWING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    PAUSED = "PAUSED"
    REJECTED = "REJECTED"
    RETRY = "RETRY"
    ABANDONED = "ABANDONED"
    CANCELLED = "CANCELLED"


class Metadata(_Open):
    triggered_by: str | None = Field(None, description="agent_id | 'system' | 'user'")
    correlation_id: str | None = None
    session_id: str | None = None
    tags: list[str] = Field(default_factory=list)


class Metrics(_Open):
    duration_ms: Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)] | None = Field(
        None, description="milliseconds, finite, at most 1e12 (31 years)"
    )
    resource_usage: dict[str, Any] = Field(default_factory=dict)
    performance_data: dict[str, Any] = Field(default_factory=dict)


# Any JSON value gets through the model; pipeline.core.timestamps decides, so that a bad
# value is rejected as ``bad_timestamp`` (a bool would otherwise be coerced to 1970).
Timestamp = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "number"}],
            "description": "ISO 8601 with offset, naive ISO (taken as UTC), "
            "or epoch seconds / ms / µs / ns (told apart by magnitude)",
        }
    ),
]


class Envelope(_Open):
    """One event as services publish it (the tracking record)."""

    id: Annotated[str, Field(min_length=1, max_length=128, description="unique; the dedup key")]
    timestamp: Timestamp = Field(...)
    event_type: Annotated[str, Field(min_length=3, max_length=64)]
    entity_type: EntityType
    entity_id: Annotated[str, Field(min_length=1, max_length=256)]
    previous_state: dict[str, Any] = Field(default_factory=dict)
    current_state: dict[str, Any] = Field(default_factory=dict)
    metadata: Metadata = Field(default_factory=Metadata)
    metrics: Metrics = Field(default_factory=Metrics)


# --------------------------------------------------------------------------- payloads
# Each event type's ``current_state``.  Common dimension fields (task_type, agent_id)
# are optional everywhere so that rollups can group by them when emitters send them.

Percentage = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
Confidence = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class TaskPayload(_Open):
    task_type: str | None = None
    agent_id: str | None = None


class TaskCreated(TaskPayload):
    priority: Literal["critical", "high", "normal", "low"] | None = None
    requester_type: Literal["human", "agent", "system"] | None = None
    requester_id: str | None = None
    request: str | None = Field(None, description="the original request text")
    group: str | None = Field(None, description="batch / week label the task belongs to")
    deadline: Timestamp | None = None


class TaskQueued(TaskPayload):
    queue: str | None = None


class TaskAssigned(TaskPayload):
    agent_id: str = Field(description="the chosen agent")
    confidence: Confidence | None = Field(None, description="the chosen agent's confidence")
    evaluations: dict[str, Confidence] = Field(
        default_factory=dict, description="every evaluated agent's confidence, by agent id"
    )
    method: Literal["claimed", "assigned", "volunteered"] | None = None


class TaskStarted(TaskPayload):
    pass


class TaskProgress(TaskPayload):
    percentage: Percentage
    step: str | None = None


class TaskStatusChanged(TaskPayload):
    status: TaskState


class TaskReview(TaskPayload):
    reviewer: str
    passed: bool
    quality_score: Annotated[float, Field(ge=0, le=100)] | None = None
    feedback: str | None = None


class TaskCompleted(TaskPayload):
    success: bool = True
    result: Any = None


class TaskFailed(TaskPayload):
    error: str
    retry_count: Annotated[int, Field(ge=0)] = 0
    will_retry: bool = False


class TaskPaused(TaskPayload):
    reason: str | None = None


class TaskResumed(TaskPayload):
    pass


class TaskCancelled(TaskPayload):
    reason: str | None = None


class TaskAbandoned(TaskPayload):
    reason: str | None = None


class AgentOnline(_Open):
    capabilities: list[str] = Field(default_factory=list)


class AgentOffline(_Open):
    reason: str | None = None


class AgentHeartbeat(_Open):
    cpu_percent: Annotated[float, Field(ge=0)] | None = None
    memory_mb: Annotated[float, Field(ge=0)] | None = None
    active_tasks: Annotated[int, Field(ge=0)] = 0


class AgentSelfReport(_Open):
    status: Literal[
        "initializing", "ready", "executing", "waiting", "completed", "failed", "abandoned", "timeout"
    ]
    task_id: str | None = None
    progress: Annotated[float, Field(ge=0, le=1)] | None = None
    message: str | None = None


class SystemMetric(_Open):
    name: str
    value: float
    unit: str | None = None


class SystemError_(_Open):
    message: str
    component: str | None = None
    severity: Literal["critical", "high", "medium", "low"] | None = None


class SystemHealth(_Open):
    component: str
    status: Literal["ok", "degraded", "down"]
    score: Annotated[float, Field(ge=0, le=100)] | None = None


class AgentStatusChanged(_Open):
    """Emitted by the correlation role when an agent's availability changes."""

    status: Literal["online", "busy", "offline"]
    previous: Literal["online", "busy", "offline", "unknown"] = "unknown"
    active_tasks: Annotated[int, Field(ge=0)] = 0
    reason: str | None = None


class UserRequest(_Open):
    user_id: str
    request: str


class UserFeedback(_Open):
    user_id: str
    score: Annotated[float, Field(ge=0, le=10)]
    task_id: str | None = None
    comment: str | None = None


#: event_type → the model of its ``current_state``.  The prefix names the entity type.
PAYLOADS: dict[str, type[BaseModel]] = {
    "task.created": TaskCreated,
    "task.queued": TaskQueued,
    "task.assigned": TaskAssigned,
    "task.started": TaskStarted,
    "task.progress": TaskProgress,
    "task.status_changed": TaskStatusChanged,
    "task.review": TaskReview,
    "task.completed": TaskCompleted,
    "task.failed": TaskFailed,
    "task.paused": TaskPaused,
    "task.resumed": TaskResumed,
    "task.cancelled": TaskCancelled,
    "task.abandoned": TaskAbandoned,
    "agent.online": AgentOnline,
    "agent.offline": AgentOffline,
    "agent.heartbeat": AgentHeartbeat,
    "agent.self_report": AgentSelfReport,
    "agent.status_changed": AgentStatusChanged,
    "system.metric": SystemMetric,
    "system.error": SystemError_,
    "system.health": SystemHealth,
    "user.request": UserRequest,
    "user.feedback": UserFeedback,
}


# --------------------------------------------------------------------------- pipeline values


class RejectReason(StrEnum):
    """Machine-readable reason codes of DLQ entries."""

    invalid_json = "invalid_json"
    schema_violation = "schema_violation"
    bad_timestamp = "bad_timestamp"
    oversized = "oversized"
    unknown_event_type = "unknown_event_type"
    too_deep = "too_deep"
    too_many_elements = "too_many_elements"
    out_of_range = "out_of_range"
    #: a row the database or a serializer refused, isolated from its batch
    unwritable = "unwritable"


class Source(BaseModel):
    """Where a message came from: the Kafka coordinates (and index inside a batch message)."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    index: int = 0


class Rejected(BaseModel):
    """Input that could not be accepted, with the reason; becomes a DLQ entry."""

    reason: RejectReason
    detail: str
    source: Source
    original: bytes
    event_id: str | None = None


class NormalizedEvent(BaseModel):
    """A validated event with its timestamp normalized to UTC milliseconds.

    ``timestamp_raw`` keeps the value as it was sent.  The dimensions used by rollups
    (agent, task_type, outcome) are derived once, here, so every consumer agrees.
    """

    id: str
    event_time_ms: int
    timestamp_raw: str
    event_type: str
    entity_type: EntityType
    entity_id: str
    agent: str = ""
    task_type: str = ""
    outcome: Literal["", "success", "failure", "cancelled", "abandoned"] = ""
    duration_ms: float | None = None
    previous_state: dict[str, Any] = Field(default_factory=dict)
    current_state: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(
        default_factory=dict, description="top-level fields the envelope does not define, kept"
    )
    ingested_ms: int = 0


Outcome = Literal["success", "failure", "cancelled", "abandoned"]


class TaskExecution(BaseModel):
    """One finished task (completed, failed for good, cancelled or abandoned): the record
    the correlation role publishes on ``taskpulse.tasks.lifecycle`` (one JSON object per
    Kafka message, keyed by task id) and writes to the ``task_executions`` table.

    ``version`` grows when a record is corrected (an abandoned task that completes later
    is published again with a higher version; the table keeps the latest; its
    ``abandoned_verdicts`` says it was once judged abandoned).  Times are UTC
    epoch milliseconds; durations are milliseconds (``None`` when a state was never seen).
    """

    task_id: str
    version: int = 1
    task_type: str = ""
    group: str = Field("", description="group key: the task's group label or correlation id")
    correlation_id: str = ""
    requester_id: str = ""
    requester_type: str = ""
    request: str = ""
    priority: str = ""
    agent: str = Field("", description="the assigned agent (the last assignment)")
    confidence: float | None = Field(None, description="the assigned agent's confidence")
    other_agents: dict[str, float] = Field(
        default_factory=dict, description="every other evaluated agent's confidence"
    )
    outcome: Outcome
    success: bool
    final_state: TaskState
    error: str = ""
    retry_count: int = 0
    created_ms: int | None = None
    queued_ms: int | None = None
    assigned_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int
    queue_wait_ms: float | None = Field(None, description="created/queued → started")
    execution_ms: float | None = Field(None, description="started → finished, paused time included")
    review_ms: float | None = Field(None, description="time spent in REVIEWING")
    cycle_ms: float | None = Field(None, description="created → finished")
    paused_ms: float = 0.0
    progress_checkpoints: int = 0
    invalid_transitions: int = 0
    invalid_transition_list: list[str] = Field(
        default_factory=list, description='the transitions the state machine does not allow, e.g. "CREATED->COMPLETED"'
    )
    events: int = Field(0, description="distinct events the record was built from")
    abandoned_verdicts: int = Field(
        0,
        description="times taskpulse judged the task abandoned; a later event of the task (a completion, "
        "a failure, progress) overrules the verdict, and the record shows the true outcome",
    )
    history_dropped: int = Field(
        0, description="events dropped from the task's history by its length cap (still counted in events)"
    )
