"""Privacy end to end on the real broker and engine: events with user ids and PII-laden text
(seed shapes: ``user_id``, ``requester {id}``, ``metadata.session_id``, e-mails and phones in
requests and errors) go in over Kafka and HTTP; no raw id or e-mail is anywhere in ClickHouse
(every column of every table), the normalized and DLQ topics or the CSV export; counts per
agent and group match an independent count; erase removes one person's rows and nobody
else's, and sending their events again does not bring them back; export returns exactly the
person's rows; every action is in the audit trail; roles are enforced."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.embedded import EmbeddedBroker
from pipeline.sdk import make_event
from pipeline.sinks.kafka import ensure_topics
from pipeline.topics import ALL_TOPICS, DLQ, LIFECYCLE, NORMALIZED, RAW_TOPICS
from tests.integration.api_client import call, get, tokens_file
from tests.integration.conftest import ROOT, Worker, publish, publish_raw, wait_for

pytestmark = pytest.mark.integration

KEY = "privacy-test-key-0123456789"
READER, WRITER, OPERATOR, ADMIN = "r-secret-1111", "w-secret-2222", "o-secret-3333", "a-secret-4444"
USERS = ["alice@corp.example", "bob-77", "carol.smith"]
AGENTS = ["agent-a", "agent-b"]
#: what must never be stored or published: raw ids, e-mails, phone numbers, session ids
NEEDLES = ["alice@corp", "corp.example", "bob-77", "carol.smith", "mail.example", "ops.example", "555 0142",
           "555-0199", "7946 0958", "sess-"]  # fmt: skip
#: tables that name people only by the pseudonyms they were given (not scanned for a person's rows)
BOOKKEEPING = ("erasures", "audit", "schema_migrations")


def pseudonym(user: str) -> str:
    """Computed here, independently of pipeline.core.privacy."""
    return "pn_" + hmac.new(KEY.encode(), user.encode(), hashlib.sha256).hexdigest()[:32]


def _dataset(base: datetime) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    events: list[dict[str, Any]] = []
    truth: dict[str, Any] = {"completed_by_agent": Counter(), "tasks_by_group": Counter(), "tasks_of": Counter(),
                             "finished": 0}  # fmt: skip
    for i in range(30):
        user, agent, group = USERS[i % 3], AGENTS[i % 2], f"g{i % 3}"
        tid = f"t-{i}"
        t0 = base + timedelta(seconds=10 * i)
        who: dict[str, Any] = (
            {"requester": {"id": user, "type": "human"}} if i % 3 == 0
            else {"user_id": user} if i % 3 == 1 else {"requester_id": user}
        )  # fmt: skip
        md = {"session_id": f"sess-{user}-{i % 2}", "triggered_by": "user"}
        events.append(make_event(
            "task.created", tid,
            {"task_type": "support", "group": group, "request": f"mail me at {user.split('@')[0]}.private@mail.example "
             f"or call +1 415 555 0142 (ref {i})", **who},
            timestamp=t0, metadata=md,
        ))  # fmt: skip
        events.append(make_event("task.started", tid, {"task_type": "support", "agent_id": agent, "group": group},
                                 timestamp=t0 + timedelta(seconds=1), metadata=md))  # fmt: skip
        if i % 4 == 0:
            events.append(make_event(
                "task.failed", tid,
                {"task_type": "support", "agent_id": agent, "group": group,
                 "error": {"message": "could not reach dave@ops.example at 415-555-0199", "stack": "x"}},
                timestamp=t0 + timedelta(seconds=3), metadata=md,
            ))  # fmt: skip
        else:
            events.append(make_event("task.completed", tid, {"task_type": "support", "agent_id": agent, "group": group,
                                     "success": True, "result": "answered"},
                                     timestamp=t0 + timedelta(seconds=3), metadata=md))  # fmt: skip
            truth["completed_by_agent"][agent] += 1
        truth["tasks_by_group"][group] += 1
        truth["tasks_of"][user] += 1
        truth["finished"] += 1
        events.append(make_event("user.request", user, {"user_id": user, "request_text": "I'm on +44 20 7946 0958"},
                                 timestamp=t0, metadata=md))  # fmt: skip
    return events, truth


def _bad(base: datetime) -> list[tuple[str, bytes]]:
    """Input the pipeline rejects, full of PII (to the DLQ)."""
    bad_ts = [make_event("task.created", f"t-bad-{i}", {"task_type": "support", "requester_id": USERS[0],
                         "request": "write to alice@corp.example"}, timestamp="yesterday at noon",
                         metadata={"session_id": "sess-bad"}) for i in range(3)]  # fmt: skip
    items = [(RAW_TOPICS["task"], orjson.dumps(e)) for e in bad_ts]
    items.append((RAW_TOPICS["task"], b'not json {"user_id": "alice@corp.example"} mail alice@corp.example'))
    return items


def _start(make_worker: Any, tmp_path: Path) -> Worker:
    toks = tokens_file(tmp_path / "tokens", {"reader": ("reader", READER), "writer": ("writer", WRITER),
                                             "ops": ("operator", OPERATOR), "admin": ("admin", ADMIN)})  # fmt: skip
    w = make_worker(TASKPULSE_ROLES="ingest,correlate", TASKPULSE_API_TOKENS_FILE=str(toks), TASKPULSE_PII_KEY=KEY,
                    TASKPULSE_ERASURE_REFRESH_S="1", TASKPULSE_REORDER_WINDOW_S="0.5")  # fmt: skip
    w.token = READER
    return w.start()


def _counts(w: Worker) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Completed tasks per agent (rollups), tasks per group, finished tasks per requester."""
    by_agent = dict(w.sql("SELECT agent, sum(count) FROM taskpulse.rollup_stats WHERE granularity = '1m' "
                          "AND event_type = 'task.completed' GROUP BY agent"))  # fmt: skip
    by_group = dict(w.sql("SELECT group_key, count() FROM taskpulse.tasks FINAL GROUP BY group_key"))
    by_requester = dict(w.sql("SELECT requester_id, count() FROM taskpulse.task_executions FINAL "
                              "GROUP BY requester_id"))
    return by_agent, by_group, by_requester


