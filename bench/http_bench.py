"""`bench/run.py --only http`: HTTP ingest throughput (NDJSON, 1,000 events per request, four
concurrent clients): `taskpulse api` alone against a broker, then a worker (acknowledged by
the broker, then visible in ClickHouse); and the request
latency of `GET /api/v1/tasks` and `GET /api/v1/kpis` on what was ingested (the worker runs
ingest + correlation, as the embedded stack does)."""

from __future__ import annotations

import asyncio
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from pipeline.embedded import EmbeddedBroker, free_port
from pipeline.sinks.kafka import ensure_topics
from pipeline.topics import ALL_TOPICS

PER_REQUEST = 1000
CLIENTS = 4


def _post(api: str, body: bytes) -> dict[str, Any]:
    req = urllib.request.Request(f"{api}/api/v1/events", data=body, method="POST",
                                 headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=120) as r:
        return orjson.loads(r.read())  # type: ignore[no-any-return]


def _latencies(url: str, n: int) -> dict[str, float]:
    took = []
    for _ in range(n):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=120) as r:
            r.read()
        took.append(time.perf_counter() - t0)
    took.sort()
    return {"p50_ms": round(statistics.median(took) * 1000, 1), "p99_ms": round(took[int(0.99 * (n - 1))] * 1000, 1),
            "max_ms": round(took[-1] * 1000, 1)}  # fmt: skip


def _bodies(events: list[dict[str, Any]]) -> queue.Queue[bytes]:
    bodies: queue.Queue[bytes] = queue.Queue()
    for k in range(0, len(events), PER_REQUEST):
        bodies.put(b"\n".join(orjson.dumps(e) for e in events[k : k + PER_REQUEST]))
    return bodies


def _post_all(api: str, bodies: queue.Queue[bytes]) -> tuple[int, float]:
    """Post every body from ``CLIENTS`` threads: (events accepted, seconds)."""
    accepted = [0]
    lock = threading.Lock()

    def client() -> None:
        while True:
            try:
                body = bodies.get_nowait()
            except queue.Empty:
                return
            answer = _post(api, body)
            with lock:
                accepted[0] += answer["accepted"]

    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return accepted[0], time.monotonic() - t0


def standalone_run(events: list[dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """`taskpulse api` alone against a broker (no pipeline in the process): the API's own rate."""
    port = free_port()
    with EmbeddedBroker(log_path=workdir / "tansu-api.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, ALL_TOPICS, 4, 3_600_000, 4 * 1024**3))
        env = {**os.environ, "TASKPULSE_KAFKA_URL": broker.url, "TASKPULSE_DATA_DIR": str(workdir / "api-data"),
               "TASKPULSE_API_PORT": str(port), "TASKPULSE_API_INGEST_RATE_LIMIT": "100000/second"}  # fmt: skip
        with open(workdir / "api.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "pipeline", "api"], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
            try:
                api = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        urllib.request.urlopen(f"{api}/api/status", timeout=2).close()
                        break
                    except OSError:
                        time.sleep(0.3)
                accepted, took = _post_all(api, _bodies(events))
            finally:
                proc.terminate()
                proc.wait(30)
    return {"events": len(events), "accepted": accepted, "acknowledged_events_per_s": round(len(events) / took)}


def http_run(events: list[dict[str, Any]], workdir: Path, worker_cls: Any, wait_all: Any) -> dict[str, Any]:
    alone = standalone_run(events[:200_000], workdir)
    bodies = _bodies(events)
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, ALL_TOPICS, 4, 3_600_000, 4 * 1024**3))
        w = worker_cls(broker, workdir / "data", "direct", roles="ingest,correlate",
                       TASKPULSE_API_INGEST_RATE_LIMIT="100000/second")  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while w.count() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            t0 = time.monotonic()
            accepted, acked_s = _post_all(w.api, bodies)
            wait_all(w, len(events), timeout_s=1800)
            visible_s = time.monotonic() - t0
            # correlation settles: the tasks table stops growing
            last, stable = -1, 0
            while stable < 3:
                n = w.count("SELECT count() FROM taskpulse.tasks") or 0
                stable = stable + 1 if n == last else 0
                last = n
                time.sleep(2)
            agent = "researcher"  # a demo agent
            lat = {
                "tasks": _latencies(f"{w.api}/api/v1/tasks?limit=100", 200),
                "tasks_filtered": _latencies(f"{w.api}/api/v1/tasks?state=COMPLETED&agent={agent}&limit=100", 200),
                "kpis_day": _latencies(f"{w.api}/api/v1/kpis?period=day", 100),
                "kpis_week": _latencies(f"{w.api}/api/v1/kpis?period=week", 100),
            }
        finally:
            w.stop()
    return {
        "standalone_api": alone,
        "events": len(events), "events_per_request": PER_REQUEST, "clients": CLIENTS, "accepted": accepted,
        "acknowledged_events_per_s": round(len(events) / acked_s),
        "visible_events_per_s": round(len(events) / visible_s), "tasks_in_table": last, "latency": lat,
    }  # fmt: skip
