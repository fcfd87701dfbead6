"""The compact dedup memory (``SeenIds``) against an exact reference: an insertion-ordered
map of the last ``capacity`` ids and their origins."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.ingest.dedup import SeenIds

TOPIC = "taskpulse.events.task"


class Reference:
    """Remembers exactly the last ``capacity`` first deliveries."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ids: OrderedDict[str, tuple[object, ...]] = OrderedDict()

    def first_delivery(self, event_id: str, origin: tuple[object, ...]) -> bool:
        seen = self.ids.get(event_id)
        if seen is None:
            self.ids[event_id] = origin
            if len(self.ids) > self.capacity:
                self.ids.popitem(last=False)
            return True
        return seen == origin


deliveries = st.lists(
    st.tuples(st.integers(0, 60), st.integers(0, 3), st.integers(0, 5)), min_size=1, max_size=400
)


@settings(max_examples=150, deadline=None)
@given(deliveries, st.integers(16, 80), st.booleans())
def test_verdicts_match_an_exact_memory_of_the_last_capacity_ids(items, capacity, prefetch) -> None:
    """Every id the reference remembers, SeenIds remembers too (same verdict: duplicate or
    replay of its first delivery); an id SeenIds calls a duplicate was delivered before from
    elsewhere; it holds at most one chunk more than its capacity."""
    seen, ref = SeenIds(capacity), Reference(capacity)
    ever: dict[str, set[tuple[object, ...]]] = {}
    for start in range(0, len(items), 25):  # batches of 25, prefetched or not
        batch = items[start : start + 25]
        if prefetch:
            seen.prefetch(f"id-{i}" for i, _, _ in batch)
        for i, partition, offset in batch:
            event_id, origin = f"id-{i}", (TOPIC, partition, offset, 0, "log")
            got, want = seen.first_delivery(event_id, origin), ref.first_delivery(event_id, origin)
            if event_id in ref.ids or not want:
                assert got == want
            if not got:
                assert ever.get(event_id, set()) - {origin}
            ever.setdefault(event_id, set()).add(origin)
            assert len(seen) <= capacity + seen.chunk


def test_a_million_ids_fit_in_a_few_dozen_megabytes() -> None:
    """The default horizon (1,000,000 ids) as 64-bit hashes in numpy arrays, not strings."""
    seen = SeenIds(1_000_000)
    seen.preload((f"{n:032x}", (TOPIC, n % 4, n, 0, "log")) for n in range(1_200_000))
    assert 1_000_000 <= len(seen) <= 1_000_000 + seen.chunk
    held = seen._keys.nbytes + seen._vals.nbytes + seen._gen.nbytes  # noqa: SLF001
    assert held < 40 * 1024 * 1024
    assert not seen.first_delivery(f"{1_100_000:032x}", (TOPIC, 0, 1, 0, "elsewhere"))
    assert seen.first_delivery(f"{1_100_000:032x}", (TOPIC, 1_100_000 % 4, 1_100_000, 0, "log"))
    assert seen.first_delivery(f"{5:032x}", (TOPIC, 0, 99, 0, "elsewhere"))  # beyond the horizon
