"""The locked-down API on real workers (chDB, Tansu): read-only analyst SQL through
/api/sql and `taskpulse sql`, bearer tokens and roles, the refusal to serve a
non-loopback address without a token, and secrets kept out of logs and /api/status when a
webhook fails."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pipeline.demo import DemoFleet
from pipeline.embedded import EmbeddedBroker, free_port
from tests.integration.alerting_fixtures import Received, Receiver
from tests.integration.conftest import ROOT, Worker, publish, wait_for
from tests.integration.test_alerting import FAILURE_RULES, _finished

pytestmark = pytest.mark.integration


def _http(
    url: str, method: str = "GET", body: bytes | None = None, token: str = "", content_type: str = "application/json"
) -> tuple[int, str]:
    headers = {"Content-Type": content_type} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _sql(w: Worker, query: str, token: str = "") -> tuple[int, dict[str, Any]]:
    status, text = _http(f"{w.api}/api/sql", "POST", json.dumps({"query": query}).encode(), token or w.token)
    return status, json.loads(text)


def _cli(w: Worker, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args], env={**w.env, "TASKPULSE_API_URL": w.api, **env},
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _forbidden(tmp_path: Path) -> tuple[list[tuple[str, str]], Path, list[Path]]:
    """(query, what the refusal says) for each forbidden class; the secret file; files that must not appear."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT\n")
    out1, out2 = tmp_path / "written1.csv", tmp_path / "written2.txt"
    closed = free_port()
    return [
        ("CREATE TABLE taskpulse.evil (a Int8) ENGINE = Memory", "CREATE statement"),
        ("INSERT INTO taskpulse.dlq (reason) VALUES ('forged')", "INSERT statement"),
        ("DROP TABLE taskpulse.dlq", "DROP statement"),
        ("ALTER TABLE taskpulse.events DELETE WHERE 1", "ALTER statement"),
        ("TRUNCATE TABLE taskpulse.events", "refused"),
        (f"SELECT * FROM file('{secret}', 'LineAsString')", "table function file()"),
        (f"SELECT file('{secret}')", "function file()"),
        (f"INSERT INTO FUNCTION file('{out1}', 'CSV') SELECT 1", "INSERT statement"),
        (f"SELECT 1 INTO OUTFILE '{out2}'", "INTO OUTFILE"),
        (f"SELECT * FROM url('http://127.0.0.1:{closed}/x', 'CSV', 'a String')", "table function url()"),
        ("SELECT * FROM executable('id', 'TSV', 'a String')", "table function executable()"),
        ("SELECT * FROM remote('127.0.0.1:9000', system.one)", "table function remote()"),
        ("SELECT query FROM system.processes", "system.processes is not readable"),
        ("SELECT 1 SETTINGS readonly = 0", "SETTINGS clause"),
        ("SELECT count() FROM numbers(10) SETTINGS max_execution_time = 0, max_result_rows = 0", "SETTINGS clause"),
        ("SET readonly = 0", "refused"),
    ], secret, [out1, out2]  # fmt: skip


def test_analyst_sql_refuses_every_forbidden_class_and_reads_every_table(make_worker, tmp_path):
    w = make_worker().start()
    forbidden, _, never_written = _forbidden(tmp_path)
    for query, says in forbidden:
        t0 = time.monotonic()
        status, body = _sql(w, query)
        took = time.monotonic() - t0
        assert status == 400, (query, body)
        assert says in body["error"], (query, body)
        assert "TOP-SECRET-CONTENT" not in json.dumps(body)
        assert took < 5, f"{query}: answered after {took:.1f}s"
        # the same through the command line, which talks to the running worker
        out = _cli(w, "sql", query)
        assert out.returncode == 2, (query, out.stdout, out.stderr)
        assert says in " ".join(out.stderr.split()), (query, out.stderr)
        assert "TOP-SECRET-CONTENT" not in out.stdout + out.stderr
    assert not any(p.exists() for p in never_written)

    # every table and view of the taskpulse database is still there and readable
    status, body = _sql(w, "SELECT name FROM system.tables WHERE database = 'taskpulse' ORDER BY name")
    assert status == 200, body
    tables = [r[0] for r in body["rows"]]
    assert {"events", "rollups", "dlq", "task_executions", "alerts", "agent_status"} <= set(tables)
    for table in tables:
        status, body = _sql(w, f"SELECT * FROM taskpulse.{table} LIMIT 1")
        assert status == 200, (table, body)
    for query in ("SHOW TABLES FROM taskpulse", "DESCRIBE TABLE taskpulse.events", "EXISTS TABLE taskpulse.dlq",
                  "SELECT sum(number) FROM numbers(10)", "EXPLAIN SELECT count() FROM taskpulse.events",
                  "WITH t AS (SELECT 1 AS x) SELECT x FROM t UNION ALL SELECT 2"):  # fmt: skip
        status, body = _sql(w, query)
        assert status == 200, (query, body)
    out = _cli(w, "sql", "--format", "json", "SELECT count() AS n FROM taskpulse.dlq")
    assert out.returncode == 0 and json.loads(out.stdout) == [{"n": 0}], out.stderr

    # no GET runs SQL; a form body is refused (a web page could send one); /metrics open on loopback
    assert _http(f"{w.api}/api/sql?query=SELECT+1")[0] == 405
    form = _http(f"{w.api}/api/sql", "POST", b"query=SELECT+1", content_type="application/x-www-form-urlencoded")
    assert form[0] == 415
    assert _http(f"{w.api}/metrics")[0] == 200


