"""`make bench`: end-to-end throughput and latency of one taskpulse worker, next to the
ceiling of a plain aiokafka loop doing the same decoding and window updates.

For each message shape (one event per Kafka message; SDK batches of 100):
  1. start a fresh Tansu broker, publish the same N demo events (default 200,000);
  2. start one `taskpulse worker` (fresh chDB) and time it until ClickHouse holds all N;
     sample the worker's RSS meanwhile;
  3. on the same topics, a plain aiokafka consumer decodes every event with pydantic and
     updates 1m/5m/1h/1d windows in dicts: the ceiling.
Then a paced run at 5,000 events/s measures publish → visible-in-ClickHouse latency.

Prints a table; writes bench/results/latest.json.  Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import psutil
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import history  # noqa: E402
from bench.peers.run import peer_runs  # noqa: E402
from bench.targets import print_targets  # noqa: E402
from pipeline.core.timestamps import to_epoch_ms  # noqa: E402
from pipeline.demo import DemoFleet  # noqa: E402
from pipeline.embedded import EmbeddedBroker, free_port  # noqa: E402
from pipeline.events import Envelope  # noqa: E402
from pipeline.sdk import TaskpulseProducer  # noqa: E402
from pipeline.sinks.kafka import ensure_topics  # noqa: E402
from pipeline.topics import ALL_TOPICS, RAW_TOPICS  # noqa: E402

console = Console()
WINDOWS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000, "1d": 86_400_000}


def events_for(n: int) -> list[dict[str, Any]]:
    start = int(time.time() * 1000) - 12 * 3_600_000
    # ~14 events per task; enough tasks per second that n events span a few hours
    return DemoFleet(seed=2024, tasks_per_s=3.0).take(n, start)


async def publish(url: str, events: list[dict[str, Any]], batch_size: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    async with TaskpulseProducer(url, batch_size=batch_size, linger_ms=20) as p:
        await p.send_many(events)
    return p.sent_messages, time.perf_counter() - t0


class WorkerProc:
    def __init__(
        self, broker: EmbeddedBroker, data_dir: Path, engine: str = "direct", roles: str = "ingest",
        **extra_env: str,
    ) -> None:  # fmt: skip
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "TASKPULSE_KAFKA_URL": broker.url,
            "TASKPULSE_DATA_DIR": str(data_dir),
            "TASKPULSE_API_PORT": str(self.port),
            "TASKPULSE_SESSION_TIMEOUT_S": "6",
            "TASKPULSE_INGEST_ENGINE": engine,
            "TASKPULSE_ROLES": roles,
            **extra_env,
        }
        self.log = open(data_dir.parent / "worker.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker"], env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        self.ps = psutil.Process(self.proc.pid)
        self.peak_rss = 0

    def sample_rss(self) -> None:
        try:
            self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)
        except psutil.Error:
            pass

    def count(self, sql: str = "SELECT count() FROM taskpulse.events") -> int | None:
        req = urllib.request.Request(
            f"{self.api}/api/sql",
            data=json.dumps({"query": sql}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(json.load(r)["rows"][0][0])
        except Exception:  # noqa: BLE001 - not up yet
            return None

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def wait_all(w: WorkerProc, n: int, timeout_s: float, poll_s: float = 0.1) -> list[tuple[float, int]]:
    """(time, rows visible) samples until all n rows are visible."""
    samples: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c = w.count()
        now = time.monotonic()
        w.sample_rss()
        if c is not None:
            samples.append((now, c))
            if c >= n:
                return samples
        time.sleep(poll_s)
    raise SystemExit(f"timed out: {samples[-1] if samples else 'no rows'} of {n}")


async def ceiling(broker: EmbeddedBroker, n: int) -> float:
    """Plain aiokafka + pydantic + four windows in dicts, on the same topics: events/s."""
    consumer = AIOKafkaConsumer(
        *RAW_TOPICS.values(),
        bootstrap_servers=broker.bootstrap,
        group_id=f"ceiling-{time.time_ns()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_records=5000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    windows: dict[tuple[str, int, str], int] = defaultdict(int)
    seen = 0
    t0: float | None = None
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if t0 is None and batch:
                t0 = time.perf_counter()
            for records in batch.values():
                for rec in records:
                    doc = orjson.loads(rec.value)
                    for item in doc if isinstance(doc, list) else [doc]:
                        ev = Envelope.model_validate(item)
                        ts = to_epoch_ms(ev.timestamp)
                        for g, size in WINDOWS.items():
                            windows[(g, ts - ts % size, ev.event_type)] += 1
                        seen += 1
    finally:
        await consumer.stop()
    assert t0 is not None
    return n / (time.perf_counter() - t0)


def throughput_run(
    events: list[dict[str, Any]], batch_size: int, workdir: Path, engine: str, peers_python: str | None = None
) -> dict[str, Any]:
    n = len(events)
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, ALL_TOPICS, 4, 3_600_000, 2 * 1024**3))
        messages, pub_s = asyncio.run(publish(broker.url, events, batch_size))
        console.print(f"  published {n:,} events in {messages:,} messages ({n / pub_s:,.0f} events/s)")
        w = WorkerProc(broker, workdir / "data", engine)
        t_start = time.monotonic()
        try:
            samples = wait_all(w, n, timeout_s=900)
        finally:
            w.stop()
        # from the last moment ClickHouse held no row (the worker had joined and was about
        # to write its first batch) to the moment it held all of them
        first = max((t for t, c in samples if c == 0), default=samples[0][0])
        last = samples[-1][0]
        rate = n / (last - first)
        console.print(f"  pipeline: {rate:,.0f} events/s (empty → all rows), peak RSS {w.peak_rss / 2**20:,.0f} MiB")
        ceil = asyncio.run(ceiling(broker, n))
        console.print(f"  ceiling (aiokafka + pydantic + 4 windows in dicts): {ceil:,.0f} events/s")
        peers = {}
        if peers_python:
            peers = peer_runs(peers_python, broker.bootstrap, n, list(RAW_TOPICS.values()), rate)
            for name, r in peers.items():
                console.print(f"  peer {name}: {r}")
    return {
        "peers": peers,
        "engine": engine,
        "events": n,
        "messages": messages,
        "events_per_message": batch_size,
        "pipeline_events_per_s": round(rate),
        "including_startup_s": round(last - t_start, 1),
        "ceiling_events_per_s": round(ceil),
        "ratio": round(rate / ceil, 3),
        "peak_rss_mib": round(w.peak_rss / 2**20),
    }


def latency_run(rate: int, seconds: int, batch_size: int, workdir: Path, engine: str) -> dict[str, Any]:
    """Publish at a steady rate; the k-th published event is visible when the table holds k rows."""
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, ALL_TOPICS, 4, 3_600_000, 2 * 1024**3))
        w = WorkerProc(broker, workdir / "data", engine)
        try:
            while w.count() is None:
                time.sleep(0.2)
            # Warm-up, not measured: the consumer group join and the first inserts.
            warm = DemoFleet(seed=99).take(200, int(time.time() * 1000) - 60_000)
            asyncio.run(publish(broker.url, warm, 10))
            while (w.count() or 0) < len(warm):
                time.sleep(0.1)
            base = len(warm)
            fleet = DemoFleet(seed=7, tasks_per_s=rate / 14)
            publish_times: list[float] = []

            async def paced() -> None:
                stream = fleet.timed(int(time.time() * 1000) - 60_000)
                async with TaskpulseProducer(broker.url, batch_size=batch_size, linger_ms=5) as p:
                    t0 = time.monotonic()
                    tick = 0.02
                    per_tick = max(1, int(rate * tick))
                    while time.monotonic() - t0 < seconds:
                        for _ in range(per_tick):
                            _, ev = next(stream)
                            ev["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
                            await p.send(ev)
                        await p.flush()
                        now = time.monotonic()
                        publish_times.extend([now] * per_tick)
                        tick_end = t0 + (len(publish_times) / rate)
                        await asyncio.sleep(max(0.0, tick_end - time.monotonic()))

            import threading

            samples: list[tuple[float, int]] = []
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    c = w.count()
                    if c is not None:
                        samples.append((time.monotonic(), c - base))
                    w.sample_rss()
                    time.sleep(0.05)

            th = threading.Thread(target=poll, daemon=True)
            th.start()
            asyncio.run(paced())
            n = len(publish_times)
            deadline = time.monotonic() + 60
            while (not samples or samples[-1][1] < n) and time.monotonic() < deadline:
                time.sleep(0.1)
            stop.set()
            th.join()
        finally:
            w.stop()
    lat = []
    j = 0
    for k, pt in enumerate(publish_times, start=1):
        while j < len(samples) and samples[j][1] < k:
            j += 1
        if j == len(samples):
            break
        lat.append(samples[j][0] - pt)
    lat.sort()
    return {
        "engine": engine,
        "rate_events_per_s": rate,
        "seconds": seconds,
        "events": len(publish_times),
        "measured": len(lat),
        "p50_s": round(lat[len(lat) // 2], 3),
        "p99_s": round(lat[int(len(lat) * 0.99) - 1], 3),
        "max_s": round(lat[-1], 3),
        "peak_rss_mib": round(w.peak_rss / 2**20),
    }


def correlation_pure(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The correlator's own cost (no Kafka, no ClickHouse): events/s, finished tasks/s, and the
    size of one in-flight task's state (what the Faust table and its changelog hold)."""
    from pipeline.core.ingest.decode import Decoder
    from pipeline.core.tasks.correlation import CorrelationConfig, Correlator
    from pipeline.events import NormalizedEvent

    dec = Decoder(1 << 20, 300_000)
    now = int(time.time() * 1000)
    normalized = [x for i, e in enumerate(events) for x in dec.decode("t", 0, i, orjson.dumps(e), now)
                  if isinstance(x, NormalizedEvent) and x.entity_type.value in ("task", "agent")]
    c = Correlator(CorrelationConfig(reorder_window_s=0.0))
    records = 0
    slot_bytes: list[int] = []
    t0 = time.perf_counter()
    for i in range(0, len(normalized), 500):
        out = c.apply(normalized[i:i + 500], now + i)
        records += len(out.executions)
        for slot in out.dirty_tasks.values():  # what persisting the state costs
            if slot is not None:
                b = orjson.dumps(slot.to_json())
                if i % 20_000 == 0 and slot.closed_wall_ms is None:
                    slot_bytes.append(len(b))
        for agent in out.dirty_agents.values():
            if agent is not None:
                orjson.dumps(agent.to_json())
    dt = time.perf_counter() - t0
    open_now = [s for s in c.tasks.values() if s.closed_wall_ms is None]
    sizes = [len(orjson.dumps(s.to_json())) for s in open_now] or slot_bytes
    return {
        "events": len(normalized),
        "events_per_s": round(len(normalized) / dt),
        "finished_tasks": records,
        "tasks_per_s": round(records / dt),
        "in_flight_tasks_at_end": len(open_now),
        "state_bytes_per_in_flight_task": round(statistics.mean(sizes)) if sizes else None,
    }


