"""The pydantic v2 models of taskpulse: the event envelope, each event type's payload,
and the values the pipeline makes from them (NormalizedEvent, Rejected).

The envelope is the tracking record of the source design.  Type-specific data lives in
``current_state`` and is validated by the payload model of its ``event_type``.  Unknown
extra fields are kept everywhere (``extra="allow"``): real emitters send more than we
know about, and dropping it would lose their data.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    AliasPath,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError


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

    id: Annotated[
        str, Field(min_length=1, description="unique; the dedup key; at most TASKPULSE_MAX_ID_LENGTH characters")
    ]
    timestamp: Timestamp = Field(...)
    event_type: Annotated[str, Field(min_length=3, max_length=64)]
    entity_type: EntityType
    entity_id: Annotated[
        str, Field(min_length=1, description="at most TASKPULSE_MAX_ID_LENGTH characters")
    ]
    previous_state: dict[str, Any] = Field(default_factory=dict)
    current_state: dict[str, Any] = Field(default_factory=dict)
    metadata: Metadata = Field(default_factory=Metadata)
    metrics: Metrics = Field(default_factory=Metrics)


# --------------------------------------------------------------------------- payloads
# Each event type's ``current_state``.  Strict in what places an event (a status that moves a
# task, numbers that land in fixed-width columns), liberal in what describes it: descriptive
# fields are optional and accept the seeds' names as aliases (``ALIASES`` lists them).  The
# decoder writes each validated value back under its canonical name (keeping a value sent
# in another form under ``<name>_raw``), so every consumer reads one form.

#: the largest value of a ClickHouse UInt32 column (retry counts, active tasks)
UINT32_MAX = 2**32 - 1


def _fits_uint32(value: int) -> int:
    if value > UINT32_MAX:
        raise PydanticCustomError(
            "out_of_range", "{value} does not fit a UInt32 column (at most {limit})",
            {"value": value, "limit": UINT32_MAX},
        )  # fmt: skip
    return value


def _count_of(value: Any) -> Any:
    """A list of task ids (seeds 000 / 003 send ``active_tasks: [...]``) counts as its length."""
    return len(value) if isinstance(value, list) else value


#: a count that lands in a UInt32 column: negative is a schema violation, too big out of range
UInt32 = Annotated[int, Field(ge=0), AfterValidator(_fits_uint32)]
Count = Annotated[UInt32, BeforeValidator(_count_of)]
#: a float that lands in a Float64 column: finite (no inf / nan, no "1e400" strings)
Finite = Annotated[float, Field(allow_inf_nan=False)]
Percentage = Annotated[Finite, Field(ge=0, le=100)]
Confidence = Annotated[Finite, Field(ge=0)]

_ERROR_MESSAGE_KEYS = ("message", "error_message", "msg", "detail", "description", "reason")
_ERROR_TYPE_KEYS = ("error_type", "type", "name", "code", "exception")
_TRACE_KEYS = ("stack_trace", "stacktrace", "traceback", "trace", "stack")


def error_text(value: Any) -> Any:
    """An error as one line of text: a string as is; an error object (seed 004:
    ``{"error_type": …, "stack_trace": …}``) as ``type: message``, the message being its
    message field or else the last line of its stack trace; any other value as JSON text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        kind = next((str(value[k]) for k in _ERROR_TYPE_KEYS if value.get(k) not in (None, "")), "")
        msg = next((str(value[k]) for k in _ERROR_MESSAGE_KEYS if value.get(k) not in (None, "")), "")
        if not msg:
            trace = next((value[k] for k in _TRACE_KEYS if isinstance(value.get(k), str)), "")
            msg = next((ln.strip() for ln in reversed(trace.splitlines()) if ln.strip()), "")
        if kind and msg.startswith(kind):
            return msg
        if kind or msg:
            return f"{kind}: {msg}" if kind and msg else kind or msg
    return _json_text(value)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


