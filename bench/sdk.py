"""The agent-side SDK's figures: events/s a sync ``Tracker`` sustains end to end (emit →
broker acknowledgement, on the embedded broker) and what its spool costs on disk per million
events (an unreachable broker: everything stays in the spool).  Prints; asserts nothing.

    .venv/bin/python bench/sdk.py [--events 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.embedded import EmbeddedBroker, free_port
from pipeline.sinks.kafka import ensure_topics
from pipeline.topics import ALL_TOPICS
from taskpulse import Tracker
from taskpulse.transport import KafkaTransport


def emit_all(tp: Tracker, n: int) -> None:
    for i in range(n):
        if i % 5 == 0:
            tp.emit("task.progress", f"task-{i // 50}", {"task_type": "research", "agent_id": "researcher",
                                                        "percentage": i % 100, "step": "reading sources"})  # fmt: skip
        else:
            tp.emit("agent.heartbeat", f"agent-{i % 20}", {"cpu_percent": 41.5, "memory_mb": 512.0,
                                                           "active_tasks": 2})  # fmt: skip


def throughput(url: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        tp = Tracker(KafkaTransport(url), spool_dir=d)
        t0 = time.perf_counter()
        emit_all(tp, n)
        assert tp.flush(300), tp.stats()
        elapsed = time.perf_counter() - t0
        tp.close()
        return n / elapsed


def spool_bytes(n: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as d:
        tp = Tracker(KafkaTransport(f"kafka://127.0.0.1:{free_port()}", request_timeout_s=1), spool_dir=d,
                     spool_max_bytes=4 * 1024**3)  # fmt: skip
        t0 = time.perf_counter()
        emit_all(tp, n)
        rate = n / (time.perf_counter() - t0)
        size = sum(p.stat().st_size for p in Path(d).rglob("seg-*.ndjson"))
        tp.close(timeout_s=0.1)
        return rate, size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with EmbeddedBroker() as broker:
        asyncio.run(ensure_topics(broker.bootstrap, ALL_TOPICS, 4, 3_600_000, 1024**3))
        rates = [throughput(broker.url, args.events) for _ in range(args.runs)]
    print(f"sync Tracker, emit → broker ack: median {statistics.median(rates):,.0f} events/s "
          f"(runs: {', '.join(f'{r:,.0f}' for r in rates)}; {args.events:,} events each)")
    rate, size = spool_bytes(args.events)
    print(f"spool while the broker is unreachable: {size / args.events:,.0f} bytes/event = "
          f"{size / args.events * 1_000_000 / 1e6:,.0f} MB per 1M events; emit into the spool {rate:,.0f} events/s")


if __name__ == "__main__":
    main()