def _feed(broker: EmbeddedBroker, w: Worker, events: list[dict[str, Any]], base: datetime) -> int:
    """The dataset, the rejected input and three HTTP-ingested tasks; returns the number of tasks."""
    publish(broker, events)
    publish_raw(broker, _bad(base))
    http_events = [make_event("task.created", f"t-h{i}", {"task_type": "support", "group": "g9",
                              "requester": {"id": USERS[1]}, "request": "bob's mail is bob@corp.example"},
                              timestamp=base + timedelta(seconds=400 + i)) for i in range(3)]  # fmt: skip
    status, _, answer = call(w.api, "POST", "/api/v1/events", orjson.dumps(http_events), token=WRITER)
    assert status == 200 and answer["accepted"] == 3, answer
    return 33


def _cli(w: Worker, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**w.env, "TASKPULSE_API_URL": w.api, "TASKPULSE_API_TOKEN": token, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _columns(w: Worker) -> dict[str, list[str]]:
    rows = w.sql("SELECT c.table, c.name FROM system.columns AS c WHERE c.database = 'taskpulse' AND c.table IN "
                 "(SELECT name FROM system.tables WHERE database = 'taskpulse' AND engine LIKE '%MergeTree' "
                 "AND name NOT LIKE '\\_probe\\_%') ORDER BY c.table, c.position")  # fmt: skip
    out: dict[str, list[str]] = {}
    for table, col in rows:
        out.setdefault(table, []).append(col)
    return out


def _naming(w: Worker, needles: list[str], skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Table → rows where any column holds any needle (every column of every table)."""
    found = {}
    for table, cols in _columns(w).items():
        if table in skip:
            continue
        cond = " OR ".join(f"positionCaseInsensitive(toString(`{c}`), {json.dumps(n)[1:-1]!r}) > 0"
                           for c in cols for n in needles)  # fmt: skip
        n = w.scalar(f"SELECT count() FROM taskpulse.`{table}` WHERE {cond}")
        if n:
            found[table] = int(n)
    return found


def _topic(broker: EmbeddedBroker, topic: str) -> list[bytes]:
    async def go() -> list[bytes]:
        c = AIOKafkaConsumer(topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)  # fmt: skip
        await c.start()
        out: list[bytes] = []
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=1500)
                if not batch and out:
                    break
                for records in batch.values():
                    out.extend(r.value or b"" for r in records)
        finally:
            await c.stop()
        return out

    return asyncio.run(go())


def test_privacy_end_to_end(broker: EmbeddedBroker, make_worker: Any, tmp_path: Path) -> None:
    w = _start(make_worker, tmp_path)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    events, truth = _dataset(base)
    n_tasks = _feed(broker, w, events, base)  # HTTP ingest: the same decoder; its raw-topic copy is pseudonymised
    wait_for(lambda: w.scalar("SELECT count() FROM taskpulse.tasks FINAL") == n_tasks
             and w.scalar("SELECT count() FROM taskpulse.task_executions FINAL") == truth["finished"]
             and w.scalar("SELECT count() FROM taskpulse.dlq") == 4, 120, "tasks, executions and the DLQ")  # fmt: skip

    # --- nothing raw anywhere: every column of every table, both topics, the raw HTTP-ingested copy
    assert _naming(w, NEEDLES) == {}
    for topic in (NORMALIZED, DLQ, RAW_TOPICS["task"]):
        msgs = _topic(broker, topic)
        assert msgs, topic
        if topic == RAW_TOPICS["task"]:
            msgs = [m for m in msgs if b"t-h" in m]  # only the HTTP-ingested events: producers' own stay as sent
            assert msgs
        for m in msgs:
            low = m.lower()
            assert not [n for n in NEEDLES if n.encode() in low], (topic, m[:300])
    # the DLQ: redacted copies, flagged, refused by a replay
    assert w.scalar("SELECT countIf(original_redacted) FROM taskpulse.dlq") == 4
    status, _, report = call(w.api, "POST", "/api/dlq/replay", orjson.dumps({"dry_run": True}), token=OPERATOR)
    assert status == 200 and len(report["refused"]) == 4 and not report["replayed"], report
    assert all("redacted" in r["why"] for r in report["refused"]), report["refused"]

    # --- pseudonyms: the same person → the same pseudonym, so counts and joins still work
    by_agent, by_group, by_requester = counts_on = _counts(w)
    assert by_requester == {pseudonym(u): n for u, n in truth["tasks_of"].items()}
    assert by_agent == dict(truth["completed_by_agent"])
    assert by_group == {**truth["tasks_by_group"], "g9": 3}
    assert w.scalar("SELECT count() FROM taskpulse.events WHERE entity_type = 'user' AND entity_id = "
                    f"'{pseudonym(USERS[2])}'") == 10  # fmt: skip

    # --- the CSV export (readers may export)
    csv_path = tmp_path / "tasks.csv"
    done = _cli(w, READER, "export", "csv", "-o", str(csv_path))
    assert done.returncode == 0, done.stderr
    text = csv_path.read_text().lower()
    assert len(text.splitlines()) == truth["finished"] + 1
    assert not [n for n in NEEDLES if n in text]
    assert pseudonym(USERS[0]) in text

    # --- roles: a reader or an operator cannot erase, a reader cannot read the audit
    for token in (READER, OPERATOR):
        status, _, body = call(w.api, "POST", "/api/v1/privacy/erase", orjson.dumps({"user": USERS[0]}), token=token)
        assert status == 403 and body["error"]["code"] == "forbidden", body
    assert call(w.api, "GET", "/api/v1/audit", token=READER)[0] == 403
    done = _cli(w, READER, "privacy", "erase", "--user", USERS[0])
    assert done.returncode != 0 and "admin" in (done.stdout + done.stderr)

    # --- export: exactly the person's rows (raw id in, pseudonym matched)
    bob = pseudonym(USERS[1])
    done = _cli(w, READER, "privacy", "export", "--user", USERS[1])
    assert done.returncode == 0, done.stderr
    exported = json.loads(done.stdout)
    assert exported["subjects"] == [bob]
    want = _naming(w, [bob], BOOKKEEPING)
    assert {t: len(rows) for t, rows in exported["tables"].items()} == want
    assert want["events"] == 10 + 3 + 10  # her task.created (started / finished name a session), HTTP, user.request
    assert all(bob in json.dumps(row) for rows in exported["tables"].values() for row in rows)

    # --- erase alice (admin, by pseudonym or raw id): her rows go, nobody else's
    alice = pseudonym(USERS[0])
    before = {u: _naming(w, [pseudonym(u)], BOOKKEEPING) for u in USERS}
    assert before[USERS[0]]["events"] and before[USERS[0]]["task_executions"]
    lifecycle_before = [m for m in _topic(broker, LIFECYCLE) if alice.encode() in m]
    assert lifecycle_before  # Kafka keeps what was published before the erasure (README: until retention)
    done = _cli(w, ADMIN, "privacy", "erase", "--user", USERS[0], "--format", "json")
    assert done.returncode == 0, done.stderr
    erased = json.loads(done.stdout)
    assert erased["deleted"] == before[USERS[0]]
    assert _naming(w, [alice], BOOKKEEPING) == {}
    assert {u: _naming(w, [pseudonym(u)], BOOKKEEPING) for u in USERS[1:]} == {u: before[u] for u in USERS[1:]}

    # --- her events again (as sent, and late corrections with new ids), then a canary
    again = [e for e in events if USERS[0] in orjson.dumps(e).decode()]
    late = [make_event("task.completed", "t-0", {"task_type": "support", "agent_id": "agent-a", "success": True,
                       "requester_id": USERS[0]}, timestamp=base + timedelta(seconds=30)),
            # a correction that names no one: the correlation state still holds her task t-3
            make_event("task.completed", "t-3", {"task_type": "support", "agent_id": "agent-b", "success": True},
                       timestamp=base + timedelta(seconds=60))]  # fmt: skip
    publish(broker, again + late)
    publish(broker, [make_event("task.created", "t-canary", {"task_type": "support", "requester_id": USERS[2]},
                                timestamp=base + timedelta(seconds=900))])  # fmt: skip
    wait_for(lambda: w.scalar("SELECT count() FROM taskpulse.tasks FINAL WHERE task_id = 't-canary'") == 1, 90,
             "the canary")  # fmt: skip
    time.sleep(2)  # the correlation role's batch with the late correction is written by now
    assert _naming(w, [alice], BOOKKEEPING) == {}
    assert _naming(w, NEEDLES) == {}
    # the correction of her task t-3 named no one, yet its lifecycle record would: not published
    assert sorted(m for m in _topic(broker, LIFECYCLE) if alice.encode() in m) == sorted(lifecycle_before)

    # --- the audit trail: every action, by whom (admin only)
    get(w, "/api/v1/tasks", limit=5)
    audit = get(w, "/api/v1/audit", ADMIN, limit=1000)["items"]
    actions = {(a["who"], a["action"]) for a in audit}
    assert {("admin", "erase"), ("reader", "export"), ("reader", "sql"), ("reader", "query"),
            ("ops", "dlq")} <= actions, actions  # fmt: skip
    refused = [a for a in audit if a["action"] == "erase" and a["status"] == 403]
    assert {a["who"] for a in refused} == {"reader", "ops"}
    erase_row = next(a for a in audit if a["action"] == "erase" and a["status"] == 200)
    assert erase_row["target"] == alice and erase_row["rows"] == sum(before[USERS[0]].values())
    export_row = next(a for a in audit if a["action"] == "export")
    assert export_row["rows"] == sum(want.values())
    assert not [n for n in NEEDLES if n in json.dumps(audit).lower()]

    # --- the same input with privacy off (its own broker and database): the same counts
    w.stop()
    plain_broker = EmbeddedBroker(log_path=tmp_path / "tansu-plain.log").start()
    try:
        asyncio.run(ensure_topics(plain_broker.bootstrap, ALL_TOPICS, 4, 3_600_000, 256 * 1024 * 1024))
        toks = tmp_path / "tokens"
        plain = make_worker(TASKPULSE_ROLES="ingest,correlate", TASKPULSE_API_TOKENS_FILE=str(toks),
                            TASKPULSE_KAFKA_URL=plain_broker.url, TASKPULSE_DATA_DIR=str(tmp_path / "data-plain"),
                            TASKPULSE_REDACT="false", TASKPULSE_REORDER_WINDOW_S="0.5")  # fmt: skip
        plain.token = READER
        plain.start()
        assert _feed(plain_broker, plain, events, base) == n_tasks
        wait_for(lambda: plain.scalar("SELECT count() FROM taskpulse.tasks FINAL") == n_tasks
                 and plain.scalar("SELECT count() FROM taskpulse.task_executions FINAL") == truth["finished"],
                 120, "the tasks without privacy")  # fmt: skip
        agent_off, group_off, requester_off = _counts(plain)
        assert (agent_off, group_off) == counts_on[:2]
        assert {pseudonym(u): n for u, n in requester_off.items()} == counts_on[2]
        assert plain.scalar("SELECT countIf(original_redacted) FROM taskpulse.dlq") == 0
        assert _naming(plain, ["alice@corp.example"], BOOKKEEPING)  # the raw ids are there: the scan finds them
        plain.stop()
    finally:
        plain_broker.stop()
