"""Seed 004's droid interface on a tracker: ``report_task_start / report_task_progress /
report_task_completion``, ``report_error``, ``report_status``, ``report_resource_usage`` and the
``TaskExecution`` context manager, as module functions on a default tracker built from the
environment (``Tracker.from_env()``; the agent id from TASKPULSE_AGENT_ID or DROID_ID, the run
id from TASKPULSE_RUN_ID)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from taskpulse.tracker import TaskHandle, Tracker

_default: Tracker | None = None
_lock = threading.Lock()


def default_tracker() -> Tracker:
    """The process's tracker for the module functions (created on first use)."""
    global _default
    with _lock:
        if _default is None:
            _default = Tracker.from_env()
        return _default


def report_task_start(task_id: str, description: str = "", context: Mapping[str, Any] | None = None) -> str:
    return default_tracker().report_task_start(task_id, description, context)


def report_task_progress(task_id: str, progress: float, message: str | None = None) -> str:
    return default_tracker().report_task_progress(task_id, progress, message)


def report_task_completion(task_id: str, result: Any = None, success: bool = True) -> str:
    return default_tracker().report_task_completion(task_id, result, success)


def report_error(task_id: str, error: BaseException | str | Mapping[str, Any],
                 context: Mapping[str, Any] | None = None) -> str:  # fmt: skip
    return default_tracker().report_error(task_id, error, context)


def report_status(status: str, details: Mapping[str, Any] | None = None) -> str:
    return default_tracker().report_status(status, details)


def report_resource_usage(cpu_percent: float | None = None, memory_mb: float | None = None,
                          disk_io_mb: float | None = None) -> str:  # fmt: skip
    return default_tracker().report_resource_usage(cpu_percent, memory_mb, disk_io_mb)


class TaskExecution:
    """Seed 004's context manager: ``with TaskExecution("1.2", "Create API endpoints") as task:``
    — started on entry, completed with ``task.result`` on exit, failed (type and stack) when an
    exception leaves the block (re-raised)."""

    def __init__(self, task_id: str, description: str = "", interface: Tracker | None = None, **kw: Any) -> None:
        self._handle = TaskHandle(interface or default_tracker(), kw.pop("task_type", ""), task_id,
                                  request=description or None, **kw)  # fmt: skip

    @property
    def result(self) -> Any:
        return self._handle.result

    @result.setter
    def result(self, value: Any) -> None:
        self._handle.result = value

    def progress(self, progress: float, message: str | None = None) -> str:
        """A fraction 0..1 as in seed 004 (above 1: percent)."""
        pct = progress * 100 if 0 <= progress <= 1 else progress
        return self._handle.progress(pct, message)

    def __enter__(self) -> TaskExecution:
        self._handle.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._handle._exit(e)
