"""`make soak`: millions of events through one worker with every role, RSS sampled every
10 s.  Passes when, after the warm-up (the first 1,000,000 events), the worker's RSS stays
within ±10 % of its level at the end of the warm-up, and every published event is
accounted for (stored, duplicate or dead-lettered).

    python bench/soak.py [--events 5000000] [--warmup 1000000] [--rate 0]

Events are generated and published while the worker runs (SDK batches of 100, paced to
``--rate`` events/s when given), so the broker never holds more than the run needs at once.
The correlation role emits events of its own (``task.abandoned``, ``agent.status_changed``)
into the raw topics; they are counted on the ingest side too, so the check is
``stored + duplicates + rejected == published + emitted``.  Prints the RSS samples; appends
the result to ``bench/results/soak.jsonl``; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.history import git_rev  # noqa: E402
from bench.run import WorkerProc  # noqa: E402
from pipeline.demo import DemoFleet  # noqa: E402
from pipeline.embedded import EmbeddedBroker  # noqa: E402
from pipeline.sdk import TaskpulseProducer  # noqa: E402
from pipeline.sinks.kafka import ensure_topics  # noqa: E402
from pipeline.topics import ALL_TOPICS  # noqa: E402

console = Console()
SAMPLE_S = 10.0


def _status(w: WorkerProc) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{w.api}/api/status", timeout=10) as r:
            return json.load(r)  # type: ignore[no-any-return]
    except Exception:  # noqa: BLE001 - not up yet / busy
        return None


def _section(status: dict[str, Any] | None, role: str) -> dict[str, Any]:
    if not status:
        return {}
    if role == "ingest":  # its fields stand at the top level of /api/status
        return status
    section = status.get(role)
    return section if isinstance(section, dict) else {}


async def _publish(url: str, n: int, rate: float, progress: list[int]) -> None:
    """n demo events, generated as they are sent (event times end about now)."""
    fleet = DemoFleet(seed=5151, tasks_per_s=60.0)
    span_ms = int(n / fleet.events_per_s() * 1000) + 600_000
    stream = fleet.stream(int(time.time() * 1000) - span_ms)
    t0 = time.monotonic()
    async with TaskpulseProducer(url, batch_size=100, linger_ms=20) as p:
        sent = 0
        while sent < n:
            chunk = [next(stream) for _ in range(min(10_000, n - sent))]
            await p.send_many(chunk)
            sent += len(chunk)
            progress[0] = sent
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - t0)
                if ahead > 0:
                    await asyncio.sleep(ahead)


def soak(events: int, warmup: int, rate: float, workdir: Path) -> dict[str, Any]:
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, ALL_TOPICS, 4, 6 * 3_600_000, 8 * 1024**3))
        w = WorkerProc(broker, workdir / "data", roles="ingest,correlate,alerts,metrics")
        broker_ps = psutil.Process(broker.proc.pid) if broker.proc else None
        progress = [0]
        publisher = threading.Thread(target=lambda: asyncio.run(_publish(broker.url, events, rate, progress)))
        samples: list[dict[str, Any]] = []
        t0 = time.monotonic()
        try:
            while _status(w) is None:
                if time.monotonic() - t0 > 180:
                    raise SystemExit("the worker did not start")
                time.sleep(1)
            publisher.start()
            settled = 0
            last_consumed = -1
            while True:
                time.sleep(SAMPLE_S)
                st = _status(w)
                ing = _section(st, "ingest")
                consumed = int(ing.get("events_consumed", last_consumed if last_consumed >= 0 else 0))
                sample = {
                    "t_s": round(time.monotonic() - t0, 1),
                    "published": progress[0],
                    "consumed": consumed,
                    "rss_mib": w.ps.memory_info().rss >> 20,
                    "broker_rss_mib": broker_ps.memory_info().rss >> 20 if broker_ps else None,
                }
                samples.append(sample)
                console.print(sample)
                done = not publisher.is_alive() and consumed >= progress[0]
                settled = settled + 1 if done and consumed == last_consumed else 0
                last_consumed = consumed
                if settled >= 3:  # nothing new for 30 s after the input ended
                    break
                if time.monotonic() - t0 > 4 * 3600:
                    raise SystemExit("soak did not finish within 4 hours")
            st = _status(w) or {}
        finally:
            w.stop()
            publisher.join(timeout=5)
    ing, cor = _section(st, "ingest"), _section(st, "correlate")
    stored = int(ing.get("events_accepted", 0))
    duplicates = int(ing.get("duplicates", 0))
    rejected = sum(int(v) for v in (ing.get("rejected") or {}).values())
    emitted = int((cor.get("rows_written") or {}).get("emitted", 0))
    table_rows = (ing.get("table_rows") or {}).get("events")
    after = [s["rss_mib"] for s in samples if s["consumed"] >= warmup]
    base = after[0] if after else None
    drift = max(abs(r - base) / base for r in after) if base else None
    accounted = stored + duplicates + rejected == events + emitted
    return {
        "events": events,
        "warmup": warmup,
        "emitted_by_correlation": emitted,
        "stored": stored,
        "events_table_rows": table_rows,
        "duplicates": duplicates,
        "rejected": rejected,
        "accounted": accounted,
        "rss_after_warmup_mib": base,
        "rss_peak_mib": max((s["rss_mib"] for s in samples), default=None),
        "rss_drift_after_warmup": None if drift is None else round(drift, 3),
        "flat": drift is not None and drift <= 0.10,
        "broker_rss_peak_mib": max((s["broker_rss_mib"] or 0 for s in samples), default=None),
        "seconds": samples[-1]["t_s"] if samples else None,
        "samples": samples,
    }


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--warmup", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=0, help="publish at most this many events/s (0: as fast as possible)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskpulse-soak-") as d:
        r = soak(args.events, args.warmup, args.rate, Path(d))
    summary = {k: v for k, v in r.items() if k != "samples"}
    console.print(summary)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    with (out / "soak.jsonl").open("a") as f:
        f.write(json.dumps({"rev": git_rev(ROOT), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            **r}) + "\n")  # fmt: skip
    ok = r["accounted"] and r["flat"]
    console.print("[green]soak passed[/]" if ok else "[red]soak failed[/]: "
                  f"accounted={r['accounted']} flat={r['flat']} (drift {r['rss_drift_after_warmup']})")  # fmt: skip
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
