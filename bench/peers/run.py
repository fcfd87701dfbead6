"""Runs the peers on the bench's broker and topics, after taskpulse read the same events:
Quix Streams (its own environment, ``bench/peers/requirements.txt``) and a Faust agent with
windowed tables.  Each reads every event from the start of the topics, with a fresh
consumer group; the rate is measured from its first event to its N-th."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def quix(python: str, bootstrap: str, n: int, topics: list[str], timeout_s: float = 300) -> dict[str, Any]:
    if not Path(python).exists():
        return {"skipped": f"no peers environment at {python} (make bench creates it)"}
    try:
        out = subprocess.run([python, str(HERE / "quix_windows.py"), bootstrap, str(n), *topics],
                             capture_output=True, text=True, timeout=timeout_s, check=True)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"Quix Streams did not count {n:,} events within {timeout_s:.0f} s"}
    except subprocess.CalledProcessError as exc:
        return {"error": f"Quix Streams failed: {exc.stderr[-500:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def faust_tables(bootstrap: str, n: int, topics: list[str], timeout_s: float = 180) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="faust-peer-") as d:
        stats = Path(d) / "stats"
        proc = subprocess.Popen([sys.executable, str(HERE / "faust_tables.py"), bootstrap, str(stats), *topics],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d,
                                env={**os.environ, "PYTHONPATH": str(HERE.parents[1])})  # fmt: skip
        deadline = time.monotonic() + timeout_s
        count, first, last = 0, 0.0, 0.0
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(1)
                try:
                    count_s, first_s, last_s = stats.read_text().split()
                except (OSError, ValueError):
                    continue
                count, first, last = int(count_s), float(first_s), float(last_s)
                if count >= n:
                    break
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if count < n:
        return {"error": f"the Faust windowed-table agent counted {count:,} of {n:,} events in {timeout_s:.0f} s",
                "events_per_s": round(count / (last - first)) if last > first else None}  # fmt: skip
    return {"events": count, "seconds": round(last - first, 2), "events_per_s": round(count / (last - first))}


def peer_runs(python: str, bootstrap: str, n: int, topics: list[str], taskpulse_rate: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, run in (("quix", lambda: quix(python, bootstrap, n, topics)),
                      ("faust_tables", lambda: faust_tables(bootstrap, n, topics))):  # fmt: skip
        r = run()
        rate = r.get("events_per_s")
        if isinstance(rate, int | float) and rate > 0:
            r["events_per_s"] = round(rate)
            r["taskpulse_over_peer"] = round(taskpulse_rate / rate, 2)
        out[name] = r
    return out
