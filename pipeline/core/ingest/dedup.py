"""A bounded memory of event ids, for counting duplicate deliveries once.

Each id remembers its *origin*: the (topic, partition, offset, index, log) of its first
delivery.  A replay of that same message after a restart is then recognised as the
first delivery again (so it still counts where it was not yet written), while a second
delivery from anywhere else is a duplicate.  The log identity is part of the origin: the
same coordinates in another log (a fresh broker, a recreated topic) are another message,
so an id seen before arriving there is a re-sent event, a duplicate.  The oldest ids are forgotten first once
``capacity`` is reached: that is the dedup horizon.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

#: (topic, partition, offset, index, log identity)
Origin = tuple[str, int, int, int, str]


class SeenIds:
    """Insertion-ordered, bounded id → origin map."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, Origin] = OrderedDict()
        self.duplicates = 0

    def __len__(self) -> int:
        return len(self._ids)

    def first_delivery(self, event_id: str, origin: Origin) -> bool:
        """True when this is the first delivery of ``event_id`` (or a replay of it)."""
        seen = self._ids.get(event_id)
        if seen is None:
            self._ids[event_id] = origin
            if len(self._ids) > self.capacity:
                self._ids.popitem(last=False)
            return True
        if seen == origin:
            return True
        self.duplicates += 1
        return False

    def preload(self, items: Iterable[tuple[str, Origin]]) -> int:
        """Remember ids already written (oldest first), e.g. loaded from ClickHouse at start."""
        n = 0
        for event_id, origin in items:
            self._ids.setdefault(event_id, origin)
            n += 1
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return n