def _open_task_events(first: int, n: int, per_task: int, t0: int) -> list[Any]:
    """``per_task`` events (created, queued, assigned, started) of tasks first … first+n-1:
    each stays open.  Built without validation: the correlator's cost is what is measured."""
    from pipeline.events import EntityType, NormalizedEvent

    steps = [("task.created", {"task_type": "research", "request": "summarise the quarterly report"}),
             ("task.queued", {}), ("task.assigned", {"agent_id": "agent-7", "confidence": 0.82}),
             ("task.started", {"agent_id": "agent-7"})][:per_task]  # fmt: skip
    out = []
    for k in range(first, first + n):
        for j, (et, state) in enumerate(steps):
            out.append(NormalizedEvent.model_construct(
                id=f"{k:08d}-{j}-7f3a9c2e-4b1d-4e8a-9c3f", event_time_ms=t0 + k + j, timestamp_raw="",
                event_type=et, entity_type=EntityType("task"), entity_id=f"task-{k:08d}", current_state=dict(state),
                metadata={"correlation_id": f"c-{k % 1000}"}, previous_state={}, metrics={}, extra={},
            ))  # fmt: skip
    return out


def _fill(c: Any, n: int, per_task: int, t0: int, wall: int) -> None:
    for first in range(0, n, 10_000):
        c.apply(_open_task_events(first, min(10_000, n - first), per_task, t0), wall)


