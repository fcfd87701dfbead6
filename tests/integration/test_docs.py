"""The README is tested: every shell, Python and SQL block of README.md and deploy/README.md
runs against one embedded stack (a test broker and one worker with every role, demo data
published first through `taskpulse demo`), or — when it needs a server or the compose
stack — is syntax-checked and listed in EXEMPT with the reason.

How blocks run:
- shell (`sh`, `bash`): with `bash -e -o pipefail` in a scratch directory (with `deploy/`
  linked in), `taskpulse` and `.venv/bin/taskpulse` being this checkout's CLI, the stack's
  TASKPULSE_* in the environment, and the README's placeholders filled in (PLACEHOLDERS);
- Python: the whole block in a child interpreter with the same environment;
- SQL: each statement through the worker's /api/sql (read-only, as an analyst runs it); a
  statement that GROUPs BY columns it also returns first must return each key once
  ("one row per agent and hour" is what the comments promise).

A new block runs without any change here; if it cannot run here, add it to EXEMPT (file,
first line of the block) with the reason.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.embedded import EmbeddedBroker, free_port
from tests.integration.conftest import ROOT, Worker, wait_for

pytestmark = pytest.mark.integration

DOCS = [ROOT / "README.md", ROOT / "deploy" / "README.md"]
RUN_ID = "docs"

#: (file, text that starts the block) → why it is only syntax-checked
EXEMPT: dict[tuple[str, str], str] = {
    ("README.md", "make run    #"): "`make run` / `make test` reinstall the venv and run the whole suite",
    ("README.md", "export TASKPULSE_KAFKA_URL=kafka://b-1."): "needs a managed Kafka (SASL/TLS)",
    ("README.md", "export TASKPULSE_CLICKHOUSE_URL=https://"): "needs a managed ClickHouse over HTTPS",
    ("deploy/README.md", "cp .env.example .env"): "needs the compose stack (Docker engine)",
    ("deploy/README.md", "docker compose logs"): "needs the compose stack",
    ("deploy/README.md", "for t in task agent system user"): "needs the compose stack's Kafka",
    ("deploy/README.md", "# .env"): "needs existing Kafka and ClickHouse clusters",
    ("deploy/README.md", "for t in taskpulse.events.task"): "needs a Kafka cluster (kafka-topics.sh)",
    ("deploy/README.md", "docker compose exec kafka"): "needs the compose stack's Kafka",
    ("deploy/README.md", "CREATE SETTINGS PROFILE"): "users and grants: a ClickHouse server (chDB has none)",
    ("deploy/README.md", "CREATE DATABASE IF NOT EXISTS taskpulse ON CLUSTER"): "a ClickHouse cluster",
    ("deploy/README.md", "CREATE TABLE IF NOT EXISTS taskpulse.tasks_local"): "a ClickHouse cluster",
    ("deploy/README.md", "SELECT hostName() AS host"): "a ClickHouse cluster (clusterAllReplicas)",
    ("deploy/README.md", "ALTER TABLE taskpulse.events_local"): "a ClickHouse cluster",
    ("deploy/README.md", "ALTER TABLE taskpulse.task_executions_local"): "a ClickHouse cluster",
    ("deploy/README.md", "ALTER TABLE taskpulse.dlq_local"): "a ClickHouse cluster",
}
_SHELL, _PY, _SQL = {"sh", "bash", "shell", "console"}, {"python", "py"}, {"sql"}


@dataclass(frozen=True)
class Block:
    file: str
    line: int
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{self.lang}"

    def exemption(self) -> str | None:
        head = self.text.lstrip()
        for (file, start), why in EXEMPT.items():
            if file == self.file and head.startswith(start):
                return why
        return None


def collect() -> list[Block]:
    blocks = []
    for path in DOCS:
        rel = str(path.relative_to(ROOT))
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
            if not m:
                i += 1
                continue
            indent, lang, start = len(m.group(1)), m.group(2).lower(), i + 1
            j = start
            while j < len(lines) and not re.match(r"^\s*```\s*$", lines[j]):
                j += 1
            body = textwrap.dedent("\n".join(ln[indent:] if ln[:indent].isspace() else ln for ln in lines[start:j]))
            if lang in _SHELL | _PY | _SQL:
                blocks.append(Block(rel, start, lang, body))
            i = j + 1
    return blocks


BLOCKS = collect()


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    env: dict[str, str]
    cwd: Path
    worker: Worker


def _shim(bindir: Path) -> None:
    """`taskpulse` (and `.venv/bin/taskpulse`) = this checkout's CLI."""
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / "taskpulse"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pipeline "$@"\n')
    script.chmod(0o755)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("docs")
    broker = EmbeddedBroker(log_path=tmp / "tansu.log").start()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASKPULSE_")},
        "PYTHONPATH": str(ROOT),
        "TASKPULSE_KAFKA_URL": broker.url,
        "TASKPULSE_DATA_DIR": str(tmp / "data"),
        "TASKPULSE_API_PORT": str(port),
        "TASKPULSE_SESSION_TIMEOUT_S": "6",
        "TASKPULSE_COMMIT_INTERVAL_S": "0.5",
        "TASKPULSE_REORDER_WINDOW_S": "0.5",
        "TASKPULSE_ALERT_RULES": str(ROOT / "deploy" / "alerts" / "rules.yml"),
    }
    cwd = tmp / "cwd"
    cwd.mkdir()
    (cwd / "deploy").symlink_to(ROOT / "deploy")
    _shim(tmp / "bin")
    _shim(cwd / ".venv" / "bin")
    env["PATH"] = f"{tmp / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    worker = Worker(env, tmp / "worker.log", f"http://127.0.0.1:{port}", [sys.executable, "-m", "pipeline", "worker"])
    try:
        worker.start()
        demo = subprocess.run(
            ["taskpulse", "demo", "--events", "3000", "--run-id", RUN_ID, "--seed", "1"],
            env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stderr
        wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.task_executions") > 100, 120,
                 f"the demo's tasks in task_executions\n{worker.log()}")  # fmt: skip
        yield Stack(env, cwd, worker)
    finally:
        worker.stop()
        broker.stop()


