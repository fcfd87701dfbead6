"""Scale-out: two workers (direct engine) share the raw topics in one consumer group; one
is SIGKILLed mid-stream and another joins.  Each worker has its own chDB data directory, a
stand-in for one shared ClickHouse server: the union of their ``events`` tables (distinct
by id) is exactly what was published, and the rollups recomputed from that union match an
independent computation over the published events.

What a shared server adds (every worker sees every partition's watermarks, so the
kill's uncommitted tail is skipped instead of written twice) is in deploy/README.md,
"Scaling out"."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from pipeline.demo import DemoFleet
from pipeline.embedded import free_port
from tests.integration.conftest import ROOT, Worker, publish, wait_for
from tests.integration.reference import SIZES_S, expected_windows
from tests.integration.test_pipeline import ROLLUP_SQL

pytestmark = pytest.mark.integration

EVENTS_SQL = """
SELECT id, toUnixTimestamp64Milli(event_time) AS ms, event_type, outcome, duration_ms
FROM taskpulse.events
"""


def _events(n: int, seed: int) -> list[dict[str, Any]]:
    start = int(time.time() * 1000) - 3 * 3_600_000
    return DemoFleet(seed=seed, tasks_per_s=3.0).take(n, start)


def _rows(worker: Worker) -> list[list[Any]]:
    return worker.sql(EVENTS_SQL)


def _rows_on_disk(data_dir: Path) -> list[list[Any]]:
    """The ``events`` of a dead worker's data directory, read by `taskpulse sql` (no worker
    answers there: it opens the embedded database itself)."""
    env = {**os.environ, "TASKPULSE_DATA_DIR": str(data_dir), "TASKPULSE_API_PORT": str(free_port())}
    out = subprocess.run(
        [sys.executable, "-m", "pipeline", "sql", "-f", "json", EVENTS_SQL],
        env=env, cwd=ROOT, capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    return [[r["id"], int(r["ms"]), r["event_type"], r["outcome"], r["duration_ms"]] for r in json.loads(out.stdout)]


def _windows(rows: list[list[Any]]) -> dict[tuple[str, int, str], list[float]]:
    """Rollup windows from stored event rows (one row per id), like ``expected_windows``."""
    out: dict[tuple[str, int, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0, math.inf, -math.inf])
    for _id, ms, et, outcome, dur in rows:
        for gran, size in SIZES_S.items():
            acc = out[(gran, (int(ms) // 1000) // size * size, et)]
            acc[0] += 1
            acc[1] += outcome == "success"
            acc[2] += outcome == "failure"
            if dur is not None:
                acc[3] += 1
                acc[4] += float(dur)
                acc[5] = min(acc[5], float(dur))
                acc[6] = max(acc[6], float(dur))
    return dict(out)


def _assert_same_windows(got: dict[tuple[str, int, str], list[float]], want: dict[tuple[str, int, str], list[float]],
                         what: str) -> None:  # fmt: skip
    missing, unexpected = sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5]
    assert not missing and not unexpected, f"{what}: windows differ: missing {missing}, unexpected {unexpected}"
    for key, exp in want.items():
        g = got[key]
        assert g[:4] == exp[:4], f"{what} {key}: got {g[:4]} expected {exp[:4]}"
        assert math.isclose(g[4], exp[4], rel_tol=1e-9), f"{what} {key}"
        if exp[3]:
            assert g[5] == exp[5] and g[6] == exp[6], f"{what} {key}"


def _stored_rollups(worker: Worker) -> dict[tuple[str, int, str], list[float]]:
    return {(g, int(ws), et): [c, s, f, dc, dsum, dmin, dmax]
            for g, ws, et, c, s, f, dc, dsum, dmin, dmax in worker.sql(ROLLUP_SQL)}  # fmt: skip


def test_workers_killed_and_added_in_one_group_lose_and_invent_nothing(make_worker, broker, tmp_path):
    events = _events(6000, seed=61)
    random.Random(6).shuffle(events)
    resent = random.Random(7).sample(events, 200)  # the same ids again: duplicates, not new events
    published = {e["id"] for e in events}
    dirs = {name: tmp_path / f"data-{name}" for name in ("a", "b", "c")}

    def worker(name: str) -> Worker:
        # TASKPULSE_CONSUMER_GROUP is the default for all three: one group
        return make_worker(engine="direct", TASKPULSE_DATA_DIR=str(dirs[name]))

    a, b = worker("a").start(), worker("b").start()

    # the stream: small messages, paced, so that the kill and the join land while it flows
    def stream(part: list[dict[str, Any]]) -> None:
        for i in range(0, len(part), 100):
            publish(broker, part[i : i + 100], batch_size=5)
            time.sleep(0.1)

    first = threading.Thread(target=stream, args=(events[:3500],))
    first.start()
    try:
        wait_for(lambda: len(_rows(a)) > 0 and len(_rows(b)) > 0, 90, "both workers writing their partitions")
        a.kill()  # no commit, no flush: its partitions go to b after the session timeout
        c = worker("c").start()
    finally:
        first.join()
    stream(events[3500:])
    publish(broker, resent, batch_size=20)

    on_a = _rows_on_disk(dirs["a"])
    assert on_a, "the killed worker had written part of the stream"

    def union() -> dict[str, list[Any]]:
        rows: dict[str, list[Any]] = {}
        for r in [*on_a, *_rows(b), *_rows(c)]:
            rows.setdefault(r[0], r)
        return rows

    wait_for(lambda: len(union()) >= len(published), 90, f"{len(published)} distinct events across the workers")
    time.sleep(1.5)  # let any (wrong) extra rows arrive before we look
    rows = union()
    assert set(rows) == published, (
        f"missing {sorted(published - set(rows))[:5]}, invented {sorted(set(rows) - published)[:5]}"
    )
    # each engine holds every event at most once (its own dedup window and watermarks)
    for name, stored in (("a", on_a), ("b", _rows(b)), ("c", _rows(c))):
        ids = [r[0] for r in stored]
        assert len(ids) == len(set(ids)), f"worker {name} wrote an event twice"
    assert _rows(c), "the worker that joined took partitions over"

    # rollups recomputed from the union match an independent computation over what was published
    _assert_same_windows(_windows(list(rows.values())), expected_windows(events), "union")
    # and each surviving worker's own rollups are exactly its own events
    for name, w in (("b", b), ("c", c)):
        _assert_same_windows(_stored_rollups(w), _windows(_rows(w)), f"worker {name}")
