"""Caps the number of distinct rollup dimension values (agent, task type) per window.

The first ``max_values`` distinct values a window (one granularity's window start) sees
keep their name; later ones fold into ``other``.  Only the split by dimension folds: each
event still counts once in its window, so totals per window stay exact whatever the order
or a replay.  Which values keep their name is decided in arrival order and held in memory
(at most ``max_windows`` windows, the oldest window start dropped first): after a restart
or for a window dropped and seen again, up to ``max_values`` more names may be kept, so a
window holds at most a small multiple of the cap, never an unbounded number.  The empty
value (not known) and ``other`` itself never count against the cap.
"""

from __future__ import annotations

OTHER = "other"
DIMENSIONS = ("agent", "task_type")


class DimensionCap:
    """Distinct agents and task types per (granularity, window start), folded beyond a cap."""

    def __init__(self, max_values: int, max_windows: int = 512) -> None:
        if max_values < 1 or max_windows < 1:
            raise ValueError("max_values and max_windows must be at least 1")
        self.max_values = max_values
        self.max_windows = max_windows
        self._windows: dict[tuple[str, int], tuple[set[str], set[str]]] = {}
        #: values folded into ``other``, per dimension (event × granularity updates)
        self.folded = dict.fromkeys(DIMENSIONS, 0)
        #: windows forgotten so far: while it stands still, a value once kept in a window
        #: stays kept there (the batch loop then need not ask again)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._windows)

    def fold(self, granularity: str, window_start_ms: int, agent: str, task_type: str) -> tuple[str, str]:
        """The (agent, task_type) this event is counted under in that window."""
        key = (granularity, window_start_ms)
        seen = self._windows.get(key)
        if seen is None:
            if len(self._windows) >= self.max_windows:
                del self._windows[min(self._windows, key=lambda k: (k[1], k[0]))]
                self.evicted += 1
            seen = self._windows[key] = (set(), set())
        agents, types = seen
        cap = self.max_values
        if agent and agent != OTHER and agent not in agents:
            if len(agents) < cap:
                agents.add(agent)
            else:
                agent = OTHER
                self.folded["agent"] += 1
        if task_type and task_type != OTHER and task_type not in types:
            if len(types) < cap:
                types.add(task_type)
            else:
                task_type = OTHER
                self.folded["task_type"] += 1
        return agent, task_type
