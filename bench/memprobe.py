"""Where the worker's memory goes when events flow into chDB: demo events through the ingest
core (decode, dedup, rollups) and ``ClickHouseStore`` inserts in one process, no Kafka.
Every ``--sample`` events it prints the process RSS split by /proc/self/smaps_rollup
(anonymous vs file-backed), chDB's own accounting (``MemoryTracking``, the caches, parts,
jemalloc's allocated/resident/retained), glibc malloc's (``mallinfo2``: Python and other
non-jemalloc allocations) and, with ``--tracemalloc``, the Python heap.

    python bench/memprobe.py [--events 1000000] [--batch 20000] [--sample 100000]
        [--chdb-option key=value ...] [--reads] [--trim]

``--reads`` runs the queries the other roles and /api/status run between inserts (table
counts, watermarks, recent ids), ``--trim`` calls ``malloc_trim(0)`` before each sample.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import re
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.ingest.aggregates import SketchMapping  # noqa: E402
from pipeline.core.ingest.batch import BatchProcessor, RawMessage  # noqa: E402
from pipeline.core.ingest.decode import Decoder  # noqa: E402
from pipeline.core.ingest.dedup import SeenIds  # noqa: E402
from pipeline.core.ingest.rows import EVENT_JSON, ROLLUP_COLUMNS, event_lines, rollup_rows  # noqa: E402
from pipeline.demo import DemoFleet  # noqa: E402
from pipeline.sinks.clickhouse import ClickHouseStore  # noqa: E402
from pipeline.topics import RAW_TOPICS  # noqa: E402

_METRICS = (
    "MemoryTracking", "MarkCacheBytes", "PrimaryIndexCacheBytes", "UncompressedCacheBytes", "QueryCacheBytes",
    "QueryConditionCacheBytes", "MergesMutationsMemoryTracking", "PartsActive", "PartsOutdated",
)  # fmt: skip
_JE = re.compile(r"Allocated: (\d+), active: (\d+), metadata: (\d+).*?resident: (\d+), mapped: (\d+), retained: (\d+)")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]  # fmt: skip


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def smaps() -> dict[str, int]:
    """KiB figures of /proc/self/smaps_rollup."""
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0])
    return out


def sample(store: ClickHouseStore, n: int, t0: float) -> dict[str, Any]:
    mib = 1 << 20
    sm = smaps()
    metrics = dict(store.rows(
        "SELECT metric, value FROM system.metrics WHERE metric IN %(m)s", {"m": list(_METRICS)}
    ))  # fmt: skip
    je = _JE.search(store.rows("SELECT stats FROM system.jemalloc_stats")[0][0])
    mi = _libc.mallinfo2()
    row: dict[str, Any] = {
        "events": n,
        "s": round(time.monotonic() - t0, 1),
        "rss": sm["Rss"] >> 10,
        "anon": sm["Anonymous"] >> 10,
        "file": (sm["Rss"] - sm["Anonymous"]) >> 10,
        "ch_tracked": int(metrics.get("MemoryTracking", 0)) // mib,
        "je_alloc": int(je.group(1)) // mib if je else None,
        "je_resident": int(je.group(4)) // mib if je else None,
        "je_retained": int(je.group(6)) // mib if je else None,
        "glibc_used": (mi.uordblks + mi.hblkhd) // mib,
        "glibc_free": mi.fordblks // mib,
        "marks": int(metrics.get("MarkCacheBytes", 0)) // mib,
        "pk_cache": int(metrics.get("PrimaryIndexCacheBytes", 0)) // mib,
        "parts": int(metrics.get("PartsActive", 0)),
        "outdated": int(metrics.get("PartsOutdated", 0)),
    }
    if tracemalloc.is_tracing():
        row["py_heap"] = tracemalloc.get_traced_memory()[0] // mib
    return row


def garbage(report: bool) -> None:
    """Collect the cyclic garbage; with ``report``, print how many blocks it held and of what."""
    if not report:
        gc.collect()
        return
    before = sys.getallocatedblocks()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found = gc.collect()
    gc.set_debug(0)
    kinds = Counter(type(o).__qualname__ for o in gc.garbage)
    gc.garbage.clear()
    gc.collect()
    print({"cyclic_garbage_objects": found, "blocks_before": before, "blocks_after": sys.getallocatedblocks(),
           "kinds": kinds.most_common(12)}, flush=True)


def reads(store: ClickHouseStore) -> None:
    """What the other roles and the status page ask between inserts."""
    store.table_counts()
    store.watermarks()
    store.recent_ids(1000)


def run(args: argparse.Namespace) -> None:
    if args.tracemalloc:
        tracemalloc.start()
    gc.set_threshold(100_000, 50, 100)  # the worker's
    options = dict(kv.split("=", 1) for kv in args.chdb_option)
    work = Path(tempfile.mkdtemp(prefix="memprobe-"))
    url = f"chdb://{work}/ch" + ("?" + "&".join(f"{k}={v}" for k, v in options.items()) if options else "")
    store = ClickHouseStore(url, "taskpulse")
    store.ensure_schema(True, "memprobe")
    fleet = DemoFleet(seed=5151, tasks_per_s=60.0)
    stream = fleet.stream(int(time.time() * 1000) - int(args.events / fleet.events_per_s() * 1000) - 600_000)
    proc = BatchProcessor(Decoder(), SeenIds(1_000_000), SketchMapping())
    offsets: dict[str, int] = {}
    t0 = time.monotonic()
    done = 0
    print(sample(store, 0, t0), flush=True)
    while done < args.events:
        msgs = []
        for _ in range(args.batch // 100):
            chunk = [next(stream) for _ in range(100)]
            topic = RAW_TOPICS[chunk[0]["entity_type"]]
            msgs.append(RawMessage(topic, 0, offsets.get(topic, 0), orjson.dumps(chunk)))
            offsets[topic] = offsets.get(topic, 0) + 1
        batch = proc.process(msgs, int(time.time() * 1000))
        for seg in batch.parts:
            store.insert("events", event_lines(seg.events), EVENT_JSON)
            rows = rollup_rows(seg.rollups, seg.offsets.get("rollups", {}), batch_now(), seg.logs)
            store.insert("rollups", rows, ROLLUP_COLUMNS)
            for sink in ("events", "rollups"):
                proc.committed(seg, sink)
        done += args.batch
        if args.reads:
            reads(store)
        if done % args.sample == 0:
            garbage(args.gc_report)
            if args.trim:
                _libc.malloc_trim(0)
            print(sample(store, done, t0), flush=True)
    if args.settle:
        time.sleep(args.settle)
        print(sample(store, done, t0), flush=True)
    if args.tracemalloc:
        for stat in tracemalloc.take_snapshot().statistics("lineno")[:15]:
            print(stat)


def batch_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=20_000, help="events per INSERT (the worker's batch_events)")
    ap.add_argument("--sample", type=int, default=100_000)
    ap.add_argument("--chdb-option", action="append", default=[], help="key=value on the chdb:// URL")
    ap.add_argument("--reads", action="store_true")
    ap.add_argument("--trim", action="store_true")
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--gc-report", action="store_true", help="what the cyclic garbage held at each sample")
    ap.add_argument("--settle", type=float, default=0.0, help="seconds to wait, then one more sample")
    run(ap.parse_args())


if __name__ == "__main__":
    os.environ.setdefault("TZ", "UTC")
    main()
