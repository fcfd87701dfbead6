"""Peer: Quix Streams doing what taskpulse's ingest does with windows, over the same events on
the same topics: JSON per message (an event or an SDK array of them), the event's own
timestamp, group by event type, and tumbling 1m / 5m / 1h / 1d counts.

Runs in its own environment (``bench/peers/requirements.txt``: Quix Streams pins an older
pydantic than taskpulse), started by ``bench/run.py --only peers``.

    python quix_windows.py BOOTSTRAP N TOPIC [TOPIC…]   → prints {"events_per_s": …, "events": N}
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta

from quixstreams import Application


def _ms(value: object) -> int:
    if isinstance(value, int | float):
        v = float(value)
        return int(v if v > 1e11 else v * 1000)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


def main() -> None:
    bootstrap, n, topics = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    state_dir = tempfile.mkdtemp(prefix="quix-peer-")  # its window stores (RocksDB), not the cwd
    app = Application(
        state_dir=state_dir,
        broker_address=bootstrap, consumer_group=f"quix-peer-{time.time_ns()}", auto_offset_reset="earliest",
        loglevel="ERROR", use_changelog_topics=False,
    )  # fmt: skip
    seen = [0]
    t0: list[float] = []

    def count(value: object) -> None:
        if not t0:
            t0.append(time.perf_counter())
        seen[0] += 1
        if seen[0] >= n:
            app.stop()

    frames = []
    for name in topics:
        sdf = app.dataframe(app.topic(name, value_deserializer="json"))
        sdf = sdf.apply(lambda v: v if isinstance(v, list) else [v], expand=True)
        sdf = sdf.set_timestamp(lambda value, key, ts, headers: _ms(value["timestamp"]))
        frames.append(sdf)
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)
    sdf = sdf.group_by(lambda v: v["event_type"], name="event_type")
    sdf.update(count)
    for seconds in (60, 300, 3600, 86400):
        # late events (the four topics interleave) update their window for a day, as in taskpulse
        sdf.tumbling_window(timedelta(seconds=seconds), grace_ms=timedelta(days=1)).count().current()
    t_start = time.perf_counter()
    try:
        app.run()
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    start = t0[0] if t0 else t_start
    print(json.dumps({"events": seen[0], "seconds": time.perf_counter() - start,
                      "events_per_s": seen[0] / (time.perf_counter() - start)}))  # fmt: skip


if __name__ == "__main__":
    main()