ErrorText = Annotated[str, BeforeValidator(error_text)]

#: task status words of the seeds that are not taskpulse's names (case is ignored)
STATUS_SYNONYMS = {"PENDING": "QUEUED", "IN_PROGRESS": "EXECUTING", "SKIPPED": "CANCELLED"}


def task_state_of(value: Any) -> TaskState | None:
    """A task status as sent (any case, or a seed's synonym) → the TaskState, else None."""
    if isinstance(value, TaskState):
        return value
    if not isinstance(value, str):
        return None
    name = value.strip().upper().replace("-", "_").replace(" ", "_")
    try:
        return TaskState(STATUS_SYNONYMS.get(name, name))
    except ValueError:
        return None


def _task_state(value: Any) -> Any:
    return task_state_of(value) or value  # an unknown word fails the enum with its own message


def _review_passed(value: Any) -> Any:
    """Seed 003's review ``status`` (pending | passed | failed) as the ``passed`` flag."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("passed", "pass", "approved", "accepted"):
            return True
        if word in ("failed", "fail", "rejected"):
            return False
        if word in ("pending", ""):
            return None
    return value


def aliased(*names: str | AliasPath, description: str = "", default: Any = None) -> Any:
    """A field that also accepts the seeds' names (the first name is canonical)."""
    shown = ", ".join(n if isinstance(n, str) else ".".join(map(str, n.path)) for n in names[1:])
    text = f"{description} (also accepted as: {shown})" if description else f"also accepted as: {shown}"
    return Field(default, validation_alias=AliasChoices(*names), description=text)


_AGENT = aliased(
    "agent_id", "agent", "agent_name", "droid_id", "assigned_to", "assigned_agent",
    AliasPath("assignment", "primary_agent"), description="the agent working on the task",
)  # fmt: skip


class _Payload(_Open):
    """A ``current_state`` model."""

    #: fields that hold ids: longer than TASKPULSE_MAX_ID_LENGTH is ``out_of_range``
    id_fields: ClassVar[tuple[str, ...]] = ()


class TaskPayload(_Payload):
    task_type: str | None = aliased("task_type", "type")
    agent_id: str | None = _AGENT
    group: str | None = aliased("group", "run_id", description="batch / week / run label the task belongs to")


class TaskCreated(TaskPayload):
    id_fields = ("requester_id",)

    priority: str | None = Field(None, description="critical | high | normal | low (other words are kept)")
    requester_type: str | None = aliased(
        "requester_type", AliasPath("requester", "type"), description="human | agent | system"
    )
    requester_id: str | None = aliased("requester_id", "user_id", AliasPath("requester", "id"))
    request: str | None = aliased(
        "request", "request_text", "text", "description", description="the original request text"
    )
    deadline: Timestamp | None = None


class TaskQueued(TaskPayload):
    queue: str | None = None


class TaskAssigned(TaskPayload):
    agent_id: str | None = _AGENT
    confidence: Confidence | None = aliased(
        "confidence", "max_confidence", description="the chosen agent's confidence"
    )
    evaluations: dict[str, Confidence] = Field(
        default_factory=dict, description="every evaluated agent's confidence, by agent id"
    )
    method: str | None = aliased(
        "method", "assignment_method", AliasPath("assignment", "assignment_method"),
        description="claimed | assigned | volunteered",
    )  # fmt: skip


class TaskStarted(TaskPayload):
    pass


class TaskProgress(TaskPayload):
    percentage: Percentage | None = aliased("percentage", "completion_percentage")
    step: str | None = aliased("step", "current_step", "message")


class TaskStatusChanged(TaskPayload):
    status: Annotated[TaskState, BeforeValidator(_task_state)] = Field(
        description="a task state, any case; also pending (QUEUED), in_progress (EXECUTING), "
        "skipped (CANCELLED)"
    )


