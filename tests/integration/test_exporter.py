"""The metrics role against real parts: a worker (ingest + metrics) on the Tansu broker, a
real Prometheus scraping its /metrics every second, and the shipped dashboards' queries
run against both (PromQL on that Prometheus, SQL on the worker's ClickHouse)."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from pipeline.dashboards import dashboards
from pipeline.demo import DemoFleet
from pipeline.sdk import TaskpulseProducer, make_event
from pipeline.topics import ALERTS, LIFECYCLE, RAW_TASK
from tests.integration.conftest import publish, wait_for
from tests.integration.prom_fixtures import Prometheus, prometheus, scrape, series_count  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROLES = {"TASKPULSE_ROLES": "ingest,metrics"}


def _send_raw(url: str, items: list[tuple[str, bytes, bytes]]) -> None:
    async def go() -> None:
        async with TaskpulseProducer(url, batch_size=1) as p:
            for topic, value, key in items:
                await p.send_raw(topic, value, key=key)

    asyncio.run(go())


def _lifecycle(task_id: str, task_type: str, agent: str, outcome: str, execution_ms: float, version: int = 1,
               **kw: Any) -> bytes:  # fmt: skip
    now = int(time.time() * 1000)
    record = {"task_id": task_id, "version": version, "task_type": task_type, "agent": agent, "outcome": outcome,
              "success": outcome == "success", "final_state": "COMPLETED" if outcome == "success" else "FAILED",
              "finished_ms": now, "queue_wait_ms": 400.0, "execution_ms": execution_ms,
              "cycle_ms": execution_ms + 500.0, **kw}  # fmt: skip
    return orjson.dumps(record)


def _scripted_events() -> list[dict[str, Any]]:
    base = int(time.time() * 1000) - 60_000
    steps = {
        "t1": ["task.created", "task.queued", "task.assigned", "task.started"],  # EXECUTING
        "t2": ["task.created", "task.queued"],  # QUEUED
        "t3": ["task.created"],  # CREATED
        "t4": ["task.created", "task.queued", "task.assigned", "task.started", "task.review"],  # REVIEWING
        "t5": ["task.created", "task.queued", "task.assigned", "task.started", "task.completed"],  # finished
    }
    states = {"task.assigned": {"agent_id": "coder", "task_type": "code"},
              "task.review": {"reviewer": "reviewer", "passed": True}}  # fmt: skip
    events = []
    for task, types in steps.items():
        for i, et in enumerate(types):
            events.append(make_event(et, task, states.get(et, {"task_type": "code"}), timestamp=base + i * 100))
    for agent, status, active in (("coder", "busy", 2), ("writer", "online", 0), ("ops", "offline", 0)):
        events.append(make_event("agent.status_changed", agent, {"status": status, "active_tasks": active},
                                 timestamp=base + 1000))  # fmt: skip
    events.append(make_event("agent.heartbeat", "coder", {"cpu_percent": 50.0, "memory_mb": 256, "active_tasks": 2},
                             timestamp=base + 2000))  # fmt: skip
    return events


def test_prometheus_scrapes_the_metrics_role_and_every_dashboard_query_resolves(make_worker, broker, prometheus):  # noqa: F811
    worker = make_worker(**ROLES).start()
    prom: Prometheus = prometheus([worker.api.removeprefix("http://")])
    wait_for(prom.targets_up, 30, "Prometheus to scrape the worker")

    events = _scripted_events()
    publish(broker, events)
    publish(broker, events[:3])  # delivered twice: counted once
    bad = [
        b"{not json",
        b"[1,",
        orjson.dumps(make_event("task.exploded", "t9", {})),
        orjson.dumps(make_event("task.progress", "t9", {"percentage": 150})),
    ]
    lifecycle = [
        _lifecycle("t5", "code", "coder", "success", 2000.0),
        _lifecycle("t5", "code", "coder", "success", 2000.0),  # redelivered: counted once
        _lifecycle("t6", "code", "coder", "failure", 8000.0, error="boom", retry_count=1),
        _lifecycle("t6", "code", "coder", "success", 9000.0, version=2),  # correction
        _lifecycle("t7", "research", "researcher", "success", 40_000.0),
    ]
    alerts = [
        orjson.dumps({"rule": "high_failure_rate", "fingerprint": "f1", "state": "firing", "change": "fired",
                      "severity": "high", "group_labels": {"task_type": "code"}}),  # fmt: skip
        orjson.dumps({"rule": "queue_depth", "fingerprint": "f2", "state": "pending", "change": "pending",
                      "severity": "critical", "group_labels": {}}),  # fmt: skip
    ]
    _send_raw(broker.url, [(RAW_TASK, b, b"t9") for b in bad]
              + [(LIFECYCLE, v, orjson.loads(v)["task_id"].encode()) for v in lifecycle]
              + [(ALERTS, v, b"a") for v in alerts])  # fmt: skip

    expected = Counter(e["event_type"] for e in events)
    wait_for(lambda: prom.value("sum(taskpulse_events_total)") == len(events)
             and prom.value("sum(taskpulse_tasks_finished_total)") == 3
             and prom.value("sum(taskpulse_events_rejected_total)") == 4
             and prom.value("sum(taskpulse_alerts_pending)") == 1, 120,
             f"Prometheus to see every event\n{worker.log()}")  # fmt: skip
    time.sleep(2)  # a few more scrapes: nothing may be counted late or twice

    # events by type, exactly once each; duplicates and rejects from the ingest role
    assert prom.by("sum by (event_type) (taskpulse_events_total)", "event_type") == dict(expected)
    assert prom.by("sum by (entity_type) (taskpulse_events_total)", "entity_type") == {"task": 17, "agent": 4}
    assert prom.value("sum(taskpulse_events_duplicate_total)") == 3
    assert prom.by("sum by (reason) (taskpulse_events_rejected_total)", "reason") == {
        "invalid_json": 2, "unknown_event_type": 1, "schema_violation": 1,
    }  # fmt: skip
    # task board
    assert prom.by("sum by (state) (taskpulse_tasks) > 0", "state") == {
        "EXECUTING": 1, "QUEUED": 1, "CREATED": 1, "REVIEWING": 1,
    }  # fmt: skip
    # lifecycle: outcomes of first records, the correction counted apart, histograms
    assert prom.by("sum by (outcome) (taskpulse_tasks_finished_total)", "outcome") == {"success": 2, "failure": 1}
    assert prom.value("sum(taskpulse_task_record_corrections_total)") == 1
    code = 'task_type="code", agent="coder"'
    assert prom.value(f"taskpulse_task_execution_seconds_count{{{code}}}") == 2
    assert prom.value(f"taskpulse_task_execution_seconds_sum{{{code}}}") == 10.0
    assert prom.value(f'taskpulse_task_execution_seconds_bucket{{{code}, le="2.5"}}') == 1
    assert prom.value(f'taskpulse_task_execution_seconds_bucket{{{code}, le="10.0"}}') == 2
    assert prom.value('taskpulse_task_execution_seconds_bucket{agent="researcher", le="30.0"}') == 0
    assert prom.value('taskpulse_task_execution_seconds_bucket{agent="researcher", le="60.0"}') == 1
    assert prom.value('taskpulse_task_retries_total{task_type="code"}') == 1
    # agents and alerts
    assert prom.by("sum by (status) (taskpulse_agents) > 0", "status") == {"busy": 1, "online": 1, "offline": 1}
    assert prom.value('taskpulse_agent_active_tasks{agent="coder"}') == 2
    assert prom.value('taskpulse_agent_cpu_ratio{agent="coder"}') == 0.5
    assert prom.value('taskpulse_alerts_firing{severity="high"}') == 1
    assert prom.value('taskpulse_alerts_pending{severity="critical"}') == 1

    _check_dashboards(prom, worker)


# --------------------------------------------------------------------------- dashboards

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                 "offset", "inf", "nan"}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    s = re.sub(r"\b\d+(?:ms|s|m|h|d|w|y)\b", " ", s)  # durations (offset 5m)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or m.group(0) in _PROMQL_WORDS:
            continue
        names.add(m.group(0))
    return names


def test_promql_metric_names() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, table) (rate(taskpulse_x_bucket{a="b(c)"}[5m]))) '
            '/ on (job) group_left sum(up{job="taskpulse"}) offset 5m')  # fmt: skip
    assert promql_metric_names(expr) == {"taskpulse_x_bucket", "up"}


def _exposed_names(body: str) -> set[str]:
    """Every series name the exposition can produce (declared families included)."""
    names = {"up"}  # Prometheus adds it per target
    for ln in body.splitlines():
        if ln.startswith("# TYPE "):
            _, _, name, kind = ln.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif ln and not ln.startswith("#"):
            names.add(ln.split("{")[0].split(" ")[0])
    return names


def _grafana_sql(sql: str) -> str:
    """The ClickHouse plugin's macros, expanded as it does for a 7-day range."""
    return re.sub(r"\$__timeFilter\((\w+)\)", r"(\1 >= now() - INTERVAL 7 DAY AND \1 <= now())", sql)


