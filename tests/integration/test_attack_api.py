"""Attacks on the HTTP API with real parts (Tansu, chDB, a worker serving the API): ids the
pipeline itself produces but a route could not reach, and cursors forged by a client."""

from __future__ import annotations

import base64
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from pipeline.sdk import make_event
from tests.integration.api_client import call, get
from tests.integration.conftest import publish, wait_for

pytestmark = pytest.mark.integration

#: a seed-004 task without execution_id is keyed run_id/task_id (core.ingest.sources.task_key);
#: agent and group names may hold a slash too
TASK, AGENT, GROUP = "run-7/1.1", "team/researcher", "week/12"


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def test_ids_with_a_slash_are_reachable_and_forged_cursors_are_refused(broker: Any, make_worker: Any) -> None:
    w = make_worker(TASKPULSE_ROLES="ingest,correlate", TASKPULSE_REORDER_WINDOW_S="0.5").start()
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    publish(broker, [
        make_event("agent.online", AGENT, {}, timestamp=t0),
        make_event("task.created", TASK, {"task_type": "research", "group": GROUP}, timestamp=t0),
        make_event("task.assigned", TASK, {"agent_id": AGENT}, timestamp=t0 + timedelta(seconds=1)),
        make_event("task.started", TASK, {"agent_id": AGENT}, timestamp=t0 + timedelta(seconds=2)),
        make_event("task.completed", TASK, {"agent_id": AGENT, "success": True}, timestamp=t0 + timedelta(seconds=9)),
    ])  # fmt: skip
    wait_for(lambda: w.scalar(f"SELECT count() FROM taskpulse.task_executions FINAL WHERE task_id = '{TASK}'"), 60,
             "the task's execution")  # fmt: skip
    assert [t["task_id"] for t in get(w, "/api/v1/tasks")["items"]] == [TASK]

    # the task the list shows can be opened, through the API and the UI's page
    detail = get(w, f"/api/v1/tasks/{_q(TASK)}")
    assert detail["task"]["task_id"] == TASK
    assert [e["event_type"] for e in detail["timeline"]][-1] == "task.completed"
    assert get(w, f"/api/v1/tasks/{_q(TASK)}/timeline")  # the web UI's task page
    assert get(w, f"/api/v1/agents/{_q(AGENT)}")["agent"]["agent"] == AGENT
    assert get(w, f"/api/v1/agents/{_q(AGENT)}/activity")
    assert get(w, f"/api/v1/groups/{_q(GROUP)}")["group"] == GROUP
    status, _, body = call(w.api, "GET", f"/api/v1/tasks/{_q('run-7/9.9')}")
    assert status == 404 and body["error"]["code"] == "not_found"

    # a cursor of the right sort and arity whose parts have the wrong types: 400, not 500 / a
    # 503 quoting ClickHouse's exception
    def forged(sort: str, key: list[Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps({"s": sort, "k": key})).decode().rstrip("=")

    for path, sort, key in [
        ("/api/v1/tasks", "-last_event_at", ["abc", TASK]), ("/api/v1/agents", "agent", [5]),
        ("/api/v1/groups", "group", [1.5]), ("/api/v1/alerts", "firing", ["x", "a", "b"]),
        ("/api/v1/anomalies", "anomalies", ["x", "a", "b"]),
    ]:  # fmt: skip
        status, _, body = call(w.api, "GET", f"{path}?cursor={forged(sort, key)}")
        assert (status, body["error"]["code"]) == (400, "bad_cursor"), (path, status, body)
        assert "Exception" not in body["error"]["message"]

    # kpis of a period ClickHouse cannot hold: 400, not 500 (year 1: the period before is year 0)
    for end in ("0001-01-02T00:00:00", "9999-12-31T00:00:00"):
        for name in ("day", "month"):
            status, _, body = call(w.api, "GET", f"/api/v1/kpis?period={name}&end={end}")
            assert (status, body["error"]["code"]) == (400, "bad_request"), (end, status, body)
    kpis = get(w, "/api/v1/kpis", period="month", end="1960-01-01T00:00:00")  # before 1970, no data
    assert {k["name"]: k["value"] for k in kpis["kpis"]}["tasks_finished"] == 0
