"""Real alert receivers for the alerting tests: an HTTP receiver (aiohttp, in a thread) that
records every POST, and a real Prometheus Alertmanager (Debian package) on a free
loopback port that routes to that receiver.  Both stop at teardown."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pipeline.embedded import free_port

ALERTMANAGER_BIN = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


@dataclass
class Received:
    path: str
    body: Any
    at: float


@dataclass
class Receiver:
    """Records every JSON POST; answers ``fail_next`` requests on a path with HTTP 503 first."""

    port: int = 0
    posts: list[Received] = field(default_factory=list)
    fail_next: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[Any]:
        with self._lock:
            return [p.body for p in self.posts if p.path == path]

    def received(self, path: str) -> list[Received]:
        with self._lock:
            return [p for p in self.posts if p.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            left = self.fail_next.get(request.path, 0)
            if left > 0:
                self.fail_next[request.path] = left - 1
                return web.Response(status=503, text="try later")
            self.posts.append(Received(request.path, body, time.time()))
        return web.Response(text="ok")

    def start(self) -> Receiver:
        self.port = free_port()
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="webhook-receiver", daemon=True)
        self._thread.start()
        assert ready.wait(10), "webhook receiver did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


@dataclass
class Alertmanager:
    """A real Alertmanager process; its only receiver posts to ``webhook_url`` at once."""

    tmp: Path
    webhook_url: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Alertmanager:
        self.port = free_port()
        self.tmp.mkdir(parents=True, exist_ok=True)
        config = self.tmp / "alertmanager.yml"
        config.write_text(
            f"""route:
  receiver: test
  group_by: ["alertname"]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: test
    webhook_configs:
      - url: "{self.webhook_url}"
        send_resolved: true
"""
        )
        check = subprocess.run(["amtool", "check-config", str(config)], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        log = open(self.tmp / "alertmanager.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [
                ALERTMANAGER_BIN,
                f"--config.file={config}",
                f"--storage.path={self.tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"alertmanager exited: {(self.tmp / 'alertmanager.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError("alertmanager did not become ready")

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: the alerts Alertmanager holds as active (not resolved)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as r:
            return json.load(r)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, receiver: Receiver) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path / "alertmanager", receiver.url("/from-alertmanager")).start()
    yield am
    am.stop()
