"""Analytics on the real broker and engine: a scripted week of seed-shaped traffic
(shuffled, with duplicates) goes through ingest and correlation; every KPI view and the
calibration views must equal an independent computation from the script
(``analytics_world.reference``), through the analyst SQL path (/api/sql) exactly as
``taskpulse report`` and the API run them; the reports for that week render every section
and chart, and their numbers are the views' numbers.
"""

from __future__ import annotations

import http.server
import json
import math
import random
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.analytics import kpis, queries
from pipeline.core.analytics import report as rep
from pipeline.core.periods import Period
from pipeline.sinks.clickhouse import bind_parameters
from tests.integration import analytics_world as aw
from tests.integration.api_client import get
from tests.integration.conftest import ROOT, publish, wait_for

pytestmark = pytest.mark.integration

ENV = {
    "TASKPULSE_ROLES": "ingest,correlate",
    "TASKPULSE_REORDER_WINDOW_S": "2",
    # the week is history: no task or agent is judged silent while it is replayed
    "TASKPULSE_ABANDON_AFTER_S": "2592000",
    "TASKPULSE_AGENT_OFFLINE_AFTER_S": "2592000",
    "TASKPULSE_PRICES": aw.PRICES,
}


def _answers(worker: Any, qs: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, list[list[Any]]]:
    return {name: worker.sql(bind_parameters(sql, params)) for name, (sql, params) in qs.items()}


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_close(a[k], b[k]) for k in b)
    if a is None or b is None:
        return a is b
    if isinstance(b, str):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def _diff(got: dict[str, Any], want: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (got.get(k), v) for k, v in want.items() if not _close(got.get(k), v)}


def _cli(worker: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=worker.env, cwd=ROOT,
                          capture_output=True, text=True, timeout=180)  # fmt: skip


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