PLACEHOLDERS = {
    "kafka://127.0.0.1:<port printed by make run>": lambda s: s.env["TASKPULSE_KAFKA_URL"],
    "<run id>": lambda s: RUN_ID,
}


def _fill(text: str, s: Stack) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value(s))
    left = re.findall(r"<[a-z][a-z ]+>", text)
    assert not left, f"a placeholder the docs test does not know: {left}; add it to PLACEHOLDERS"
    return text


def _statements(sql: str) -> list[str]:
    body = "\n".join(ln for ln in sql.splitlines() if not ln.strip().startswith("--"))
    return [st.strip() for st in body.split(";") if st.strip()]


def _key_columns(statement: str) -> list[int]:
    """Positions of the result columns that should identify a row: the GROUP BY keys, else
    the ORDER BY keys, when each is a named result column (else none: not checkable)."""
    select = re.search(r"^\s*SELECT\s+(.+?)\bFROM\b", statement, re.S | re.I)
    by = re.search(r"\bGROUP BY\s+(.+?)(?:\bORDER BY\b|\bLIMIT\b|$)", statement, re.S | re.I) or re.search(
        r"\bORDER BY\s+(.+?)(?:\bLIMIT\b|$)", statement, re.S | re.I
    )
    if not select or not by:
        return []
    columns = [c.strip() for c in re.split(r",(?![^(]*\))", select.group(1))]
    names = [re.split(r"\s+AS\s+", c, flags=re.I)[-1].strip() for c in columns]
    keys = [re.sub(r"\s+(ASC|DESC)$", "", k.strip(), flags=re.I) for k in by.group(1).split(",")]
    if not all(k in names for k in keys):
        return []
    return [names.index(k) for k in keys]