def correlation_memory(tasks: int = 1_000_000) -> dict[str, Any]:
    """What open tasks cost the pure correlator: bytes per open task (tracemalloc, on 50,000
    tasks of 2 and 4 events, which also calibrates the budget's estimate), the persisted
    slot's size, and RSS with ``tasks`` open tasks of 4 events."""
    import gc
    import tracemalloc

    from pipeline.core.tasks.correlation import AGENT_BYTES, ENTRY_BYTES, TASK_BYTES, CorrelationConfig, Correlator

    cfg = CorrelationConfig(memory_budget_bytes=1 << 40)  # nothing evicted while measuring
    t0 = int(time.time() * 1000) - 3_600_000
    wall = t0 + 3_600_000
    traced: dict[int, float] = {}
    for per_task in (2, 4):
        gc.collect()
        tracemalloc.start()
        c = Correlator(cfg)
        before = tracemalloc.get_traced_memory()[0]
        _fill(c, 50_000, per_task, t0, wall)
        gc.collect()
        traced[per_task] = (tracemalloc.get_traced_memory()[0] - before) / 50_000
        tracemalloc.stop()
        slot_json = statistics.mean(len(orjson.dumps(s.to_json())) for s in list(c.tasks.values())[:1000])
        estimate = c.state_bytes / 50_000
        del c
    entry = (traced[4] - traced[2]) / 2
    gc.collect()
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    started = time.perf_counter()
    c = Correlator(cfg)
    _fill(c, tasks, 4, t0, wall)
    gc.collect()
    rss = proc.memory_info().rss - rss0
    took = time.perf_counter() - started
    tick = time.perf_counter()
    c.tick(wall + 500)
    tick_ms = (time.perf_counter() - tick) * 1000
    return {
        "open_tasks": len(c.tasks),
        "events_per_task": 4,
        "rss_mib": round(rss / 2**20),
        "rss_bytes_per_open_task": round(rss / tasks),
        "traced_bytes_per_open_task": round(traced[4]),
        "traced_bytes_per_history_entry": round(entry),
        "estimated_bytes_per_open_task": round(estimate),
        "estimate_constants": {"task": TASK_BYTES, "entry": ENTRY_BYTES, "agent": AGENT_BYTES},
        "persisted_slot_bytes_per_open_task": round(slot_json),
        "fill_s": round(took, 1),
        "fill_events_per_s": round(tasks * 4 / took),
        "tick_ms_with_all_open": round(tick_ms, 2),
    }