@pytest.fixture
def week(make_worker, broker):
    """A worker that has ingested and correlated the scripted week."""
    start = (int(time.time() * 1000) // aw.HOUR) * aw.HOUR - 8 * aw.DAY
    world = aw.build(start)
    events = world.events[:]
    rng = random.Random(11)
    events += rng.sample(world.events, len(world.events) // 10)  # duplicates
    rng.shuffle(events)
    worker = make_worker(**ENV).start()
    publish(broker, events, batch_size=50)
    n = len(world.tasks)
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.task_executions FINAL") == n, 180,
             f"{n} finished tasks\n{worker.log()}")  # fmt: skip
    return worker, world


def test_every_kpi_and_the_calibration_equal_an_independent_computation(week, tmp_path):
    worker, world = week
    p = Period("custom", world.start, world.end)
    want = aw.reference(world, world.start, world.end)

    def current() -> dict[str, Any]:
        return kpis.summarize(p, _answers(worker, queries.kpi_queries("taskpulse", p, {})))

    # correlation settles (reopened tasks get a second version, the correlator's own agent
    # status events arrive through ingest): poll until the answers stop changing
    got = wait_for(lambda: (lambda g: g if not _diff(g, want) else None)(current()), 120,
                   "the KPIs to settle on the reference")  # fmt: skip
    assert not _diff(got, want)
    # every KPI had something to measure (the script exercises each)
    for key in ("review_pass_rate", "user_satisfaction", "defect_rate", "mttr_ms", "utilization_rate",
                "agent_uptime_rate", "cost_per_successful_task", "brier_score"):  # fmt: skip
        assert got[key] is not None, key
    assert 0 < got["defects"] and 0 < got["recoveries"] and got["unpriced_tokens"] > 0

    # per agent and confidence bucket, predicted vs observed; chosen vs best-rated alternative
    cal = _answers(worker, queries.calibration_queries("taskpulse", p, {}))
    rel = {(str(a), int(b)): (int(n), float(pr), float(ob)) for a, b, n, pr, ob in cal["reliability"]}
    ref_rel = aw.reliability(world, world.start, world.end)
    assert rel.keys() == ref_rel.keys()
    for k, (n, pr, ob) in ref_rel.items():
        assert rel[k][0] == n and math.isclose(rel[k][1], pr) and math.isclose(rel[k][2], ob), k
    choice = {bool(top): (int(n), float(rate)) for top, n, rate, _c, _a in cal["choice"]}
    ref_choice = aw.choice(world, world.start, world.end)
    assert choice.keys() == ref_choice.keys() and all(
        choice[k][0] == v[0] and math.isclose(choice[k][1], v[1]) for k, v in ref_choice.items())  # fmt: skip

    # a filter narrows every number the same way
    agent = aw.AGENTS[0]
    only = kpis.summarize(p, _answers(worker, queries.kpi_queries("taskpulse", p, {"agent": agent})))
    mine = [t for t in world.tasks if t.agent == agent and t.outcome in ("success", "failure")]
    assert only["error_rate"] == pytest.approx(sum(t.outcome == "failure" for t in mine) / len(mine))
    per_agent = {a["agent"]: a for a in kpis.summarize_agents(_answers(worker, queries.agent_queries("taskpulse", p)))}
    assert per_agent[agent]["error_rate"] == pytest.approx(only["error_rate"])

    # every query takes every filter (a group no task belongs to: nothing, and no error)
    for f in ({"task_type": "code"}, {"group": "no-such-group"}, {"agent": agent, "task_type": "research"}):
        for qs in (queries.kpi_queries("taskpulse", p, f), queries.agent_queries("taskpulse", p, f),
                   queries.calibration_queries("taskpulse", p, f), queries.report_extra_queries("taskpulse", p, f),
                   queries.history_queries("taskpulse", world.end, 28, f)):  # fmt: skip
            _answers(worker, qs)
    coded = kpis.summarize(p, _answers(worker, queries.kpi_queries("taskpulse", p, {"task_type": "code"})))
    assert coded["tasks_finished"] == sum(t.task_type == "code" for t in world.tasks)
    nothing = kpis.summarize(p, _answers(worker, queries.kpi_queries("taskpulse", p, {"group": "no-such-group"})))
    assert nothing["tasks_finished"] == 0 and nothing["brier_score"] is None

    # cost lands on task_executions and in the task rollups
    assert worker.scalar("SELECT round(sum(cost), 9) FROM taskpulse.task_rollups WHERE granularity = '1d'") == \
        pytest.approx(round(want["cost_total"], 9))  # fmt: skip

    _api_serves_the_analytics_kpis(worker, world)
    _reports_render_and_match(worker, world, got, tmp_path)


def _api_serves_the_analytics_kpis(worker: Any, world: aw.World) -> None:
    """GET /api/v1/kpis?period=week serves the analytics KPIs of the same 7 days, and of the
    7 days before, with the values the views give (checked above against the reference)."""
    served = get(worker, "/api/v1/kpis", period="week", end=_iso(world.end))
    by_name = {k["name"]: k for k in served["kpis"]}
    for p in (Period("weekly", world.end - 7 * aw.DAY, world.end), Period("weekly", world.end - 14 * aw.DAY,
                                                                          world.end - 7 * aw.DAY)):  # fmt: skip
        want = kpis.api_values(kpis.summarize(p, _answers(worker, queries.kpi_queries("taskpulse", p, {}))))
        side = "value" if p.end_ms == world.end else "previous"
        assert want["error_rate"] is not None or side == "previous"
        for name, value in want.items():
            assert _close(by_name[name][side], value), (name, side, by_name[name][side], value)


def _section_ids(text: str) -> list[str]:
    return re.findall(r'<section id="([a-z_]+)">', text)


def _reports_render_and_match(worker: Any, world: aw.World, got: dict[str, Any], tmp_path: Path) -> None:
    until = _iso(world.end)
    out = tmp_path / "reports"
    runs = {
        "weekly": ["report", "weekly", "--until", until, "--dir", str(out)],
        "custom": ["report", "custom", "--since", _iso(world.start), "--until", until, "--dir", str(out),
                   "--group", "none-such", "--group", aw.OPEN_GROUP],
        "daily": ["report", "daily", "--until", until, "--dir", str(out)],
        "monthly": ["report", "monthly", "--until", until, "--dir", str(out)],
    }  # fmt: skip
    pages: dict[str, str] = {}
    for kind, args in runs.items():
        proc = _cli(worker, *args)
        assert proc.returncode == 0, (kind, proc.stderr)
        [html_file] = out.glob(f"{kind}-*.html")
        [md_file] = out.glob(f"{kind}-*.md")
        pages[kind] = html_file.read_text(encoding="utf-8")
        assert _section_ids(pages[kind]) == list(rep.SECTIONS[kind]), kind
        md = md_file.read_text(encoding="utf-8")
        assert all(f"## {rep.TITLES[s]}" in md for s in rep.SECTIONS[kind]), kind
        assert "<script" not in pages[kind] and "http://" not in pages[kind].split("<svg", 1)[0]

    # the week's reports: every chart drawn (inline SVG), no "no data" placeholder
    for kind in ("weekly", "custom"):
        figures = re.findall(r'<figure data-chart="(\w+)">(.*?)</figure>', pages[kind], flags=re.S)
        assert figures, kind
        for name, body in figures:
            assert body.lstrip().startswith("<svg"), (kind, name)
    drawn = {n for k in ("weekly", "custom") for n in re.findall(r'<figure data-chart="(\w+)">', pages[k])}
    assert drawn >= {"throughput", "cycle_time", "cost", "forecast", "reliability", "agent_success", "by_type"}
    # seed sections without data behind them say so, and name the event that would feed them
    assert "Not tracked:</b> learning progress" in pages["weekly"]
    assert "Not tracked:</b> return on investment" in pages["monthly"]

    # the numbers in the weekly report's KPI table are the views' numbers
    week_md = next(out.glob("weekly-*.md")).read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|", week_md, flags=re.M))
    expect = {
        "Throughput (completed / h)": rep.num(got["throughput_per_hour"]),
        "Cycle time p50": rep.secs(got["cycle_ms"]["p50"]), "Cycle time p95": rep.secs(got["cycle_ms"]["p95"]),
        "Wait time p50": rep.secs(got["wait_ms"]["p50"]),
        "Processing time p50": rep.secs(got["processing_ms"]["p50"]),
        "First-time success rate": rep.pct(got["first_time_success_rate"]),
        "Review pass rate": rep.pct(got["review_pass_rate"]),
        "User satisfaction (0-10)": rep.num(got["user_satisfaction"]), "Defect rate": rep.pct(got["defect_rate"]),
        "Error rate": rep.pct(got["error_rate"]), "Agent uptime": rep.pct(got["agent_uptime_rate"]),
        "MTTR": rep.secs(got["mttr_ms"]), "Utilization": rep.pct(got["utilization_rate"]),
        "Idle": rep.pct(got["idle_rate"]), "Cost per task (USD)": rep.num(got["cost_per_task"], 4),
        "Cost per successful task (USD)": rep.num(got["cost_per_successful_task"], 4),
        "Brier score (lower is better)": rep.num(got["brier_score"], 3),
    }  # fmt: skip
    assert {k: rows.get(k) for k in expect} == expect
    assert f"Brier score over {got['calibrated_tasks']:,} tasks: {rep.num(got['brier_score'], 3)}" in week_md
    assert f"Total: {rep.money(got['cost_total'], 'USD')}" in week_md
    assert re.search(r"error on the held-out last \d+ h: MAE [\d.]+ tasks/h", week_md)
    custom_md = next(out.glob("custom-*.md")).read_text(encoding="utf-8")
    assert "Group none-such: no open task." in custom_md
    assert re.search(rf"Group {aw.OPEN_GROUP}: 3 open tasks \(1 executing\), ETA \d{{4}}-\d\d-\d\d \d\d:\d\d UTC",
                     custom_md), custom_md  # fmt: skip


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_leading_worker_writes_scheduled_reports_and_posts_the_webhook(make_worker, broker, tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    reports = tmp_path / "scheduled"
    try:
        worker = make_worker(
            TASKPULSE_ROLES="ingest,correlate,alerts", TASKPULSE_REPORT_DAILY_CRON="* * * * *",
            TASKPULSE_REPORT_WEEKLY_CRON="", TASKPULSE_REPORT_MONTHLY_CRON="", TASKPULSE_REPORT_DIR=str(reports),
            TASKPULSE_REPORT_WEBHOOK_URL=f"http://127.0.0.1:{server.server_port}/hooks/reports-secret-path",
        ).start()  # fmt: skip
        world = aw.build((int(time.time() * 1000) // aw.HOUR) * aw.HOUR - 2 * aw.DAY, n_tasks=20)
        publish(broker, world.events, batch_size=50)
        # the schedule fires at the next minute; the leader writes the report, then posts
        wait_for(lambda: _Hook.received, 150, f"the report webhook\n{worker.log()}")
        hook = _Hook.received[0]
        assert (hook["kind"], hook["report"]) == ("taskpulse.report", "daily")
        html_path = Path(hook["html_path"])
        assert html_path.parent == reports and html_path.name.startswith("daily-")
        page = html_path.read_text(encoding="utf-8")
        assert _section_ids(page) == list(rep.SECTIONS["daily"])
        assert Path(hook["markdown_path"]).is_file()
        assert not list(reports.glob("weekly-*")) and not list(reports.glob("monthly-*"))  # empty cron: never
        section = (worker.status() or {}).get("reports") or {}
        assert section.get("leader") is True and section["written"][0]["html"] == str(html_path)
        assert "reports-secret-path" not in json.dumps(worker.status())  # the webhook URL is a secret
    finally:
        server.shutdown()
        server.server_close()
