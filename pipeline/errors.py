"""The error types of taskpulse: one root, and the sink errors that drive backpressure.

Bad *input* is never an exception (it becomes a ``Rejected`` value and a DLQ row);
these are for infrastructure and configuration.
"""

from __future__ import annotations


class TaskpulseError(Exception):
    """Root of every error taskpulse raises on purpose."""


class ConfigError(TaskpulseError):
    """A setting is missing or wrong; the message names it and how to fix it."""


class SinkError(TaskpulseError):
    """A sink could not take a batch."""


class SinkUnavailable(SinkError):
    """The sink cannot be reached (connection refused, timeout): retry the same batch later."""


class SinkRejected(SinkError):
    """The sink refused the data itself (schema mismatch): retrying the same batch will not help."""


class SinkBackpressure(SinkError):
    """The sink asks us to slow down; retry the same batch after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
