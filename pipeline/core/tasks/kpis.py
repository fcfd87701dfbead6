"""Key performance indicators of a period (``/api/v1/kpis?period=day|week|month``), each with
the same measure over the period before it (``core.periods``).  One query per period reads
``task_executions`` (finished tasks, by ``finished_at``) and ``events`` (agents seen); a
KPI is a named column of it with a unit and a description.  Pure.

To add a KPI, add a ``Kpi`` to ``KPIS`` (its SQL expression is a column of ``kpi_query``);
the API, its OpenAPI document and the tests pick it up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core.periods import Period

Query = tuple[str, dict[str, Any]]

#: the API's period names → ``core.periods`` names
API_PERIODS = {"day": "daily", "week": "weekly", "month": "monthly"}


@dataclass(frozen=True)
class Kpi:
    name: str
    unit: str
    description: str
    #: a ClickHouse expression over the finished tasks (``te``) or a scalar subquery
    expr: str


def _span(col: str) -> str:
    return f"{col} >= fromUnixTimestamp64Milli(%(start)s, 'UTC') AND {col} < fromUnixTimestamp64Milli(%(end)s, 'UTC')"


KPIS: tuple[Kpi, ...] = (
    Kpi("tasks_finished", "tasks", "Tasks that finished (any outcome) in the period.", "count()"),
    Kpi("success_rate", "ratio", "Finished tasks that succeeded / finished tasks (null: none finished).",
        "if(count() = 0, NULL, countIf(outcome = 'success') / count())"),
    Kpi("failure_rate", "ratio", "Finished tasks that failed / finished tasks (null: none finished).",
        "if(count() = 0, NULL, countIf(outcome = 'failure') / count())"),
    Kpi("execution_p50_ms", "ms", "Median execution time (started → finished) of the finished tasks.",
        "quantileExactIf(0.5)(execution_ms, execution_ms IS NOT NULL)"),
    Kpi("execution_p95_ms", "ms", "95th percentile execution time of the finished tasks.",
        "quantileExactIf(0.95)(execution_ms, execution_ms IS NOT NULL)"),
    Kpi("queue_wait_p50_ms", "ms", "Median queue wait (queued → started) of the finished tasks.",
        "quantileExactIf(0.5)(queue_wait_ms, queue_wait_ms IS NOT NULL)"),
    Kpi("queue_wait_p95_ms", "ms", "95th percentile queue wait of the finished tasks.",
        "quantileExactIf(0.95)(queue_wait_ms, queue_wait_ms IS NOT NULL)"),
    Kpi("throughput_per_hour", "tasks/h", "Finished tasks per hour of the period.",
        "count() / (%(hours)s)"),
    Kpi("agents_busy", "agents", "Distinct agents that finished at least one task in the period.",
        "uniqExactIf(agent, agent != '')"),
    Kpi("agents_online", "agents", "Distinct agents that reported (any agent event) in the period.",
        "({agents_online})"),
)  # fmt: skip


def kpi_query(db: str, p: Period, kpis: tuple[Kpi, ...] = KPIS) -> Query:
    """One row: the value of each KPI over ``p``, in the order of ``kpis``."""
    online = f"SELECT uniqExact(entity_id) FROM {db}.events WHERE entity_type = 'agent' AND {_span('event_time')}"
    cols = ", ".join(f"{k.expr.replace('{agents_online}', online)} AS {k.name}" for k in kpis)
    params = {"start": p.start_ms, "end": p.end_ms, "hours": max(p.end_ms - p.start_ms, 1) / 3_600_000}
    return f"SELECT {cols} FROM {db}.task_executions FINAL WHERE {_span('finished_at')}", params
