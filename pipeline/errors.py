"""The error types of taskpulse: one root, and the sink errors that drive backpressure.

Bad *input* is never an exception (it becomes a ``Rejected`` value and a DLQ row);
these are for infrastructure and configuration.
"""

from __future__ import annotations


class TaskpulseError(Exception):
    """Root of every error taskpulse raises on purpose."""


class ConfigError(TaskpulseError):
    """A setting is missing or wrong; the message names it and how to fix it."""


class SchemaMismatch(ConfigError):
    """The database's schema version is not the one this code needs (ahead of it, or behind
    with ``TASKPULSE_AUTO_MIGRATE=false``); the message says which and what to do."""


class SinkError(TaskpulseError):
    """A sink could not take a batch."""


class SinkUnavailable(SinkError):
    """The sink cannot be reached (connection refused, timeout): retry the same batch later."""


class SinkRejected(SinkError):
    """The sink refused the data itself (a value a column or a serializer cannot hold):
    retrying the same rows will not help; the writer isolates them and dead-letters them."""

    def __init__(self, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.column = column


class SinkStructural(SinkError):
    """The sink refuses every write for a reason no row split can cure (unknown table or
    column, access denied, read-only, disk full, out of memory): retried with backoff and
    logged loudly until an operator fixes it; never a reason to dead-letter the rows."""


class SinkBackpressure(SinkError):
    """The sink asks us to slow down; retry the same batch after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