def _publish_and_time(
    broker: EmbeddedBroker, events: list[dict[str, Any]], ingest: WorkerProc, correlate: WorkerProc, expected: int
) -> tuple[float, float, float, int]:
    """Publish ``events`` (SDK batches of 100) while watching the workers: (publish start,
    last moment ``ingest``'s ClickHouse held no event, when the ``task_executions`` count of
    ``correlate``'s last changed, that count).  Done at ``expected`` tasks or 10 s without change."""
    sql = "SELECT count() FROM taskpulse.task_executions"
    t0 = time.perf_counter()
    publisher = threading.Thread(target=lambda: asyncio.run(publish(broker.url, events, 100)))
    publisher.start()
    last, stable, done_at, empty_at = -1, 0, t0, t0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if ingest.count() == 0:
            empty_at = time.perf_counter()
        n = correlate.count(sql) or 0
        for w in {id(ingest): ingest, id(correlate): correlate}.values():
            w.sample_rss()
        if n != last:
            last, stable, done_at = n, 0, time.perf_counter()
        else:
            stable += 1
        if n >= expected or (n > 0 and stable >= 40):
            break
        time.sleep(0.25)
    publisher.join()
    return t0, empty_at, done_at, last


def correlation_e2e(events: list[dict[str, Any]], workdir: Path, expected_tasks: int) -> dict[str, Any]:
    """Finished tasks/s through ingest + correlation in one worker (SDK batches of 100),
    timed like the ingest rows: from the last moment ClickHouse held no event (the worker
    had joined and was about to write its first batch) to the last finished task; the
    reordering window (a task's record waits ``TASKPULSE_REORDER_WINDOW_S`` after its last
    event, 2 s by default) is inside that time."""
    broker = EmbeddedBroker(log_path=workdir / "tansu.log").start()
    try:
        asyncio.run(ensure_topics(broker.bootstrap, ALL_TOPICS, 4, 3_600_000, 1 << 30))
        w = WorkerProc(broker, workdir / "data", roles="ingest,correlate")
        sql = "SELECT count() FROM taskpulse.task_executions"
        deadline = time.monotonic() + 120
        while w.count(sql) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("worker did not start")
            time.sleep(0.5)
        t0, empty_at, done_at, last = _publish_and_time(broker, events, w, w, expected_tasks)
        w.stop()
        dt = done_at - empty_at
        return {"finished_tasks": last, "expected": expected_tasks, "seconds": round(dt, 2),
                "including_startup_s": round(done_at - t0, 2),
                "tasks_per_s": round(last / dt) if dt > 0 else None, "events_per_s": round(len(events) / dt),
                "peak_rss_mib": w.peak_rss >> 20}
    finally:
        broker.stop()


def correlation_split(events: list[dict[str, Any]], workdir: Path, expected_tasks: int) -> dict[str, Any]:
    """The same traffic through ingest and correlation as two workers (processes, one role
    each), the layout for a machine with more cores: each worker has its own chDB, a stand-in
    for the shared ClickHouse server two processes would write to (chDB is in-process: two
    processes cannot share one).  Timed like ``correlation_e2e``."""
    broker = EmbeddedBroker(log_path=workdir / "tansu.log").start()
    workers: list[WorkerProc] = []
    try:
        asyncio.run(ensure_topics(broker.bootstrap, ALL_TOPICS, 4, 3_600_000, 1 << 30))
        for role in ("ingest", "correlate"):
            (workdir / role).mkdir()
            workers.append(WorkerProc(broker, workdir / role / "data", roles=role))
        ingest, correlate = workers
        sql = "SELECT count() FROM taskpulse.task_executions"
        deadline = time.monotonic() + 120
        while ingest.count() is None or correlate.count(sql) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.5)
        time.sleep(8)  # both joined their groups (the correlation worker's Faust rebalance)
        _, empty_at, done_at, last = _publish_and_time(broker, events, ingest, correlate, expected_tasks)
        dt = done_at - empty_at
        return {"finished_tasks": last, "expected": expected_tasks, "seconds": round(dt, 2),
                "tasks_per_s": round(last / dt) if dt > 0 else None, "events_per_s": round(len(events) / dt),
                "peak_rss_mib_ingest": ingest.peak_rss >> 20, "peak_rss_mib_correlate": correlate.peak_rss >> 20}
    finally:
        for w in workers:
            w.stop()
        broker.stop()


