"""The tracker's HTTP transport against a small real HTTP server that answers as the
``POST /api/v1/events`` contract says: 503 while the broker is away (the events wait in the
spool and go out in order afterwards), 413 (the batch is split), per-event rejections
(counted), gzip bodies, the bearer token."""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from taskpulse import Tracker
from taskpulse.transport import HttpTransport


class Endpoint:
    def __init__(self) -> None:
        self.mode = "ok"  # ok | unavailable
        self.max_events = 10_000
        self.events: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.headers.get("Authorization") != "Bearer tok":
                    return self._answer(401, {"error": {"code": "unauthorized", "message": "no"}})
                if endpoint.mode == "unavailable":
                    return self._answer(503, {"error": {"code": "broker_unavailable", "message": "down"}},
                                        {"Retry-After": "0"})  # fmt: skip
                docs = json.loads(body)
                if len(docs) > endpoint.max_events:
                    return self._answer(413, {"error": {"code": "too_large", "message": "split"}})
                results = []
                for i, d in enumerate(docs):
                    bad = d["event_type"] == "agent.self_report" and d["current_state"].get("status") == "bogus"
                    if not bad:
                        endpoint.events.append(d)
                    results.append({"index": i, "id": d["id"], "status": "rejected" if bad else "accepted",
                                    "reason": "schema_violation" if bad else None, "detail": None})  # fmt: skip
                accepted = sum(r["status"] == "accepted" for r in results)
                self._answer(200, {"accepted": accepted, "duplicates": 0, "rejected": len(docs) - accepted,
                                   "results": results})  # fmt: skip

            def _answer(self, status: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                endpoint.statuses.append(status)
                data = json.dumps(doc).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_unavailable_then_back_in_order_split_when_too_large_and_rejections_counted(tmp_path):
    ep = Endpoint()
    try:
        ep.mode = "unavailable"
        tp = Tracker(HttpTransport(ep.url, "tok"), spool_dir=tmp_path / "spool", agent="a", retry_max_s=0.2)
        for i in range(50):
            tp.emit("system.metric", "seq", {"name": "seq", "value": i})
        assert not tp.flush(1)
        assert tp.stats().pending == 50 and 503 in ep.statuses
        ep.mode, ep.max_events = "ok", 7  # back, but takes at most 7 events per request
        tp.agent().report_status("bogus")
        assert tp.flush(30)
        stats = tp.stats()
        tp.close()
    finally:
        ep.close()
    assert [e["current_state"]["value"] for e in ep.events] == list(range(50))  # in emit order, once each
    assert 413 in ep.statuses
    assert stats.sent == 50 and stats.rejected == {"schema_violation": 1} and stats.pending == 0


def test_background_heartbeat_samples_the_process_and_counts_open_tasks(tmp_path):
    ep = Endpoint()
    try:
        tp = Tracker(HttpTransport(ep.url, "tok"), spool_dir=tmp_path / "spool", agent="hb-agent")
        task = tp.task("long", "t-open").start()  # an open tracked task of hb-agent
        tp.start_heartbeat(interval_s=0.2)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len([e for e in ep.events if e["event_type"] == "agent.heartbeat"]) < 2:
            tp.flush(1)
            time.sleep(0.05)
        tp.stop_heartbeat()
        task.complete()
        assert tp.flush(10)
        tp.close()
    finally:
        ep.close()
    beats = [e for e in ep.events if e["event_type"] == "agent.heartbeat"]
    assert len(beats) >= 2
    state = beats[0]["current_state"]
    assert beats[0]["entity_id"] == "hb-agent" and state["active_tasks"] == 1
    assert state["cpu_percent"] >= 0 and state["memory_mb"] > 1


def test_a_result_json_cannot_hold_is_sent_as_text_not_raised(tmp_path):
    class Report:
        def __str__(self) -> str:
            return "Report(3 files)"

    ep = Endpoint()
    try:
        tp = Tracker(HttpTransport(ep.url, "tok"), spool_dir=tmp_path / "spool", agent="a")
        with tp.task("write", "t-1") as t:
            t.result = {"report": Report(), "raw": b"bytes"}
        assert tp.flush(10)
        tp.close()
    finally:
        ep.close()
    done = [e for e in ep.events if e["event_type"] == "task.completed"][0]
    assert done["current_state"]["result"] == {"report": "Report(3 files)", "raw": "b'bytes'"}