def test_a_slow_analyst_query_is_stopped_at_its_limit_and_never_holds_up_ingest(make_worker, broker, tmp_path):
    w = make_worker(TASKPULSE_SQL_MAX_EXECUTION_S="6", TASKPULSE_SQL_MAX_RESULT_ROWS="1000").start()
    heavy: dict[str, Any] = {}

    def run_heavy() -> None:
        t0 = time.monotonic()
        heavy["answer"] = _sql(w, "SELECT count() FROM numbers(1000000000000) WHERE sipHash64(number) % 7 = 3")
        heavy["took"] = time.monotonic() - t0

    thread = threading.Thread(target=run_heavy)
    thread.start()
    time.sleep(0.5)
    events = DemoFleet(seed=5).take(300, int(time.time() * 1000) - 60_000)
    publish(broker, events)
    t0 = time.monotonic()
    wait_for(lambda: w.scalar("SELECT count() FROM taskpulse.events") >= 300, 30, "300 events")
    ingested_after = time.monotonic() - t0
    assert thread.is_alive(), "the heavy query ended before the events were written: no overlap shown"
    thread.join(30)
    status, body = heavy["answer"]
    assert status == 400 and "Timeout exceeded" in body["error"], body
    assert 5 <= heavy["took"] < 15, heavy["took"]
    print(f"\n300 events written {ingested_after:.2f}s after publishing while the analyst query ran")

    # the result cap: refused beyond max rows, with the setting's name in the answer
    assert _sql(w, "SELECT number FROM numbers(1000)")[0] == 200
    status, body = _sql(w, "SELECT number FROM numbers(5000)")
    assert status == 400 and "Limit for result exceeded" in body["error"], body


def _tokens_file(tmp_path: Path, **secrets: tuple[str, str]) -> Path:
    path = tmp_path / "tokens"
    lines = [f"{name}:{role}:sha256:{hashlib.sha256(s.encode()).hexdigest()}" for name, (role, s) in secrets.items()]
    path.write_text("# name:role:sha256:hex\n" + "\n".join(lines) + "\n")
    return path


def test_tokens_guard_every_route_and_roles_limit_them(make_worker, tmp_path):
    admin, reader, operator, scraper = "admin-" + "a" * 30, "reader-" + "r" * 30, "oper-" + "o" * 30, "m" * 40
    tokens = _tokens_file(tmp_path, analyst=("reader", reader), oncall=("operator", operator))
    port = free_port()
    w = make_worker(
        TASKPULSE_API_HOST="0.0.0.0", TASKPULSE_API_PORT=str(port), TASKPULSE_API_TOKEN=admin,
        TASKPULSE_API_TOKENS_FILE=str(tokens), TASKPULSE_API_METRICS_TOKEN=scraper,
    )  # fmt: skip
    w.api, w.token = f"http://127.0.0.1:{port}", reader
    w.start()

    for token in ("", "wrong-token", reader[:-1]):
        assert _http(f"{w.api}/api/status", token=token)[0] == 401
        assert _sql(w, "SELECT 1", token=token or "-")[0] == 401
        assert _http(f"{w.api}/api/v1/stream", token=token)[0] == 401  # the web UI's data
        page = _http(f"{w.api}/", token=token)  # the web UI's page holds no data: open, it asks for a token
        assert page[0] == 200 and "<title>taskpulse" in page[1] and "task-" not in page[1]
        assert _http(f"{w.api}/metrics", token=token)[0] == 401  # not loopback-bound: /metrics needs a token
    assert _http(f"{w.api}/api/status", token=reader)[0] == 200
    # the UI's open prefix reaches its static files only, however the path is spelt
    import http.client

    for raw in ("/ui/../api/status", "/ui/%2e%2e/api/status", "/ui/..%2fapi%2fstatus", "/ui//api/status"):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", raw)
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        assert r.status in (401, 404) and "roles" not in body, (raw, r.status, body[:200])
    assert _sql(w, "SELECT 1", token=reader) == (200, {"columns": ["1"], "rows": [[1]]})
    assert _http(f"{w.api}/metrics", token=scraper)[0] == 200
    assert _sql(w, "SELECT 1", token=scraper)[0] == 200  # the scraper's token is a reader token
    # a reader cannot do operator things; an operator gets past the guard (no such route yet)
    replay = (f"{w.api}/api/v1/dlq/replay", "POST", b"{}")
    assert _http(*replay, token=reader)[0] == 403
    assert _http(*replay, token=operator)[0] == 404
    assert _http(f"{w.api}/api/anything", "POST", b"{}", token=operator)[0] == 403
    assert _http(f"{w.api}/api/anything", "POST", b"{}", token=admin)[0] == 404
    assert _http(f"{w.api}/api/sql?query=SELECT+1", token=admin)[0] == 405

    # the CLI sends TASKPULSE_API_TOKEN; without a good one it says so, and never falls back
    out = _cli(w, "sql", "--format", "json", "SELECT 41 + 1 AS n", TASKPULSE_API_TOKEN=reader)
    assert out.returncode == 0 and json.loads(out.stdout) == [{"n": 42}], out.stderr
    out = _cli(w, "sql", "SELECT 1", TASKPULSE_API_TOKEN="wrong-token")
    assert out.returncode == 2 and "TASKPULSE_API_TOKEN" in out.stderr and "401" in out.stderr, out.stderr
    out = _cli(w, "status", TASKPULSE_API_TOKEN=operator)
    assert out.returncode == 0 and "taskpulse" in out.stdout, out.stderr
    assert admin not in w.log() and reader not in w.log()


