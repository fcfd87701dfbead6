"""The agent-side SDK installs and imports light: ``pip install taskpulse`` brings only its
own dependencies, and ``import taskpulse`` loads nothing of the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from pipeline.topics import RAW_TOPICS
from taskpulse.envelope import RAW_TOPICS as SDK_TOPICS

ROOT = Path(__file__).resolve().parents[2]
WORKER_ONLY = ("faust", "chdb", "clickhouse_connect", "pydantic", "pydantic_settings", "typer", "rich",
               "prometheus_client", "pipeline")  # fmt: skip


def test_importing_the_sdk_loads_none_of_the_worker():
    code = ("import sys, json\nfrom taskpulse import Tracker, AsyncTracker, TaskExecution, report_task_start\n"
            f"print(json.dumps([m for m in {WORKER_ONLY!r} if m in sys.modules]))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_base_install_is_the_sdk_and_the_worker_is_an_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split("<")[0].split(";")[0].strip() for d in project["dependencies"]}
    assert base == {"aiokafka", "cramjam", "orjson"}
    worker = " ".join(project["optional-dependencies"]["worker"])
    for dep in ("faust-streaming", "clickhouse-connect", "pydantic", "typer"):
        assert dep in worker
    assert "chdb-core" in " ".join(project["optional-dependencies"]["embedded"])
    assert "'.[worker,embedded,dev]'" in (ROOT / "Makefile").read_text()
    assert '".[worker]"' in (ROOT / "Dockerfile").read_text()


def test_the_sdk_publishes_to_the_pipelines_raw_topics():
    assert SDK_TOPICS == RAW_TOPICS


def test_the_command_without_the_worker_extra_says_what_to_install():
    # a light install: the worker's packages cannot be found (None in sys.modules: find_spec says so)
    code = "import sys\nsys.modules['typer'] = sys.modules['faust'] = None\nfrom pipeline.entry import main\nmain()"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert proc.returncode == 1
    assert "pip install 'taskpulse[worker]'" in proc.stderr and "typer, faust" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_kafka_messages_stay_under_the_pipelines_message_limit():
    from taskpulse.transport import _messages

    big = [b"x" * 20_000] * 100 + [b"y" * 10] * 250  # failures with long stack traces, then small events
    chunks = _messages(big, 100, 512 * 1024)
    assert [r for c in chunks for r in c] == big  # all of them, in order
    assert all(len(c) <= 100 and sum(len(r) + 1 for r in c) <= 512 * 1024 for c in chunks)
    assert _messages([b"z" * 600_000], 100, 512 * 1024) == [[b"z" * 600_000]]  # one alone may be larger
