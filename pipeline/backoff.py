"""The one retry delay of the worker: exponential backoff from ``start_s``, doubling up to
``max_s``, back to ``start_s`` after a success.  Every retry loop (sink writes, start-up
reads, the alerts topic, notifiers) waits with it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Backoff:
    start_s: float = 0.2
    max_s: float = 5.0
    #: the wait the next ``sleep`` takes
    delay: float = field(init=False)

    def __post_init__(self) -> None:
        self.delay = self.start_s

    def reset(self) -> None:
        """After a success: the next failure waits ``start_s`` again."""
        self.delay = self.start_s

    async def sleep(self) -> float:
        """Wait the current delay, then double it (capped); returns the time waited."""
        waited = self.delay
        await asyncio.sleep(waited)
        self.delay = min(self.delay * 2, self.max_s)
        return waited