def test_a_worker_on_a_public_address_without_a_token_does_not_start(broker: EmbeddedBroker, tmp_path: Path):
    env = {**os.environ, "TASKPULSE_KAFKA_URL": broker.url, "TASKPULSE_DATA_DIR": str(tmp_path),
           "TASKPULSE_API_HOST": "0.0.0.0", "TASKPULSE_API_PORT": str(free_port())}  # fmt: skip
    env.pop("TASKPULSE_API_TOKEN", None)
    env.pop("TASKPULSE_API_TOKENS_FILE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "worker"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    message = " ".join(proc.stderr.split())
    assert "0.0.0.0 (not loopback) without authentication" in message, proc.stderr
    assert "TASKPULSE_API_TOKEN" in message and "taskpulse token create" in message


def test_token_create_prints_a_secret_and_a_line_the_worker_accepts(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "token", "create", "grafana", "--role", "reader"],
        env={**os.environ, "TASKPULSE_DATA_DIR": str(tmp_path)}, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    fields = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    secret, line = fields["secret"].strip(), fields["line"].strip()
    assert line == f"grafana:reader:sha256:{hashlib.sha256(secret.encode()).hexdigest()}"
    assert len(secret) >= 40
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline", "token", "create", "x", "--role", "root"],
        env={**os.environ, "TASKPULSE_DATA_DIR": str(tmp_path)}, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "unknown role 'root'" in bad.stderr


class EchoingFailure(Receiver):
    """A webhook that answers 500 and repeats the request's path and query (with the secret)."""

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        with self._lock:
            self.posts.append(Received(request.path, None, time.time()))
        return web.Response(status=500, text=f"no handler for {request.path_qs}")


def test_a_failing_webhook_never_shows_its_secret(broker: EmbeddedBroker, make_worker: Callable[..., Worker],
                                                  tmp_path: Path) -> None:  # fmt: skip
    hook_secret, query_secret, am_password = "hooksecret" + "x" * 20, "querysecret" + "y" * 20, "ampass" + "z" * 20
    receiver = EchoingFailure().start()
    try:
        rules = tmp_path / "rules.yml"
        rules.write_text(FAILURE_RULES)
        w = make_worker(
            TASKPULSE_ROLES="ingest,alerts", TASKPULSE_ALERT_RULES=str(rules), TASKPULSE_ALERT_INTERVAL_S="0.5",
            TASKPULSE_ALERT_WEBHOOK_URL=receiver.url(f"/services/{hook_secret}?token={query_secret}"),
            TASKPULSE_ALERTMANAGER_URL=f"http://taskpulse:{am_password}@127.0.0.1:{free_port()}",
            TASKPULSE_ALERT_RETRY_FOR_S="3", TASKPULSE_LOG_LEVEL="DEBUG",
        ).start()  # fmt: skip
        publish(broker, _finished(30, False, "bad"))

        def failed() -> dict[str, Any] | None:
            notifiers = (w.status() or {}).get("alerts", {}).get("notifiers", {})
            hook, am = notifiers.get("webhook", {}), notifiers.get("alertmanager", {})
            done = hook.get("dropped") and am.get("dropped")
            return notifiers if done else None

        notifiers = wait_for(failed, 90, "both notifiers to fail and give up")
        assert receiver.posts, "the webhook was never called"
        assert "HTTP 500" in notifiers["webhook"]["last_error"]
        assert "127.0.0.1" in notifiers["alertmanager"]["last_error"]
        status_text = json.dumps(w.status())
        log_text = w.log_path.read_text(errors="replace")
        assert "giving up" in log_text
        for secret in (hook_secret, query_secret, am_password):
            assert secret not in status_text, secret
            assert secret not in log_text, secret
    finally:
        receiver.stop()
