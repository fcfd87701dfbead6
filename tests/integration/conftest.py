"""Fixtures that start the real parts: a Tansu broker per test and taskpulse workers
(each holding its own chDB engine), all on loopback, all stopped at teardown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.embedded import EmbeddedBroker, free_port
from pipeline.sdk import TaskpulseProducer
from pipeline.sinks.kafka import ensure_topics
from pipeline.topics import ALL_TOPICS

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Worker:
    """A `taskpulse worker` child process and its HTTP API."""

    env: dict[str, str]
    log_path: Path
    api: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)
    #: the bearer token status() and sql() send (empty: none; a loopback worker without tokens is open)
    token: str = ""

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def start(self) -> Worker:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.starts += 1
        wait_for(lambda: self.status() or self._dead(), 90, "the worker API")
        return self

    def _dead(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def status(self) -> dict[str, Any] | None:
        try:
            req = urllib.request.Request(f"{self.api}/api/status", headers=self._headers())
            with urllib.request.urlopen(req, timeout=5) as r:
                return json.load(r)  # type: ignore[no-any-return]
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            return None

    def sql(self, query: str) -> list[list[Any]]:
        req = urllib.request.Request(
            f"{self.api}/api/sql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json", **self._headers()},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if "error" in body:
            raise AssertionError(body["error"])
        return body["rows"]  # type: ignore[no-any-return]

    def scalar(self, query: str) -> Any:
        return self.sql(query)[0][0]

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, no flush."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    b = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    asyncio.run(ensure_topics(b.bootstrap, ALL_TOPICS, 4, 3_600_000, 256 * 1024 * 1024))
    yield b
    b.stop()


@pytest.fixture(params=["faust", "direct"])
def engine(request: pytest.FixtureRequest) -> str:
    """The ingest engines: every guarantee test runs on both."""
    return str(request.param)


def committed_group(engine: str) -> str:
    return "taskpulse" if engine == "faust" else "taskpulse-ingest"


@pytest.fixture
def make_worker(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def make(fault_file: Path | None = None, engine: str = "direct", **env: str) -> Worker:
        port = free_port()
        full_env = {
            **os.environ,
            "TASKPULSE_KAFKA_URL": broker.url,
            "TASKPULSE_DATA_DIR": str(tmp_path / "data"),
            "TASKPULSE_API_PORT": str(port),
            "TASKPULSE_SESSION_TIMEOUT_S": "6",
            "TASKPULSE_COMMIT_INTERVAL_S": "0.5",
            "TASKPULSE_LOG_LEVEL": "INFO",
            "TASKPULSE_INGEST_ENGINE": engine,
            # the ingest role alone unless a test asks for more: the correlation role emits
            # events of its own (agent.status_changed, task.abandoned) that ingest counts
            "TASKPULSE_ROLES": "ingest",
            **env,
        }
        argv = [sys.executable, "-m", "pipeline", "worker"]
        if fault_file is not None:
            full_env["TASKPULSE_TEST_CH_FAULT"] = str(fault_file)
            argv = [sys.executable, "-m", "tests.integration.faults", "worker"]
        w = Worker(full_env, tmp_path / f"worker{len(workers)}.log", f"http://127.0.0.1:{port}", argv)
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.stop()


def publish(broker: EmbeddedBroker, events: list[dict[str, Any]], batch_size: int = 100) -> int:
    """Publish with the SDK; returns the number of Kafka messages sent."""

    async def go() -> int:
        async with TaskpulseProducer(broker.url, batch_size=batch_size) as p:
            await p.send_many(events)
        return p.sent_messages

    return asyncio.run(go())


def publish_raw(broker: EmbeddedBroker, items: list[tuple[str, bytes]]) -> None:
    async def go() -> None:
        async with TaskpulseProducer(broker.url, batch_size=1) as p:
            for topic, value in items:
                await p.send_raw(topic, value, key=b"k")

    asyncio.run(go())
