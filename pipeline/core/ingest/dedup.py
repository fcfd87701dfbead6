"""A bounded memory of event ids, for counting duplicate deliveries once.

Each id remembers its *origin*: the (topic, partition, offset, index, log) of its first
delivery.  A replay of that same message after a restart is then recognised as the
first delivery again (so it still counts where it was not yet written), while a second
delivery from anywhere else is a duplicate.  The log identity is part of the origin: the
same coordinates in another log (a fresh broker, a recreated topic) are another message,
so an id seen before arriving there is a re-sent event, a duplicate.  The oldest ids are
forgotten first once ``capacity`` is reached: that is the dedup horizon (at least
``capacity`` ids are remembered, at most one chunk more).

Compact: an id and its origin are kept as two 64-bit hashes (Python's ``hash``, SipHash for
text, salted per process, which is fine: the memory is rebuilt from ClickHouse at start).
The newest ids sit in a dict; every ``chunk`` ids they move into sorted numpy arrays (16
bytes an id instead of about 285 for a Python string, its origin tuple and an ordered-dict
node).  Two distinct ids share a hash with probability about n²/2⁶⁵ (n = 1,000,000: 3·10⁻⁸
per horizon); the later one would then be counted as a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: (topic, partition, offset, index, log identity)
Origin = tuple[str, int, int, int, str]
#: ids moved from the dict into the arrays at a time (smaller for a small capacity)
CHUNK = 65_536

_EMPTY = np.empty(0, dtype=np.int64)


class SeenIds:
    """Bounded id → origin memory, oldest ids forgotten first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.chunk = max(1, min(CHUNK, capacity // 16))
        self.duplicates = 0
        self._recent: dict[int, int] = {}  # id hash → origin hash, newest ids
        # older ids, sorted by id hash; ``_gen`` is the chunk each came in with (eviction)
        self._keys, self._vals, self._gen = _EMPTY, _EMPTY, _EMPTY
        self._sizes: dict[int, int] = {}  # chunk number → ids of it still held
        self._next_gen = 0
        # what ``prefetch`` found in the arrays for the batch at hand
        self._hits: dict[int, int] = {}
        self._misses: set[int] = set()

    def __len__(self) -> int:
        return len(self._recent) + len(self._keys)

    def prefetch(self, event_ids: Iterable[str]) -> None:
        """Look ``event_ids`` up in the arrays in one vectorised step (a batch's ids, before
        its ``first_delivery`` calls); without it each lookup searches on its own."""
        recent = self._recent
        wanted = {k for k in map(hash, event_ids) if k not in recent}
        self._hits, self._misses = {}, wanted
        if not wanted or not len(self._keys):
            return
        probe = np.fromiter(wanted, dtype=np.int64, count=len(wanted))
        pos = np.searchsorted(self._keys, probe)
        pos[pos == len(self._keys)] = 0
        found = self._keys[pos] == probe
        hits = dict(zip(probe[found].tolist(), self._vals[pos[found]].tolist(), strict=True))
        self._hits = hits
        self._misses = wanted.difference(hits)

    def first_delivery(self, event_id: str, origin: Origin) -> bool:
        """True when this is the first delivery of ``event_id`` (or a replay of it)."""
        key = hash(event_id)
        seen = self._recent.get(key)
        if seen is None:
            seen = self._older(key)
            if seen is None:
                self._remember(key, hash(origin))
                return True
        if seen == hash(origin):
            return True
        self.duplicates += 1
        return False

    def preload(self, items: Iterable[tuple[str, Origin]]) -> int:
        """Remember ids already written (oldest first), e.g. loaded from ClickHouse at start."""
        n = 0
        for event_id, origin in items:
            key = hash(event_id)
            if key not in self._recent and self._older(key) is None:
                self._remember(key, hash(origin))
            n += 1
        return n

    # ------------------------------------------------------------------ inside
    def _older(self, key: int) -> int | None:
        if key in self._misses:
            return None
        hit = self._hits.get(key)
        if hit is not None:
            return hit
        keys = self._keys
        if not len(keys):
            return None
        i = int(np.searchsorted(keys, key))
        if i < len(keys) and int(keys[i]) == key:
            return int(self._vals[i])
        return None

    def _remember(self, key: int, origin: int) -> None:
        recent = self._recent
        recent[key] = origin
        if len(recent) >= self.chunk:
            self._freeze()

    def _freeze(self) -> None:
        """Move the dict's ids into the sorted arrays, then forget the oldest chunks beyond
        the capacity."""
        recent, self._recent = self._recent, {}
        self._hits, self._misses = {}, set()  # what they said may have moved
        n = len(recent)
        new_keys = np.fromiter(recent.keys(), dtype=np.int64, count=n)
        new_vals = np.fromiter(recent.values(), dtype=np.int64, count=n)
        order = np.argsort(new_keys, kind="stable")
        new_keys, new_vals = new_keys[order], new_vals[order]
        gen = self._next_gen
        self._next_gen += 1
        at = np.searchsorted(self._keys, new_keys)
        self._keys = np.insert(self._keys, at, new_keys)
        self._vals = np.insert(self._vals, at, new_vals)
        self._gen = np.insert(self._gen, at, np.full(n, gen, dtype=np.int64))
        self._sizes[gen] = n
        self._evict()

    def _evict(self) -> None:
        drop: list[int] = []
        held = len(self._keys) + len(self._recent)
        for gen, size in self._sizes.items():  # oldest chunk first (insertion order)
            if held - size < self.capacity:
                break
            drop.append(gen)
            held -= size
        if not drop:
            return
        for gen in drop:
            del self._sizes[gen]
        keep = self._gen > drop[-1]  # chunks are numbered in the order they came
        self._keys, self._vals, self._gen = self._keys[keep], self._vals[keep], self._gen[keep]