def scaleout_run(events: list[dict[str, Any]], workdir: Path) -> dict[int, dict[str, Any]]:
    """Ingest throughput of 1, then 2 workers (direct engine, role ingest) in one consumer
    group on the same topics, each with its own chDB (a stand-in for one shared server).
    Per run: a fresh broker; the workers up and in the group first; then the events are
    published (SDK batches of 100) and the clock runs until the workers' tables hold them
    all.  Also each run's worker CPU per event.  On a 2-core machine two workers compete
    with each other and their chDB engines for the same two cores: the ratio there says
    what one more core is worth, not what a second host adds."""
    out: dict[int, dict[str, Any]] = {}
    for n in (1, 2):
        with EmbeddedBroker(log_path=workdir / f"tansu-{n}.log") as broker:
            asyncio.run(ensure_topics(broker.bootstrap, ALL_TOPICS, 4, 3_600_000, 1 << 30))
            ws = []
            for i in range(n):
                d = workdir / f"{n}-workers" / f"w{i}"
                (d / "data").mkdir(parents=True)
                ws.append(WorkerProc(broker, d / "data", roles="ingest"))
            try:
                for w in ws:
                    _wait_api(w)
                time.sleep(8)  # the group settles (session timeout 6 s) before the clock starts
                cpu0 = sum(w.ps.cpu_times().user + w.ps.cpu_times().system for w in ws)
                t0 = time.perf_counter()
                asyncio.run(publish(broker.url, events, 100))
                deadline = time.monotonic() + 600
                while sum(w.count() or 0 for w in ws) < len(events):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"scale-out: {n} worker(s) did not write {len(events):,} events in 600 s")
                    time.sleep(0.1)
                dt = time.perf_counter() - t0
                cpu = sum(w.ps.cpu_times().user + w.ps.cpu_times().system for w in ws) - cpu0
                out[n] = {
                    "workers": n, "events": len(events), "cpus": os.cpu_count(),
                    "events_per_s": round(len(events) / dt), "seconds": round(dt, 2),
                    "cpu_us_per_event": round(cpu / len(events) * 1e6, 1),
                    "rows_per_worker": [w.count() for w in ws],
                }  # fmt: skip
            finally:
                for w in ws:
                    w.stop()
    out[2]["speedup"] = round(out[2]["events_per_s"] / out[1]["events_per_s"], 2)
    return out