def _check_dashboards(prom: Prometheus, worker: Any) -> None:
    body, _ = scrape(f"{worker.api}/metrics")
    exposed = _exposed_names(body)
    checked_prom = checked_sql = 0
    for name, model in dashboards().items():
        for panel in model["panels"]:
            for target in panel.get("targets", []):
                where = f"{name} / {panel['title']} / {target['refId']}"
                if "expr" in target:
                    expr = target["expr"]
                    names = promql_metric_names(expr)
                    assert names, f"{where}: no metric in {expr}"
                    assert names <= exposed, f"{where}: not exposed: {sorted(names - exposed)} in {expr}"
                    q = expr.replace("$__rate_interval", "10s").replace("$__interval", "10s").replace("$__range", "5m")
                    prom.query(q)  # valid PromQL (asserts status success)
                    checked_prom += 1
                else:
                    assert target["datasource"]["type"] == "grafana-clickhouse-datasource", where
                    try:
                        worker.sql(_grafana_sql(target["rawSql"]))
                    except AssertionError as exc:
                        raise AssertionError(f"{where}: {exc}\n{target['rawSql']}") from None
                    checked_sql += 1
    assert checked_prom >= 30 and checked_sql >= 8, (checked_prom, checked_sql)


# --------------------------------------------------------------------------- demo traffic


