"""The taskpulse agent-side SDK: ``from taskpulse import Tracker, AsyncTracker``.

Light on purpose: it needs only aiokafka and orjson (``pip install taskpulse``); the worker's
dependencies (Faust, chDB, clickhouse-connect, …) are the ``worker`` extra and are never
imported from here.

    tp = Tracker.from_env()          # TASKPULSE_KAFKA_URL, or TASKPULSE_HTTP_URL + TASKPULSE_API_TOKEN
    with tp.task("research", request="Summarise X", agent="researcher") as t:
        t.progress(50, "reading sources")
        t.result = {"files_created": ["notes.md"]}

Every event is written to a local spool first (an append-only file) and sent from there by a
background sender, so an unreachable broker or endpoint costs nothing but delay: the events
are sent in order when it answers again, also after the process restarted.
"""

from __future__ import annotations

from taskpulse.seed import (
    TaskExecution,
    default_tracker,
    report_error,
    report_resource_usage,
    report_status,
    report_task_completion,
    report_task_progress,
    report_task_start,
)
from taskpulse.tracker import AgentHandle, AsyncTracker, TaskHandle, Tracker, TrackerStats

__version__ = "0.1.0"

__all__ = [
    "AgentHandle",
    "AsyncTracker",
    "TaskExecution",
    "TaskHandle",
    "Tracker",
    "TrackerStats",
    "default_tracker",
    "report_error",
    "report_resource_usage",
    "report_status",
    "report_task_completion",
    "report_task_progress",
    "report_task_start",
]