def _wait_api(w: WorkerProc, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while w.count() is None:
        if time.monotonic() > deadline:
            raise RuntimeError("worker did not start")
        time.sleep(0.5)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return bytes(r.read())


def metrics_run(events: list[dict[str, Any]], workdir: Path, scrapes: int = 30) -> dict[str, Any]:
    """The metrics role on demo traffic: how many series /metrics holds, and how long a scrape takes."""
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, ALL_TOPICS, 4, 3_600_000, 1 << 30))
        w = WorkerProc(broker, workdir / "data", roles="ingest,correlate,metrics")
        try:
            _wait_api(w)
            asyncio.run(publish(broker.url, events, 100))
            deadline = time.monotonic() + 300
            while (w.count() or 0) < len(events) and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(5)  # the metrics role and correlation catch up
            times, body = [], b""
            for _ in range(scrapes):
                t0 = time.perf_counter()
                body = _get(f"{w.api}/metrics")
                times.append(time.perf_counter() - t0)
            series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        finally:
            w.stop()
    times.sort()
    return {"events": len(events), "series": series, "bytes": len(body),
            "scrape_p50_ms": round(times[len(times) // 2] * 1000, 1),
            "scrape_max_ms": round(times[-1] * 1000, 1)}  # fmt: skip


ALERT_RULES = """
routing: {high: [webhook]}
rules:
  - name: bench_failure_rate
    measure: failure_rate
    window: 1m
    op: ">"
    threshold: 0.2
    min_count: 20
    severity: high
"""


def alert_delay_run(workdir: Path, interval_s: float) -> dict[str, Any]:
    """From publishing a burst of failures to the webhook receiving the firing alert."""
    import http.server
    import threading

    from pipeline.sdk import make_event

    arrivals: list[float] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            arrivals.append(time.monotonic())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rules = workdir / "rules.yml"
    rules.write_text(ALERT_RULES)
    try:
        with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
            asyncio.run(ensure_topics(broker.bootstrap, ALL_TOPICS, 4, 3_600_000, 1 << 30))
            w = WorkerProc(
                broker, workdir / "data", roles="ingest,alerts", TASKPULSE_ALERT_RULES=str(rules),
                TASKPULSE_ALERT_INTERVAL_S=str(interval_s),
                TASKPULSE_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{server.server_port}/hook",
            )  # fmt: skip
            try:
                _wait_api(w)
                time.sleep(interval_s + 5)  # the alerts role has led and evaluated
                burst = [make_event("task.failed", f"bench-{i}", {"task_type": "code", "error": "boom"})
                         for i in range(40)]  # fmt: skip
                t0 = time.monotonic()
                asyncio.run(publish(broker.url, burst, 100))
                deadline = t0 + interval_s + 60
                while not arrivals and time.monotonic() < deadline:
                    time.sleep(0.02)
            finally:
                w.stop()
    finally:
        server.shutdown()
    return {"interval_s": interval_s, "delay_s": round(arrivals[0] - t0, 2) if arrivals else None}


HEAVY_SQL = "SELECT count() FROM numbers(1000000000000) WHERE sipHash64(number) % 7 = 3"


def _ingest_rate(broker: EmbeddedBroker, w: WorkerProc, events: list[dict[str, Any]], before: int) -> float:
    """Publish ``events`` (100 per message) and time them until all are visible: events/s."""
    t0 = time.monotonic()
    asyncio.run(publish(broker.url, events, 100))
    wait_all(w, before + len(events), timeout_s=900)
    return len(events) / (time.monotonic() - t0)


def analyst_run(events: list[dict[str, Any]], workdir: Path, engine: str = "direct") -> dict[str, Any]:
    """Ingest rate alone, then while analyst queries that run to their time limit keep one
    read-only session busy (the other answers the row counts)."""
    warm = 5_000  # the first batches (group join, first parts) are not the steady rate
    half = (len(events) - warm) // 2
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, ALL_TOPICS, 4, 3_600_000, 2 * 1024**3))
        w = WorkerProc(broker, workdir / "data", engine, TASKPULSE_SQL_MAX_EXECUTION_S="10")
        try:
            _wait_api(w)
            _ingest_rate(broker, w, events[-warm:], 0)
            alone = _ingest_rate(broker, w, events[:half], warm)
            stop = threading.Event()
            heavy = {"queries": 0, "timeouts": 0}

            def analyst() -> None:
                while not stop.is_set():
                    req = urllib.request.Request(
                        f"{w.api}/api/sql", data=json.dumps({"query": HEAVY_SQL}).encode(),
                        headers={"Content-Type": "application/json"},
                    )  # fmt: skip
                    try:
                        urllib.request.urlopen(req, timeout=60).close()
                    except urllib.error.HTTPError as exc:
                        heavy["timeouts"] += "Timeout exceeded" in exc.read().decode()
                    heavy["queries"] += 1

            thread = threading.Thread(target=analyst, daemon=True)
            thread.start()
            time.sleep(1.0)
            loaded = _ingest_rate(broker, w, events[half : 2 * half], warm + half)
            stop.set()
            thread.join(30)
        finally:
            w.stop()
    return {
        "engine": engine, "events": half, "alone_events_per_s": round(alone),
        "with_heavy_query_events_per_s": round(loaded), "ratio": round(loaded / alone, 3),
        "heavy_queries": heavy["queries"], "heavy_query_timeouts": heavy["timeouts"],
    }  # fmt: skip