def _demo_lifecycle(events: list[dict[str, Any]]) -> list[tuple[str, bytes, bytes]]:
    """Lifecycle records for the demo's finished tasks (what the correlation role publishes)."""
    out = []
    assigned: dict[str, str] = {}
    for e in events:
        st = e["current_state"]
        if e["event_type"] == "task.assigned":
            assigned[e["entity_id"]] = st.get("agent_id", "")
        if e["event_type"] in ("task.completed", "task.cancelled") or (
            e["event_type"] == "task.failed" and not st.get("will_retry")
        ):
            outcome = {"task.completed": "success" if st.get("success", True) else "failure",
                       "task.failed": "failure", "task.cancelled": "cancelled"}[e["event_type"]]  # fmt: skip
            value = _lifecycle(e["entity_id"], st.get("task_type", ""), assigned.get(e["entity_id"], ""), outcome,
                               float(e["metrics"].get("duration_ms") or 1000))  # fmt: skip
            out.append((LIFECYCLE, value, e["entity_id"].encode()))
    return out


def test_demo_traffic_series_count_and_scrape_time(make_worker, broker, prometheus, capsys):  # noqa: F811
    """The demo fleet (8 agents, 5 task types): how many series /metrics has, how long a scrape takes."""
    worker = make_worker(**ROLES).start()
    events = DemoFleet(seed=3, tasks_per_s=2.0).take(6000, int(time.time() * 1000) - 3_600_000)
    agents = sorted({e["entity_id"] for e in events if e["entity_type"] == "agent"})
    events += [make_event("agent.status_changed", a, {"status": "busy" if i % 2 else "online", "active_tasks": i % 3})
               for i, a in enumerate(agents)]  # fmt: skip
    publish(broker, events)
    lifecycle = _demo_lifecycle(events)
    _send_raw(broker.url, lifecycle)
    n_unique = len({e["id"] for e in events})

    seen: list[tuple[float, float]] = []

    def done() -> bool:
        body, _ = scrape(f"{worker.api}/metrics")
        total = sum(float(ln.rsplit(" ", 1)[1]) for ln in body.splitlines() if ln.startswith("taskpulse_events_total{"))
        finished = sum(float(ln.rsplit(" ", 1)[1]) for ln in body.splitlines()
                       if ln.startswith("taskpulse_tasks_finished_total{"))  # fmt: skip
        seen.append((total, finished))
        return (total, finished) == (n_unique, len(lifecycle))

    try:
        wait_for(done, 120, "the metrics role to read the demo traffic")
    except AssertionError as exc:
        body, _ = scrape(f"{worker.api}/metrics")
        wanted = ("taskpulse_events_accepted", "taskpulse_messages_", "taskpulse_consumer_lag",
                  "taskpulse_metrics_messages")
        counters = [ln for ln in body.splitlines() if ln.startswith(wanted)]
        raise AssertionError(f"{exc}: (events, records) {seen[-1:]} expected {(n_unique, len(lifecycle))}\n"
                             + "\n".join(counters)) from None  # fmt: skip
    prom: Prometheus = prometheus([worker.api.removeprefix("http://")])
    wait_for(prom.targets_up, 30, "Prometheus to scrape the worker")
    times, body = [], ""
    for _ in range(7):
        body, seconds = scrape(f"{worker.api}/metrics")
        times.append(seconds)
    series = series_count(body)
    in_prom = wait_for(lambda: prom.value('scrape_samples_scraped{job="taskpulse"}'), 20, "a scrape")
    duration = prom.value('scrape_duration_seconds{job="taskpulse"}')
    with capsys.disabled():
        print(f"\n[demo traffic] {len(events)} events, {len(lifecycle)} lifecycle records: /metrics has {series} "
              f"series ({in_prom:.0f} per Prometheus), scrape median {statistics.median(times) * 1000:.1f} ms "
              f"(Prometheus scrape_duration_seconds {duration * 1000 if duration else float('nan'):.1f} ms), "
              f"{len(body)} bytes")  # fmt: skip
    assert series < 3000, series
    assert statistics.median(times) < 0.5


