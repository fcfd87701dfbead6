"""A real Prometheus (Debian package ``prometheus``) on a free loopback port, scraping given
targets every second, with its own TSDB in tmp; stopped at teardown."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline.embedded import free_port
from tests.integration.conftest import wait_for


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail(
            "`prometheus` is not on PATH: install the Debian package `prometheus` "
            "(apt-get install -y prometheus; .ci/run does it in CI)",
            pytrace=False,
        )
    return path


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        q = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{q}", timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        return body

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (fails on a query error)."""
        body = self.api("query", query=expr)
        assert body.get("status") == "success", f"{expr}: {body}"
        return body["data"]["result"]  # type: ignore[no-any-return]

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` (None when the result is empty)."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, f"{expr}: more than one series: {result}"
        return float(result[0]["value"][1])

    def by(self, expr: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}

    def targets_up(self) -> bool:
        body = self.api("targets")
        active = body.get("data", {}).get("activeTargets", [])
        return bool(active) and all(t.get("health") == "up" for t in active)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], Prometheus]]:
    """``start(["127.0.0.1:6066", ...])`` → a running Prometheus scraping ``/metrics`` there."""
    started: list[Prometheus] = []

    def start(targets: list[str], metrics_path: str = "/metrics") -> Prometheus:
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: taskpulse\n"
            f"    metrics_path: {metrics_path}\n"
            f"    static_configs:\n      - targets: {json.dumps(targets)}\n"
        )
        log_path = tmp_path / "prometheus.log"
        log = open(log_path, "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        prom = Prometheus(f"http://127.0.0.1:{port}", proc, log_path)
        started.append(prom)

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {proc.returncode}:\n{prom.log()}")
            try:
                with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as r:
                    return r.status == 200
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_for(ready, 30, "Prometheus to be ready")
        return prom

    yield start
    for prom in started:
        if prom.proc.poll() is None:
            prom.proc.send_signal(signal.SIGTERM)
            try:
                prom.proc.wait(15)
            except subprocess.TimeoutExpired:
                prom.proc.kill()
                prom.proc.wait(5)


def scrape(url: str) -> tuple[str, float]:
    """GET a /metrics page: (body, seconds it took)."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read().decode()
    return body, time.perf_counter() - t0


def series_names(body: str) -> set[str]:
    """Every sample name of a Prometheus text exposition."""
    return {ln.split("{")[0].split(" ")[0] for ln in body.splitlines() if ln and not ln.startswith("#")}


def series_count(body: str) -> int:
    return sum(1 for ln in body.splitlines() if ln and not ln.startswith("#"))
