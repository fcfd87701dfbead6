"""HTTP ingest (POST /api/v1/events) against the real broker and engine: good, bad and duplicate
events posted concurrently by several clients that resend any request left unanswered, the
worker SIGKILLed once in the middle; each good event ends in ClickHouse exactly once (with
the token's name as its source), each bad one in the DLQ with the reason the answer gave.
An unreachable broker gives 503, never a 2xx; the standalone `taskpulse api` serves too."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.embedded import EmbeddedBroker, free_port
from pipeline.sdk import make_event
from tests.integration.api_client import call, tokens_file
from tests.integration.conftest import ROOT, wait_for

pytestmark = pytest.mark.integration

SECRETS = {"svc-a": ("writer", "svc-a-secret-0123456789"), "svc-b": ("writer", "svc-b-secret-0123456789")}
READER = ("reader", "reader-secret-0123456789")


def _events(run: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, str], list[str]]:
    """(good events, bad events by id with their expected reason, invalid JSON lines by marker)."""
    now = datetime.now(UTC)
    good = []
    for i in range(1500):
        kind = i % 3
        ts = now - timedelta(seconds=i % 600)
        if kind == 0:
            e = make_event("system.metric", f"svc-{i % 7}", {"name": "q", "value": float(i), "unit": "n"}, timestamp=ts)
        elif kind == 1:
            e = make_event("agent.heartbeat", f"agent-{i % 5}", {"cpu_percent": 5.0, "active_tasks": 1}, timestamp=ts)
        else:
            e = make_event("user.request", f"user-{i % 9}", {"user_id": f"u{i}", "request": "hi"}, timestamp=ts)
        e["id"] = f"good-{run}-{i}"
        good.append(e)
    bad: dict[str, dict[str, Any]] = {}
    for i in range(120):
        e = make_event("system.metric", "svc-bad", {"name": "q", "value": 1.0, "unit": "n"})
        e["id"] = f"bad-{run}-{i}"
        if i % 3 == 0:
            e["timestamp"], reason = "half past nine", "bad_timestamp"
        elif i % 3 == 1:
            e["event_type"], reason = "system.exploded", "unknown_event_type"
        else:
            e["entity_id"], reason = None, "schema_violation"
        bad[e["id"]] = {"event": e, "reason": reason}
    markers = {f"nojson-{run}-{i}": f'{{"id": "nojson-{run}-{i}", oops' for i in range(20)}
    return good, bad, markers, list(markers)


def test_concurrent_clients_with_retries_and_a_sigkill_store_each_good_event_once(
    broker: EmbeddedBroker, make_worker: Any, tmp_path: Path, engine: str
) -> None:  # fmt: skip
    toks = tokens_file(tmp_path / "tokens", {**SECRETS, "reader": READER})
    w = make_worker(engine=engine, TASKPULSE_ROLES="ingest", TASKPULSE_API_TOKENS_FILE=str(toks),
                    TASKPULSE_API_INGEST_RATE_LIMIT="100000/second")  # fmt: skip
    w.token = READER[1]
    w.start()
    run = f"{random.randrange(16**6):06x}"
    good, bad, markers, _ = _events(run)
    dupes = random.Random(1).sample(good, 300)
    lines: list[bytes] = [json.dumps(e).encode() for e in good + dupes]
    lines += [json.dumps(b["event"]).encode() for b in bad.values()]
    lines += [m.encode() for m in markers.values()]
    random.Random(2).shuffle(lines)
    requests: queue.Queue[tuple[int, bytes, bool]] = queue.Queue()
    for n, k in enumerate(range(0, len(lines), 40)):
        requests.put((n, b"\n".join(lines[k : k + 40]), n % 3 == 0))
    total_requests = requests.qsize()
    answers: dict[int, dict[str, Any]] = {}
    lock = threading.Lock()
    retries = [0]

    def client(name: str) -> None:
        secret = SECRETS[name][1]
        while True:
            try:
                n, body, zipped = requests.get_nowait()
            except queue.Empty:
                return
            headers = {"Content-Type": "application/x-ndjson"}
            data = body
            if zipped:
                headers["Content-Encoding"] = "gzip"
                data = gzip.compress(body)
            while True:  # resend until answered: a kill mid-request leaves it unanswered
                try:
                    status, _, answer = call(w.api, "POST", "/api/v1/events", data, token=secret, headers=headers,
                                             timeout=30)  # fmt: skip
                except (OSError, http.client.HTTPException):  # refused, reset, cut mid-answer
                    status, answer = 0, None
                if status == 200:
                    with lock:
                        answers[n] = {"client": name, **answer}
                    break
                assert status in (0, 503), (status, answer)  # never another answer
                with lock:
                    retries[0] += 1
                time.sleep(0.3)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in ("svc-a", "svc-b", "svc-a", "svc-b")]
    for t in threads:
        t.start()
    wait_for(lambda: len(answers) >= total_requests // 3, 120, "a third of the requests answered")
    w.kill()  # SIGKILL while requests are in flight
    time.sleep(1)
    w.start()
    for t in threads:
        t.join(240)
    assert len(answers) == total_requests and not any(t.is_alive() for t in threads)
    print(f"\n{total_requests} requests, {retries[0]} resent (unanswered or 503) around the SIGKILL")

    # every answer names each event's fate, with the DLQ's reason codes
    results = [r for a in answers.values() for r in a["results"]]
    by_id: dict[str, set[str]] = {}
    for r in results:
        if r["id"]:
            by_id.setdefault(r["id"], set()).add(r["status"] if r["status"] == "accepted" else r["reason"])
    assert all(by_id[e["id"]] == {"accepted"} for e in good)
    assert all(by_id[i] == {b["reason"]} for i, b in bad.items())
    nojson = [r for r in results if r["reason"] == "invalid_json"]
    assert len(nojson) == len(markers)

    # each good event exactly once in ClickHouse, with the posting token as its source
    want = len(good)
    wait_for(lambda: w.scalar(f"SELECT uniqExact(id) FROM taskpulse.events WHERE startsWith(id, 'good-{run}-')")
             == want, 120, "every good event")  # fmt: skip
    time.sleep(3)  # anything still in flight would show up as a second copy now
    assert w.sql(f"SELECT count(), uniqExact(id) FROM taskpulse.events WHERE startsWith(id, 'good-{run}-')") == [
        [want, want]]  # fmt: skip
    sources = dict(w.sql(f"SELECT JSONExtractString(metadata, 'source'), count() FROM taskpulse.events "
                         f"WHERE startsWith(id, 'good-{run}-') GROUP BY 1"))  # fmt: skip
    assert set(sources) <= {"svc-a", "svc-b"} and sum(sources.values()) == want

    # each bad event in the DLQ with its reason (a resent request may add a second entry)
    def dlq() -> dict[str, set[str]]:
        rows = w.sql(f"SELECT event_id, reason FROM taskpulse.dlq WHERE startsWith(event_id, 'bad-{run}-')")
        out: dict[str, set[str]] = {}
        for i, reason in rows:
            out.setdefault(i, set()).add(reason)
        return out

    wait_for(lambda: len(dlq()) == len(bad), 60, "every bad event in the DLQ")
    assert dlq() == {i: {b["reason"]} for i, b in bad.items()}
    originals = [r[0] for r in w.sql("SELECT original FROM taskpulse.dlq WHERE reason = 'invalid_json'")]
    assert all(any(m in o for o in originals) for m in markers)


def test_standalone_api_answers_503_when_the_broker_is_gone(broker: EmbeddedBroker, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ, "TASKPULSE_KAFKA_URL": broker.url, "TASKPULSE_DATA_DIR": str(tmp_path / "data"),
        "TASKPULSE_API_PORT": str(port), "TASKPULSE_API_TOKEN": "admin-secret-0123456789",
    }  # fmt: skip
    mig = subprocess.run([sys.executable, "-m", "pipeline", "migrate"], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert mig.returncode == 0, mig.stderr
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "api"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)  # fmt: skip
    base, token = f"http://127.0.0.1:{port}", env["TASKPULSE_API_TOKEN"]
    try:
        wait_for(lambda: _answers(base, token), 60, "the standalone API")
        status, _, body = call(base, "GET", "/api/v1/tasks", token=token)
        assert status == 200 and body == {"items": [], "next_cursor": None}
        st = call(base, "GET", "/api/status", token=token)[2]
        assert st["roles"] == [] and st["api"] == {"mode": "standalone"}
        event = make_event("system.health", "standalone", {"status": "ok"})
        status, _, body = call(base, "POST", "/api/v1/events", json.dumps(event).encode(), token=token)
        assert status == 200 and body["accepted"] == 1, body

        broker.stop()
        for _ in range(3):
            event = make_event("system.health", "standalone", {"status": "ok"})
            status, hdrs, body = call(base, "POST", "/api/v1/events", json.dumps(event).encode(), token=token,
                                      timeout=60)  # fmt: skip
            assert status == 503, (status, body)
            assert body["error"]["code"] == "broker_unavailable" and "Retry-After".lower() in hdrs
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
    text = (tmp_path / "api.log").read_text(errors="replace")
    assert token not in text


def _answers(base: str, token: str) -> bool:
    try:
        return call(base, "GET", "/api/status", token=token, timeout=5)[0] == 200
    except OSError:
        return False
