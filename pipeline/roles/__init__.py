"""The worker's roles.  Each module has ``register(p: Pipeline)``, which defines its Faust
agents, tasks and HTTP pages on ``p.app``; roles never import each other, they talk
through topics and tables.

| role | module | reads | writes |
| --- | --- | --- | --- |
| ingest | ``ingest`` | raw topics | normalized, dlq, rollups topics; events, rollups, dlq tables |
| correlate | ``correlate`` | normalized | lifecycle topic; tasks, task_executions, agent_status tables |
| alerts | ``alerting`` | rollups, tasks, agent_status | alerts topic and table; notifiers |
| metrics | ``exporter`` | normalized, lifecycle, rollups | Prometheus /metrics |

With the alerts role, a worker also runs the report schedule (``reports``): only the group
leader writes the scheduled reports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.app import Pipeline

ROLE_MODULES = {
    "ingest": "pipeline.roles.ingest",
    "correlate": "pipeline.roles.correlate",
    "alerts": "pipeline.roles.alerts",
    "metrics": "pipeline.roles.metrics",
}


def register_roles(p: Pipeline, roles: list[str]) -> None:
    """Register each named role on ``p.app`` and the worker's HTTP API (always)."""
    unknown = [r for r in roles if r not in ROLE_MODULES]
    if unknown:
        raise ValueError(
            f"unknown role(s) {', '.join(unknown)} in TASKPULSE_ROLES; choose from {', '.join(ROLE_MODULES)}"
        )
    for role in roles:
        importlib.import_module(ROLE_MODULES[role]).register(p)
    if "alerts" in roles:
        importlib.import_module("pipeline.roles.reports").register(p)
    importlib.import_module("pipeline.roles.api").register(p)
