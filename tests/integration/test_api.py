"""The /api/v1 resources against a running worker (real broker, real chDB): every resource and
filter returns what ClickHouse holds (compared with direct queries through /api/sql), paging
visits every row once, the task timeline is in event-time order with invalid transitions
marked, KPIs match an independent computation over the events published; the OpenAPI
document validates and covers every route; tokens, sessions, 401/403/413/429."""

from __future__ import annotations

import gzip
import http.client
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from prometheus_client import CollectorRegistry

from pipeline.embedded import EmbeddedBroker
from pipeline.sdk import make_event
from tests.integration.api_client import all_pages, call, get, tokens_file
from tests.integration.conftest import publish, wait_for

pytestmark = pytest.mark.integration

AGENTS = ["alpha", "beta", "gamma"]
TYPES = ["code", "research", "review"]
GROUPS = ["g1", "g2", "g3", ""]
READER, WRITER, OPERATOR = "reader-secret-0123456789", "writer-secret-0123456789", "operator-secret-012345678"


def _ms(iso: str | None) -> int | None:
    return None if iso is None else int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _dataset(base: datetime) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """48 tasks over 3 agents / 3 types / 4 groups (a quarter left executing, the rest
    completed or failed), one task with an invalid transition, agent heartbeats; and what
    each task is (the independent record the KPIs are checked against)."""
    events: list[dict[str, Any]] = []
    truth: dict[str, dict[str, Any]] = {}
    for i in range(48):
        tid, agent, ttype, group = f"t-{i:03d}", AGENTS[i % 3], TYPES[(i // 3) % 3], GROUPS[i % 4]
        t0 = base + timedelta(seconds=10 * i)
        state: dict[str, Any] = {"task_type": ttype}
        if group:
            state["group"] = group
        events.append(make_event("task.created", tid, state, timestamp=t0))
        events.append(make_event("task.queued", tid, {"task_type": ttype}, timestamp=t0 + timedelta(seconds=1)))
        events.append(make_event("task.assigned", tid, {"task_type": ttype, "agent_id": agent, "confidence": 0.8},
                                 timestamp=t0 + timedelta(seconds=2)))  # fmt: skip
        started = t0 + timedelta(seconds=3 + i % 5)
        events.append(make_event("task.started", tid, {"task_type": ttype, "agent_id": agent}, timestamp=started))
        kind = i % 4
        rec = {"agent": agent, "type": ttype, "group": group, "queued": t0 + timedelta(seconds=1), "started": started}
        if kind:
            done = started + timedelta(seconds=1 + i % 7)
            ok = kind != 2
            etype = "task.completed" if ok else "task.failed"
            st = {"task_type": ttype, "agent_id": agent, **({"success": True} if ok else {"error": "boom"})}
            events.append(make_event(etype, tid, st, timestamp=done))
            rec.update(finished=done, success=ok)
        truth[tid] = rec
    bad = base + timedelta(seconds=600)
    events.append(make_event("task.created", "t-invalid", {"task_type": "code"}, timestamp=bad))
    events.append(make_event("task.completed", "t-invalid", {"task_type": "code", "success": True},
                             timestamp=bad + timedelta(seconds=1)))  # fmt: skip
    truth["t-invalid"] = {"agent": "", "type": "code", "group": "", "finished": bad + timedelta(seconds=1),
                          "success": True, "queued": None, "started": None}  # fmt: skip
    for a in AGENTS:
        events.append(make_event("agent.online", a, {}, timestamp=base))
        events.append(make_event("agent.heartbeat", a, {"cpu_percent": 10.0, "memory_mb": 100, "active_tasks": 1},
                                 timestamp=base + timedelta(seconds=700)))  # fmt: skip
    random.Random(7).shuffle(events)
    return events, truth


def _start(broker: EmbeddedBroker, make_worker: Any, tmp_path: Path) -> Any:
    toks = tokens_file(tmp_path / "tokens", {"reader": ("reader", READER), "writer": ("writer", WRITER),
                                             "ops": ("operator", OPERATOR)})  # fmt: skip
    w = make_worker(TASKPULSE_ROLES="ingest,correlate", TASKPULSE_API_TOKENS_FILE=str(toks),
                    TASKPULSE_API_INGEST_RATE_LIMIT="3/minute", TASKPULSE_API_INGEST_MAX_EVENTS="50",
                    TASKPULSE_API_INGEST_MAX_BYTES="20000", TASKPULSE_REORDER_WINDOW_S="0.5")  # fmt: skip
    w.token = READER
    return w.start()


def test_every_resource_matches_clickhouse_and_pages_once(broker: EmbeddedBroker, make_worker: Any,
                                                          tmp_path: Path) -> None:  # fmt: skip
    w = _start(broker, make_worker, tmp_path)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    events, truth = _dataset(base)
    publish(broker, events)
    finished = [t for t, r in truth.items() if "finished" in r]
    wait_for(lambda: w.scalar("SELECT count() FROM taskpulse.tasks FINAL") == len(truth)
             and w.scalar("SELECT count() FROM taskpulse.task_executions FINAL") == len(finished)
             and w.scalar("SELECT count() FROM taskpulse.agent_status FINAL") == len(AGENTS),
             90, "the tasks")  # fmt: skip

    # --- tasks: every filter and sort, paged 7 at a time, equals the direct query
    cols = "task_id, state, agent, task_type, group_key, toUnixTimestamp64Milli(last_event_at), finished"
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({}, "1", "last_event_at DESC, task_id DESC"),
        ({"sort": "created_at"}, "1", "ifNull(toUnixTimestamp64Milli(created_at), 0), task_id"),
        ({"sort": "-task_id"}, "1", "task_id DESC"),
        ({"state": "EXECUTING"}, "state = 'EXECUTING'", "last_event_at DESC, task_id DESC"),
        ({"state": ["COMPLETED", "FAILED"], "agent": "alpha"}, "state IN ('COMPLETED', 'FAILED') AND agent = 'alpha'",
         "last_event_at DESC, task_id DESC"),
        ({"task_type": "research,review", "sort": "last_event_at"}, "task_type IN ('research', 'review')",
         "last_event_at, task_id"),
        ({"group": "g2", "finished": "true"}, "group_key = 'g2' AND finished", "last_event_at DESC, task_id DESC"),
        ({"since": (base + timedelta(minutes=3)).isoformat(), "until": (base + timedelta(minutes=6)).isoformat()},
         f"last_event_at >= '{(base + timedelta(minutes=3)).strftime('%Y-%m-%d %H:%M:%S')}' AND last_event_at < "
         f"'{(base + timedelta(minutes=6)).strftime('%Y-%m-%d %H:%M:%S')}'", "last_event_at DESC, task_id DESC"),
    ]  # fmt: skip
    for params, where, order in cases:
        got = all_pages(w, "/api/v1/tasks", limit=7, **params)
        want = w.sql(f"SELECT {cols} FROM taskpulse.tasks FINAL WHERE {where} ORDER BY {order}")
        assert [t["task_id"] for t in got] == [r[0] for r in want], params
        assert len({t["task_id"] for t in got}) == len(got), f"a row came twice: {params}"
        assert [[t["task_id"], t["state"], t["agent"], t["task_type"], t["group"], _ms(t["last_event_at"]),
                 t["finished"]] for t in got] == want, params  # fmt: skip
        assert want, f"the case {params} selects nothing: it tests nothing"
    assert len(all_pages(w, "/api/v1/tasks", limit=1000)) == len(truth)

    # --- a task's timeline: its events in event-time order, the invalid transition marked
    detail = get(w, "/api/v1/tasks/t-invalid")
    assert [s["event_type"] for s in detail["timeline"]] == ["task.created", "task.completed"]
    assert [s["valid_transition"] for s in detail["timeline"]] == [True, False]
    assert detail["timeline"][1]["from_state"] == "CREATED" and detail["timeline"][1]["to_state"] == "COMPLETED"
    assert detail["task"]["invalid_transitions"] == 1 and detail["execution"]["invalid_transition_list"] == [
        "CREATED->COMPLETED"]  # fmt: skip
    one = get(w, "/api/v1/tasks/t-005")
    ids = w.sql("SELECT id FROM taskpulse.events WHERE entity_id = 't-005' ORDER BY event_time, id")
    assert sorted(s["id"] for s in one["timeline"]) == sorted(r[0] for r in ids)
    times = [_ms(s["time"]) for s in one["timeline"]]
    assert times == sorted(times) and all(s["valid_transition"] for s in one["timeline"])
    assert one["execution"]["outcome"] == "success" and one["task"]["agent"] == truth["t-005"]["agent"]
    status, _, body = call(w.api, "GET", "/api/v1/tasks/nope", token=READER)
    assert status == 404 and body["error"]["code"] == "not_found"

    # --- agents and one agent
    agents = all_pages(w, "/api/v1/agents", limit=2)
    want_agents = w.sql("SELECT agent, status, active_tasks, tasks_finished_today FROM taskpulse.agent_overview "
                        "ORDER BY agent")  # fmt: skip
    assert [[a["agent"], a["status"], a["active_tasks"], a["tasks_finished_today"]] for a in agents] == want_agents
    alpha = get(w, "/api/v1/agents/alpha")
    open_alpha = w.sql("SELECT task_id FROM taskpulse.tasks FINAL WHERE agent = 'alpha' AND NOT finished "
                       "ORDER BY last_event_at DESC, task_id")  # fmt: skip
    assert [t["task_id"] for t in alpha["current_tasks"]] == [r[0] for r in open_alpha] and open_alpha
    done_alpha = sorted(t for t, r in truth.items() if r["agent"] == "alpha" and "finished" in r)
    assert len(alpha["recent_executions"]) == min(20, len(done_alpha))
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    today = [t for t in done_alpha if truth[t]["finished"] >= midnight]  # the agent view's success rate is today's
    want_rate = sum(truth[t]["success"] for t in today) / len(today) if today else None
    assert alpha["agent"]["success_rate"] == pytest.approx(want_rate)
    assert call(w.api, "GET", "/api/v1/agents/nobody", token=READER)[0] == 404

    # --- groups
    groups = all_pages(w, "/api/v1/groups", limit=1)
    assert [g["group"] for g in groups] == ["g1", "g2", "g3"]
    for g in groups:
        members = [t for t, r in truth.items() if r["group"] == g["group"]]
        assert g["total"] == len(members)
        assert g["completed"] + g["failed"] == sum(1 for t in members if "finished" in truth[t])
        full = get(w, f"/api/v1/groups/{g['group']}")
        by_state = dict(w.sql(f"SELECT state, count() FROM taskpulse.tasks FINAL WHERE group_key = '{g['group']}' "
                              "GROUP BY state"))  # fmt: skip
        assert full["by_state"] == by_state and full["total"] == g["total"]
    assert call(w.api, "GET", "/api/v1/groups/none", token=READER)[0] == 404

    # --- KPIs of the last day against the events published (and the period before: empty)
    kpis = get(w, "/api/v1/kpis", period="day")
    k = {x["name"]: x for x in kpis["kpis"]}
    done = [truth[t] for t in finished]
    assert k["tasks_finished"]["value"] == len(done) and k["tasks_finished"]["previous"] == 0
    assert k["success_rate"]["value"] == pytest.approx(sum(r["success"] for r in done) / len(done))
    assert k["failure_rate"]["value"] == pytest.approx(sum(not r["success"] for r in done) / len(done))
    assert k["throughput_per_hour"]["value"] == pytest.approx(len(done) / 24)
    assert k["agents_busy"]["value"] == len(AGENTS) and k["agents_online"]["value"] == len(AGENTS)
    exec_ms = sorted((r["finished"] - r["started"]).total_seconds() * 1000 for r in done if r["started"])
    assert k["execution_p50_ms"]["value"] == exec_ms[int(0.5 * len(exec_ms))]
    assert k["execution_p95_ms"]["value"] == exec_ms[int(0.95 * len(exec_ms))]
    waits = sorted((r["started"] - r["queued"]).total_seconds() * 1000 for r in done if r["queued"])
    assert k["queue_wait_p50_ms"]["value"] == waits[int(0.5 * len(waits))]
    assert k["success_rate"]["previous"] is None
    assert get(w, "/api/v1/kpis", period="month")["period"] == "month"

    # --- events of one entity, newest first, capped
    ev = get(w, "/api/v1/events", entity_id="t-007", limit=2)
    want_ev = w.sql("SELECT id FROM taskpulse.events WHERE entity_id = 't-007' ORDER BY event_time DESC, id DESC")
    assert [e["id"] for e in ev["items"]] == [r[0] for r in want_ev][:2] and ev["truncated"]
    assert all(e["metadata"].get("source") is None for e in ev["items"])  # Kafka input: no HTTP source

    # --- a cursor of another list, or a forged one, is refused
    page1 = get(w, "/api/v1/tasks", limit=2)
    status, _, body = call(w.api, "GET", f"/api/v1/tasks?sort=created_at&cursor={page1['next_cursor']}", token=READER)
    assert status == 400 and body["error"]["code"] == "bad_cursor" and "sort" in body["error"]["message"]


def test_openapi_auth_sessions_and_limits(broker: EmbeddedBroker, make_worker: Any, tmp_path: Path) -> None:
    w = _start(broker, make_worker, tmp_path)

    # --- the OpenAPI document validates and documents every route the app serves
    status, _, doc = call(w.api, "GET", "/api/v1/openapi.json")  # open: the description holds no data
    assert status == 200
    validate(doc)
    from pipeline.roles.api import ApiContext, create_app
    from pipeline.settings import Settings

    app = create_app(ApiContext(Settings(), _no_tokens(), None, None, CollectorRegistry()))  # type: ignore[arg-type]
    routes = [r for router in app.state.api_routers for r in router.routes]
    served = {(r.path, m) for r in routes if getattr(r, "include_in_schema", False) for m in r.methods - {"HEAD"}}
    documented = {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    v1 = {p for p, _ in served if p.startswith("/api/v1/")}
    assert {"/api/v1/tasks", "/api/v1/tasks/{task_id}", "/api/v1/agents", "/api/v1/agents/{agent_id}",
            "/api/v1/groups/{group_id}", "/api/v1/kpis", "/api/v1/alerts", "/api/v1/anomalies", "/api/v1/events",
            "/api/v1/session"} <= v1  # fmt: skip
    assert "EventEnvelope" in doc["components"]["schemas"]
    page = call(w.api, "GET", "/api/v1/docs")
    assert page[0] == 200 and "/api/v1/docs/static/swagger-ui-bundle.js" in page[2]
    assert call(w.api, "GET", "/api/v1/docs/static/swagger-ui-bundle.js")[0] == 200  # served here, no CDN

    # --- 401 without a token / with a wrong one, 403 for the wrong role, JSON errors
    for token in ("", "wrong-token-0123456789"):
        status, hdrs, body = call(w.api, "GET", "/api/v1/tasks", token=token)
        assert status == 401 and body["error"]["code"] == "unauthorized" and "Bearer" in hdrs["www-authenticate"]
    assert call(w.api, "GET", "/api/v1/tasks", token=WRITER)[0] == 403  # a writer only ingests
    status, _, body = call(w.api, "POST", "/api/v1/events", b"{}", token=READER)
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert call(w.api, "GET", "/api/v1/nothing-here", token="")[0] == 401  # unknown routes reveal nothing
    assert call(w.api, "GET", "/api/v1/nothing-here", token=READER)[0] == 404
    form = call(w.api, "POST", "/api/v1/events", b"a=b", token=WRITER,
                headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert form[0] == 415

    # --- a session cookie stands for the token; logging out clears it; a forged one is refused
    status, hdrs, body = call(w.api, "POST", "/api/v1/session", json.dumps({"token": OPERATOR}).encode())
    assert status == 200 and body["name"] == "ops" and body["role"] == "operator"
    cookie = hdrs["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    value = cookie.split(";", 1)[0]
    assert call(w.api, "GET", "/api/v1/tasks", headers={"Cookie": value})[0] == 200
    forged = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")
    assert call(w.api, "GET", "/api/v1/tasks", headers={"Cookie": forged})[0] == 401
    assert call(w.api, "POST", "/api/v1/session", json.dumps({"token": "nope"}).encode())[0] == 401
    status, hdrs, _ = call(w.api, "DELETE", "/api/v1/session", headers={"Cookie": value})
    assert status == 204 and 'taskpulse_session=""' in hdrs["set-cookie"].replace("=;", '="";')

    # --- 413: a JSON body over 1 MiB elsewhere; too many events, too large a body (gzip undone);
    # 429 past the token's rate
    conn = http.client.HTTPConnection("127.0.0.1", int(w.api.rsplit(":", 1)[1]), timeout=30)
    conn.putrequest("POST", "/api/sql")
    for name, value in (("Content-Type", "application/json"), ("Content-Length", "2000000"),
                        ("Authorization", f"Bearer {READER}")):  # fmt: skip
        conn.putheader(name, value)
    conn.endheaders(b'{"query": "SELECT 1 -- ')  # the rest never comes: the answer may not wait for it
    answer = conn.getresponse()
    assert answer.status == 413 and json.loads(answer.read())["error"]["code"] == "payload_too_large"
    conn.close()
    good = make_event("system.health", "api-test", {"status": "ok"})
    many = ("\n".join(json.dumps({**good, "id": f"e{i}"}) for i in range(51))).encode()
    nd = {"Content-Type": "application/x-ndjson"}
    status, _, body = call(w.api, "POST", "/api/v1/events", many, token=WRITER, headers=nd)
    assert status == 413 and body["error"]["code"] == "too_many_events"
    bomb = gzip.compress(b"[" + b" " * 100_000 + b"]")
    status, _, body = call(w.api, "POST", "/api/v1/events", bomb, token=WRITER,
                           headers={"Content-Encoding": "gzip"})  # fmt: skip
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    status, _, body = call(w.api, "POST", "/api/v1/events", json.dumps(good).encode(), token=WRITER)
    assert status == 200 and body["accepted"] == 1  # the third request of the minute (limit: 3/minute)
    status, hdrs, body = call(w.api, "POST", "/api/v1/events", json.dumps(good).encode(), token=WRITER)
    assert status == 429 and body["error"]["code"] == "rate_limited" and int(hdrs["retry-after"]) >= 1
    stored = wait_for(lambda: w.sql(f"SELECT metadata FROM taskpulse.events WHERE id = '{good['id']}'"), 30,
                      "the event ingested over HTTP")  # fmt: skip
    assert json.loads(stored[0][0])["source"] == "writer"  # the token's name
    metrics = call(w.api, "GET", "/metrics")[2]  # open: the API is bound to loopback
    for answer, n in (("ok", 1), ("rate_limited", 1), ("too_many_events", 1), ("payload_too_large", 1)):
        assert f'taskpulse_http_ingest_requests_total{{answer="{answer}"}} {n}.0' in metrics, answer
    assert 'taskpulse_http_ingest_events_total{status="accepted"} 1.0' in metrics


def _no_tokens() -> Any:
    from pipeline.core.auth import TokenTable

    return TokenTable([])
