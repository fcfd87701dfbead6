"""Finding the refused rows of a batch by halves: which of ``n`` rows a probe refuses.

Pure: the probe is passed in (the ClickHouse sink probes a ``Null``-engine twin table, so
nothing is written while rows are searched).  With ``k`` refused rows among ``n`` it takes
about ``2·k·log2(n)`` probes; ``max_probes`` bounds a flood (every row still unsearched
when it is reached is reported refused with the last refusal seen on its range).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

E = TypeVar("E")


def isolate(n: int, probe: Callable[[int, int], E | None], max_probes: int = 100_000) -> list[tuple[int, E]]:
    """Indices in ``[0, n)`` whose rows ``probe(lo, hi)`` refuses, in ascending order, each
    with the refusal of the smallest range that held it alone.

    ``probe(lo, hi)`` checks rows ``lo..hi-1`` together and returns the refusal (or None).
    The whole range is probed first, so a batch the probe accepts yields ``[]``.
    """
    if n <= 0:
        return []
    probes = 1
    first = probe(0, n)
    if first is None:
        return []
    out: list[tuple[int, E]] = []
    stack: list[tuple[int, int, E]] = [(0, n, first)]  # ranges known refused, leftmost last
    while stack:
        lo, hi, err = stack.pop()
        if hi - lo == 1:
            out.append((lo, err))
            continue
        if probes >= max_probes:
            out.extend((i, err) for i in range(lo, hi))
            continue
        mid = (lo + hi) // 2
        left, probes = probe(lo, mid), probes + 1
        right, probes = probe(mid, hi), probes + 1
        if right is not None:
            stack.append((mid, hi, right))
        if left is not None:
            stack.append((lo, mid, left))
    return out