class TaskReview(TaskPayload):
    reviewer: str | None = None
    passed: Annotated[bool | None, BeforeValidator(_review_passed)] = aliased(
        "passed", "status", description="false moves the task to REJECTED; status: pending | passed | failed"
    )
    quality_score: Annotated[Finite, Field(ge=0, le=100)] | None = None
    feedback: str | None = None


_ERROR = aliased(
    "error", "error_message", description="the error: text, or an object such as "
    '{"error_type": …, "stack_trace": …} (read as one line of text)',
)  # fmt: skip


class TaskCompleted(TaskPayload):
    success: bool = True
    result: Any = None
    error: ErrorText | None = _ERROR


class TaskFailed(TaskPayload):
    error: ErrorText | None = _ERROR
    retry_count: UInt32 = 0
    will_retry: bool = False


class TaskPaused(TaskPayload):
    reason: str | None = None


class TaskResumed(TaskPayload):
    pass


class TaskCancelled(TaskPayload):
    reason: str | None = None


class TaskAbandoned(TaskPayload):
    reason: str | None = None


class AgentOnline(_Payload):
    capabilities: list[str] = Field(default_factory=list)


class AgentOffline(_Payload):
    reason: str | None = None


class AgentHeartbeat(_Payload):
    cpu_percent: Annotated[Finite, Field(ge=0)] | None = aliased("cpu_percent", "cpu_usage")
    memory_mb: Annotated[Finite, Field(ge=0)] | None = aliased("memory_mb", "memory_usage")
    active_tasks: Count = aliased(
        "active_tasks", "current_tasks", default=0, description="a number, or the list of task ids"
    )


class AgentSelfReport(_Payload):
    id_fields = ("task_id",)

    status: Literal[
        "initializing", "ready", "executing", "waiting", "completed", "failed", "abandoned", "timeout"
    ]
    task_id: str | None = None
    progress: Annotated[Finite, Field(ge=0, le=1)] | None = None
    message: str | None = None


class SystemMetric(_Payload):
    name: str
    value: Finite
    unit: str | None = None


class SystemError_(_Payload):
    message: ErrorText | None = aliased("message", "error_message", "error")
    component: str | None = None
    severity: str | None = Field(None, description="critical | high | medium | low (other words are kept)")


class SystemHealth(_Payload):
    component: str | None = None
    status: Literal["ok", "degraded", "down"]
    score: Annotated[Finite, Field(ge=0, le=100)] | None = aliased("score", "health_score")


class AgentStatusChanged(_Payload):
    """Emitted by the correlation role when an agent's availability changes."""

    status: Literal["online", "busy", "offline"]
    previous: Literal["online", "busy", "offline", "unknown"] = "unknown"
    active_tasks: UInt32 = 0
    reason: str | None = None


class UserRequest(_Payload):
    id_fields = ("user_id",)

    user_id: str | None = None
    request: str | None = aliased("request", "request_text", "text")


class UserFeedback(_Payload):
    id_fields = ("user_id", "task_id")

    user_id: str | None = None
    score: Annotated[Finite, Field(ge=0, le=10)]
    task_id: str | None = None
    comment: str | None = aliased("comment", "feedback", "text")


#: event_type → the model of its ``current_state``.  The prefix names the entity type.
PAYLOADS: dict[str, type[_Payload]] = {
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
    #: ``original`` is not the message as sent (an array element cut below the depth limit):
    #: such an entry can never be replayed
    original_cut: bool = False
    #: ``original`` was pseudonymised / redacted (TASKPULSE_DLQ_KEEP_ORIGINAL=false): never replayed
    original_redacted: bool = False


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
    cost: float | None = Field(
        None, description="what the task cost: metrics.cost its events reported, plus their tokens priced "
        "with TASKPULSE_PRICES (None: no event reported usage)"
    )
    currency: str = Field("", description="the currency of cost")
    tokens: int = Field(0, description="tokens the task's events reported (all models)")
    unpriced_tokens: int = Field(0, description="tokens of models the price table has no price for")