def test_metrics_role_in_its_own_worker_next_to_the_pipeline(make_worker, broker, tmp_path):
    """The compose layout: the metrics role alone in one process, ingest in another (same
    consumer group name).  Every event is ingested and counted once; the dedicated
    ``TASKPULSE_METRICS_PORT`` serves the same metrics."""
    from pipeline.embedded import free_port

    port = free_port()
    # started first: the metrics-only worker joins (and may lead) the Faust group first
    metrics = make_worker(TASKPULSE_ROLES="metrics", TASKPULSE_DATA_DIR=str(tmp_path / "metrics"),
                          TASKPULSE_METRICS_PORT=str(port)).start()  # fmt: skip
    ingest = make_worker(TASKPULSE_ROLES="ingest", TASKPULSE_DATA_DIR=str(tmp_path / "ingest")).start()
    events = DemoFleet(seed=8, tasks_per_s=2.0).take(3000, int(time.time() * 1000) - 3_600_000)
    publish(broker, events)
    n = len({e["id"] for e in events})

    def counted(url: str) -> float:
        body, _ = scrape(url)
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in body.splitlines() if ln.startswith("taskpulse_events_total{"))

    wait_for(lambda: ingest.scalar("SELECT count() FROM taskpulse.events") == n, 120, "ingest of every event")
    wait_for(lambda: counted(f"{metrics.api}/metrics") == n, 60, "the metrics role to count every event")
    assert counted(f"http://127.0.0.1:{port}/metrics") == n
    assert "taskpulse_tasks{" in scrape(f"http://127.0.0.1:{port}/metrics")[0]
    assert (metrics.status() or {}).get("metrics", {}).get("messages_consumed", 0) > 0


def _gauges(url: str) -> dict[str, float]:
    body, _ = scrape(url)
    return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in body.splitlines()
            if ln.startswith(("taskpulse_tasks{", "taskpulse_agents{"))}  # fmt: skip


def test_open_tasks_and_agents_survive_a_restart_of_the_metrics_role(make_worker, broker):
    """With the correlation role writing the tasks and agent_status tables, a restarted
    metrics role (offsets committed: nothing replayed) loads its open tasks and agents
    from ClickHouse instead of starting from zero."""
    worker = make_worker(TASKPULSE_ROLES="ingest,correlate,metrics").start()
    base = int(time.time() * 1000) - 30_000
    events = []
    for i in range(6):  # t0, t1: queued; t2, t3: executing; t4, t5: completed
        steps = ["task.created", "task.queued"] + (["task.assigned", "task.started"] if i >= 2 else [])
        steps += ["task.completed"] if i >= 4 else []
        for j, et in enumerate(steps):
            state = {"task_type": "code", "agent_id": "coder"} if et == "task.assigned" else {"task_type": "code"}
            events.append(make_event(et, f"t{i}", state, timestamp=base + i * 1000 + j * 100))
    events += [make_event("agent.heartbeat", a, {"active_tasks": 1, "cpu_percent": 10.0}, timestamp=base + 9000)
               for a in ("coder", "writer")]  # fmt: skip
    publish(broker, events)

    url = f"{worker.api}/metrics"
    open_in_table = "SELECT count() FROM taskpulse.tasks FINAL WHERE NOT finished"
    wait_for(lambda: worker.scalar(open_in_table) == 4, 90, f"the correlation role to write tasks\n{worker.log()}")
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.agent_status FINAL") == 2, 60, "agent_status")
    wait_for(lambda: _gauges(url).get('taskpulse_tasks{state="QUEUED"}') == 2, 30, "the gauges")
    # the agents' status comes from the correlation role's own agent events, which travel the
    # raw and normalized topics after the tasks: compare once the gauges show it
    wait_for(lambda: _gauges(url).get('taskpulse_agents{status="busy"}') == 2, 60, "the agents' status")
    before = _gauges(url)
    assert before['taskpulse_tasks{state="EXECUTING"}'] == 2

    worker.stop()
    worker.start()
    wait_for(lambda: "loaded 4 open tasks and 2 agents from ClickHouse" in worker.log(), 60,
             f"the metrics role to load its state\n{worker.log()}")  # fmt: skip
    wait_for(lambda: _gauges(url) == before, 30,
             f"the same gauges after the restart (before: {before}, after: {_gauges(url)})")  # fmt: skip
    assert "loaded 0 live alerts from ClickHouse" in worker.log()  # the alerts query runs on the real schema
    assert "not loaded from ClickHouse" not in worker.log(), worker.log()
