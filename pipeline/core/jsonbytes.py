"""JSON bytes that are kept: orjson's output, right-sized.  A shared core module.  Pure.

orjson (3.13) hands back its output in the buffer it wrote into: at least 4 KiB whatever
the document's size (``orjson.dumps({})`` holds 4 KiB of memory), 64 KiB for a 5 KB one.  Harmless for bytes sent
and dropped at once; for bytes that are kept (an event's normalized-topic JSON for the length
of a batch, a task's state in a table) it multiplied the worker's memory by up to ten.  A
copy of the exact size costs a memcpy.
"""

from __future__ import annotations

from typing import Any

import orjson


def dumps(obj: Any, option: int | None = None) -> bytes:
    """``orjson.dumps(obj)`` in a buffer of its own size.  Raises what orjson raises."""
    return memoryview(orjson.dumps(obj, option=option)).tobytes()