# --------------------------------------------------------------------------- tests


def test_the_docs_have_blocks_and_every_exemption_still_matches() -> None:
    assert len([b for b in BLOCKS if b.file == "README.md"]) >= 8
    used = {(f, start) for b in BLOCKS for (f, start) in EXEMPT if b.file == f and b.text.lstrip().startswith(start)}
    stale = set(EXEMPT) - used
    assert not stale, f"EXEMPT names blocks that are gone: {stale}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.exemption()], ids=lambda b: b.id)
def test_exempt_blocks_are_valid_syntax(block: Block, tmp_path: Path) -> None:
    if block.lang in _SHELL:
        proc = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"{block.id} ({block.exemption()}): {proc.stderr}"
    elif block.lang in _PY:
        ast.parse(block.text)
    else:  # ClickHouse's own parser, in a child process (one chDB engine per process)
        script = (
            "import sys, chdb\n"
            "for st in sys.stdin.read().split('\\x00'):\n"
            "    chdb.query('EXPLAIN AST ' + st)\n"
        )
        proc = subprocess.run([sys.executable, "-c", script], input="\x00".join(_statements(block.text)),
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, f"{block.id} ({block.exemption()}): {proc.stderr[-1500:]}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if not b.exemption()], ids=lambda b: b.id)
def test_block_runs(block: Block, stack: Stack) -> None:
    text = _fill(block.text, stack)
    if block.lang in _SHELL:
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", text], env=stack.env, cwd=stack.cwd,
                              capture_output=True, text=True, timeout=180)  # fmt: skip
        out = f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        assert proc.returncode == 0, f"{block.id} failed (exit {proc.returncode}):\n{out}"
        assert "Traceback" not in proc.stderr, f"{block.id}:\n{proc.stderr[-3000:]}"
    elif block.lang in _PY:
        proc = subprocess.run([sys.executable, "-c", text], env=stack.env, cwd=stack.cwd,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, f"{block.id} failed:\n{proc.stderr[-3000:]}"
    else:
        for statement in _statements(text):
            rows = stack.worker.sql(statement)
            assert rows, f"{block.id}: no rows (the demo data should answer it):\n{statement}"
            keys = _key_columns(statement)
            if keys:
                seen = [tuple(r[i] for i in keys) for r in rows]
                dup = {k for k in seen if seen.count(k) > 1}
                assert not dup, f"{block.id}: several rows for the same group {sorted(dup)[:3]}:\n{statement}"


def test_sdk_snippet_events_land_with_their_agent(stack: Stack) -> None:
    """The README's SDK snippet gives its task.completed an agent (the per-agent queries)."""
    if not any(b.lang in _PY and "task-sdk-1" in b.text for b in BLOCKS):
        pytest.fail("README.md's SDK snippet no longer emits task-sdk-1: update this test")
    sdk = [b for b in BLOCKS if b.lang in _PY and "task-sdk-1" in b.text][0]
    subprocess.run([sys.executable, "-c", sdk.text], env=stack.env, cwd=stack.cwd, check=True, timeout=120)
    rows = wait_for(lambda: stack.worker.sql(
        "SELECT DISTINCT agent FROM taskpulse.events WHERE entity_id = 'task-sdk-1'"), 60, "the SDK events")
    assert rows == [["researcher"]]



def test_the_row_identity_check_catches_unlabelled_rows() -> None:
    """The old task_rollups example (one row per agent, task type and outcome, showing only
    the agent) is what the uniqueness check above refuses."""
    old = ("SELECT window_start, agent, execution_p50_p95_p99[2] AS p95_ms FROM taskpulse.task_rollups "
           "WHERE granularity = '1h' ORDER BY window_start, agent")  # fmt: skip
    assert _key_columns(old) == [0, 1]
    grouped = "SELECT window_start AS day, task_type, sum(failures) AS f FROM t GROUP BY day, task_type ORDER BY 3"
    assert _key_columns(grouped) == [0, 1]