def cpu_per_event(events: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU seconds per event of the ingest hot path in this process: decode, validate,
    normalize, dedup, windows, the normalized topic's bytes, ClickHouse rows and the INSERTs
    into a fresh chDB (no Kafka).  Best of three passes; ``process_time`` counts this process
    only, so the figure holds on a busy machine where wall-clock rates do not."""
    import gc
    from datetime import UTC, datetime

    from pipeline.core.ingest.aggregates import SketchMapping
    from pipeline.core.ingest.batch import BatchProcessor, RawMessage
    from pipeline.core.ingest.decode import Decoder
    from pipeline.core.ingest.dedup import SeenIds
    from pipeline.core.ingest.rows import EVENT_JSON, ROLLUP_COLUMNS, event_lines, rollup_rows
    from pipeline.settings import Settings
    from pipeline.sinks.clickhouse import ClickHouseStore
    from pipeline.sinks.privacy import privacy_of

    gc.set_threshold(100_000, 50, 100)  # the worker's collector settings (pipeline.worker)
    privacy = privacy_of(Settings())  # the worker's default: free text redacted, no key
    out: dict[str, Any] = {"events": len(events)}
    with tempfile.TemporaryDirectory(prefix="taskpulse-cpu-") as d:
        store = ClickHouseStore(f"chdb://{d}/ch", "taskpulse")
        store.ensure_schema(True, "bench")
        for name, per, per_batch in (("batched", 100, 50), ("single", 1, 5000)):
            offsets: dict[str, int] = defaultdict(int)
            msgs = []
            for i in range(0, len(events), per):
                chunk = events[i : i + per]
                topic = RAW_TOPICS[chunk[0]["entity_type"]]
                msgs.append(RawMessage(topic, 0, offsets[topic], orjson.dumps(chunk if per > 1 else chunk[0])))
                offsets[topic] += 1
            best = float("inf")
            for _ in range(3):
                proc = BatchProcessor(Decoder(privacy=privacy), SeenIds(1_000_000), SketchMapping())
                t0 = time.process_time()
                now_ms = int(time.time() * 1000)
                for i in range(0, len(msgs), per_batch):
                    batch = proc.process(msgs[i : i + per_batch], now_ms)
                    for seg in batch.parts:
                        b"[" + b",".join(a.payload for a in seg.events) + b"]"
                        store.insert("events", event_lines(seg.events), EVENT_JSON)
                        rows = rollup_rows(seg.rollups, seg.offsets.get("rollups", {}), datetime.now(UTC), seg.logs)
                        store.insert("rollups", rows, ROLLUP_COLUMNS)
                best = min(best, time.process_time() - t0)
            out[f"{name}_cpu_us_per_event"] = round(best / len(events) * 1e6, 1)
        store.close()
    out["cpu_us_per_event"] = out["batched_cpu_us_per_event"]
    return out


def _peer_cells(peers: dict[str, Any], name: str) -> tuple[str]:
    """A peer's events/s and taskpulse's multiple of it: ``1,698 (5.4×)``."""
    r = peers.get(name) or {}
    rate, ratio = r.get("events_per_s"), r.get("taskpulse_over_peer")
    if not rate:
        return ("failed" if r.get("error") else "",)
    return (f"{rate:,} ({ratio:.1f}×)" if ratio else f"{rate:,}",)


def rss_table(results: dict[str, Any]) -> None:
    """Peak RSS of the worker per set of roles it ran (chDB's own ~400 MiB included)."""
    rows = []
    for key, label in (("direct-batched", "ingest (direct engine, batches of 100)"),
                       ("direct-single", "ingest (direct engine, single events)"),
                       ("faust-batched", "ingest (faust engine, batches of 100)"),
                       ("correlation-e2e", "ingest + correlate"), ("metrics", "ingest + metrics")):  # fmt: skip
        r = results.get(key)
        if isinstance(r, dict) and r.get("peak_rss_mib"):
            rows.append((label, f"{r['peak_rss_mib']:,}"))
    if rows:
        table = Table(title="peak RSS of the worker per role set (MiB)")
        table.add_column("roles")
        table.add_column("peak RSS", justify="right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(143)  # run the finally blocks: stop the worker and the broker


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--latency-rate", type=int, default=5000)
    ap.add_argument("--latency-seconds", type=int, default=30)
    ap.add_argument("--only", choices=["single", "batched", "latency", "correlation", "correlation-memory",
                                       "metrics", "alerts", "analyst", "http", "cpu", "peers", "scaleout"],
                    action="append",
                    help="run only these parts (repeatable); default: all")
    ap.add_argument("--open-tasks", type=int, default=1_000_000, help="open tasks for correlation-memory")
    ap.add_argument("--engine", choices=["faust", "direct"], action="append",
                    help="ingest engines to measure (repeatable); default: both")
    ap.add_argument("--quick", action="store_true",
                    help="20,000 events, 5 s of latency, 100,000 open tasks, no peers: for use while developing")
    ap.add_argument("--peers-python", default=str(ROOT / ".venv-peers" / "bin" / "python"),
                    help="the Python of the peers' environment (make bench creates it)")
    args = ap.parse_args()
    if args.quick:
        args.events, args.latency_seconds, args.open_tasks = 20_000, 5, 100_000
    work = Path(tempfile.mkdtemp(prefix="taskpulse-bench-"))
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    try:
        parts = set(args.only or ["single", "batched", "latency", "correlation", "correlation-memory", "metrics",
                                  "alerts", "analyst", "http", "cpu", *([] if args.quick else ["peers", "scaleout"])])
        if "correlation-memory" in parts:  # first, in a process that holds nothing else yet
            console.print(f"[bold]correlation state: memory of {args.open_tasks:,} open tasks (pure correlator)[/]")
            results["correlation-memory"] = correlation_memory(args.open_tasks)
            console.print(results["correlation-memory"])
        events: list[dict[str, Any]] = []
        if parts - {"correlation-memory"}:
            console.print(f"[bold]generating {args.events:,} demo events[/]")
            events = events_for(args.events)
            results["avg_event_bytes"] = round(statistics.mean(len(orjson.dumps(e)) for e in events[:5000]))
        if "cpu" in parts:
            console.print("[bold]CPU per event of the ingest hot path, in process (decode → rows, no Kafka)[/]")
            results["cpu"] = cpu_per_event(events[:50_000])
            console.print(results["cpu"])
        if "analyst" in parts:
            console.print("[bold]ingest rate alone, then while a heavy analyst query runs (direct engine)[/]")
            d = work / "analyst"
            d.mkdir()
            results["analyst"] = analyst_run(events[:200_000], d)
            console.print(results["analyst"])
        if "http" in parts:
            from bench.http_bench import http_run

            console.print(f"[bold]HTTP ingest of {len(events):,} events (NDJSON, 1,000 per request), then "
                          "GET /api/v1/tasks and /kpis latency[/]")
            d = work / "http"
            d.mkdir()
            results["http"] = http_run(events, d, WorkerProc, wait_all)
            console.print(results["http"])
        if "metrics" in parts:
            console.print("[bold]metrics role: series and scrape time on 20,000 demo events[/]")
            d = work / "metrics"
            d.mkdir()
            results["metrics"] = metrics_run(events[:20_000], d)
            console.print(results["metrics"])
        if "alerts" in parts:
            for interval in (1.0, 10.0):
                console.print(f"[bold]alerts: failure burst → webhook, rules evaluated every {interval:g} s[/]")
                d = work / f"alerts-{interval:g}"
                d.mkdir()
                results[f"alerts-{interval:g}s"] = alert_delay_run(d, interval)
                console.print(results[f"alerts-{interval:g}s"])
        if "scaleout" in parts:
            console.print(f"[bold]scale-out: ingest of {len(events):,} events by 1, then 2 workers in one group "
                          f"({os.cpu_count()} cores bound it)[/]")
            d = work / "scaleout"
            d.mkdir()
            for n, r in scaleout_run(events, d).items():
                results[f"scaleout-{n}w"] = r
                console.print(r)
        if "correlation" in parts:
            console.print("[bold]correlation: the pure correlator, then ingest + correlation end to end[/]")
            pure = results["correlation-pure"] = correlation_pure(events)
            console.print(pure)
            d = work / "correlation"
            d.mkdir()
            e2e = results["correlation-e2e"] = correlation_e2e(events, d, pure["finished_tasks"])
            console.print(e2e)
            console.print("[bold]the same, ingest and correlation as two workers (one process per role)[/]")
            d = work / "correlation-split"
            d.mkdir()
            results["correlation-split"] = correlation_split(events, d, pure["finished_tasks"])
            console.print(results["correlation-split"])
        engines = args.engine or ["faust", "direct"]
        for engine in engines:
            for name, bs in (("single", 1), ("batched", 100)):
                if name not in parts:
                    continue
                console.print(f"[bold]{engine} engine, {name} messages ({bs} event(s) per message)[/]")
                d = work / f"{engine}-{name}"
                d.mkdir()
                peers = args.peers_python if "peers" in parts and engine == "direct" else None
                results[f"{engine}-{name}"] = throughput_run(events, bs, d, engine, peers)
            if "latency" in parts:
                console.print(f"[bold]{engine} engine, latency at {args.latency_rate:,} events/s "
                              f"for {args.latency_seconds}s[/]")
                d = work / f"{engine}-latency"
                d.mkdir()
                results[f"{engine}-latency"] = latency_run(args.latency_rate, args.latency_seconds, 10, d, engine)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = Table(title=f"taskpulse bench ({results.get('avg_event_bytes')} bytes/event avg, 4 partitions)")
    for col in ("run", "events/s", "ceiling", "÷ ceiling", "peak RSS MiB", "Quix Streams (×)",
                "Faust tables (×)"):
        table.add_column(col, justify="right")
    for r in results.values():
        if not isinstance(r, dict) or "pipeline_events_per_s" not in r:
            continue
        table.add_row(
            f"{r['engine']}, {r['events_per_message']}/msg",
            f"{r['pipeline_events_per_s']:,}",
            f"{r['ceiling_events_per_s']:,}",
            f"{r['ratio']:.2f}",
            f"{r['peak_rss_mib']:,}",
            *_peer_cells(r.get("peers", {}), "quix"),
            *_peer_cells(r.get("peers", {}), "faust_tables"),
        )
    if table.row_count:  # a run of other parts only (--only correlation-memory…) has no ingest table
        console.print(table)
    for lat in results.values():
        if isinstance(lat, dict) and "p99_s" in lat:
            console.print(
                f"{lat['engine']} engine, publish → visible in ClickHouse at {lat['rate_events_per_s']:,} events/s: "
                f"p50 {lat['p50_s']} s, p99 {lat['p99_s']} s, max {lat['max_s']} s ({lat['measured']:,} events)"
            )
    rss_table(results)
    print_targets(results, console)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"written to {out / 'latest.json'}")
    history.append_and_compare(out / "history.jsonl", ROOT, results, "quick" if args.quick else "full", console)


if __name__ == "__main__":
    main()
