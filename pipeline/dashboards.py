"""The Grafana dashboards, generated: ``python -m pipeline.dashboards`` writes
``deploy/grafana/dashboards/*.json`` (a test fails when they are stale, and another runs
every panel's query against a real Prometheus and the real ClickHouse schema).

Two dashboards, after seed 000's layout: **taskpulse — live** (Prometheus: overview
cards, task board by state, agent grid, throughput and latency, agent utilization,
pipeline health) and **taskpulse — history** (ClickHouse rollups, task executions,
agent status and DLQ, for ranges beyond Prometheus retention).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
CLICKHOUSE = {"type": "grafana-clickhouse-datasource", "uid": "clickhouse"}
#: ClickHouse plugin target formats
CH_TIMESERIES, CH_TABLE = 0, 1
RI = "$__rate_interval"
ACTIVE = 'state=~"ASSIGNED|EXECUTING|REVIEWING|PAUSED|RETRY"'


@dataclass
class Target:
    """One query: PromQL (``expr``) or ClickHouse SQL (``sql``)."""

    expr: str = ""
    legend: str = ""
    sql: str = ""
    table: bool = False
    instant: bool = False

    def render(self, ref: str) -> dict[str, Any]:
        if self.sql:
            return {
                "refId": ref,
                "datasource": CLICKHOUSE,
                "editorType": "sql",
                "rawSql": " ".join(self.sql.split()),
                "format": CH_TABLE if self.table else CH_TIMESERIES,
                "queryType": "table" if self.table else "timeseries",
            }
        out: dict[str, Any] = {"refId": ref, "datasource": PROMETHEUS, "expr": self.expr,
                               "legendFormat": self.legend or "__auto"}  # fmt: skip
        if self.instant:
            out.update(instant=True, range=False, format="table")
        return out


@dataclass
class Panel:
    title: str
    kind: str
    targets: list[Target]
    w: int = 8
    h: int = 8
    unit: str = ""
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    field_config: dict[str, Any] = field(default_factory=dict)
    transformations: list[dict[str, Any]] = field(default_factory=list)


def prom(expr: str, legend: str = "", instant: bool = False) -> Target:
    return Target(expr=expr, legend=legend, instant=instant)


def ch(sql: str, table: bool = False) -> Target:
    return Target(sql=sql, table=table)


def quantile(q: float, histogram: str, by: str = "") -> str:
    """``histogram_quantile`` over every instance of a ``_seconds`` (or other) histogram."""
    return f"histogram_quantile({q}, sum by (le{by}) (rate({histogram}_bucket[{RI}])))"


def stat(title: str, expr: str, unit: str = "", description: str = "", w: int = 4) -> Panel:
    return Panel(title, "stat", [prom(expr)], w=w, h=4, unit=unit, description=description,
                 options={"reduceOptions": {"calcs": ["lastNotNull"]}, "graphMode": "area"})  # fmt: skip


def series(title: str, targets: list[Target], unit: str = "", w: int = 8, description: str = "") -> Panel:
    return Panel(title, "timeseries", targets, w=w, unit=unit, description=description)


def live_rows() -> list[tuple[str, list[Panel]]]:
    finished = "taskpulse_tasks_finished_total"
    return [
        ("Overview", [
            stat("Active tasks", f"sum(taskpulse_tasks{{{ACTIVE}}})",
                 description="Assigned, executing, reviewing, paused or waiting for a retry"),
            stat("Online agents", 'sum(taskpulse_agents{status=~"online|busy"})'),
            stat("Completion rate (1h)",
                 f'sum(increase({finished}{{outcome="success"}}[1h])) / sum(increase({finished}[1h]))',
                 unit="percentunit"),
            stat("Avg response time (1h)",
                 "sum(increase(taskpulse_task_cycle_seconds_sum[1h])) "
                 "/ sum(increase(taskpulse_task_cycle_seconds_count[1h]))", unit="s",
                 description="Task created → finished, mean over the last hour"),
            stat("Alerts firing", "sum(taskpulse_alerts_firing)"),
            stat("Workers up", 'sum(up{job="taskpulse"})'),
        ]),
        ("Task board", [
            stat("Queued", 'sum(taskpulse_tasks{state=~"CREATED|QUEUED"})'),
            stat("Assigned", 'sum(taskpulse_tasks{state="ASSIGNED"})'),
            stat("Executing", 'sum(taskpulse_tasks{state=~"EXECUTING|RETRY|PAUSED"})'),
            stat("Reviewing", 'sum(taskpulse_tasks{state="REVIEWING"})'),
            stat("Completed (range)", f'sum(increase({finished}{{outcome="success"}}[$__range]))'),
            stat("Failed (range)", f'sum(increase({finished}{{outcome!="success"}}[$__range]))'),
            Panel("Open tasks by state", "bargauge",
                  [prom("sum by (state) (taskpulse_tasks)", "{{state}}", instant=True)], w=24, h=6,
                  options={"orientation": "vertical", "displayMode": "gradient"}),
        ]),
        ("Agents", [
            Panel("Agent grid", "table", [
                prom("max by (agent) (taskpulse_agent_status{status=\"busy\"}) * 2 "
                     "+ max by (agent) (taskpulse_agent_status{status=\"online\"})", instant=True),
                prom("sum by (agent) (taskpulse_agent_active_tasks)", instant=True),
                prom(f'sum by (agent) (increase({finished}{{outcome="success"}}[1h])) '
                     f"/ sum by (agent) (increase({finished}[1h]))", instant=True),
            ], w=12, h=10,
                description="Status (2 busy, 1 online, 0 offline), active tasks, success rate over 1h",
                transformations=[{"id": "merge"}, {"id": "organize", "options": {
                    "excludeByName": {"Time": True},
                    "renameByName": {"Value #A": "status", "Value #B": "active tasks",
                                     "Value #C": "success rate (1h)"}}}]),  # fmt: skip
            series("Active tasks per agent", [prom("sum by (agent) (taskpulse_agent_active_tasks)", "{{agent}}")],
                   w=12),
            series("Agent CPU", [prom("max by (agent) (taskpulse_agent_cpu_ratio)", "{{agent}}")],
                   unit="percentunit", w=12),
            series("Agent memory", [prom("max by (agent) (taskpulse_agent_memory_bytes)", "{{agent}}")],
                   unit="bytes", w=12),
        ]),
        ("Throughput and latency", [
            series("Events/s by entity type",
                   [prom(f"sum by (entity_type) (rate(taskpulse_events_total[{RI}]))", "{{entity_type}}")],
                   unit="ops"),
            series("Tasks finished/s by outcome",
                   [prom(f"sum by (outcome) (rate({finished}[{RI}]))", "{{outcome}}")], unit="ops"),
            series("Task times p50 / p95", [
                prom(f"histogram_quantile({q}, sum by (le) (rate(taskpulse_task_{m}_seconds_bucket[{RI}])))",
                     f"{m} p{int(q * 100)}")
                for m in ("queue_wait", "execution", "cycle") for q in (0.5, 0.95)
            ], unit="s"),
            series("Execution p95 by task type", [prom(
                quantile(0.95, "taskpulse_task_execution_seconds", ", task_type"),
                "{{task_type}}")], unit="s", w=12),
            Panel("Agent utilization heatmap", "status-history", [prom(
                "avg by (agent) (avg_over_time(taskpulse_agent_utilization_ratio[$__interval]))", "{{agent}}")],
                w=12, unit="percentunit",
                description="Share of its available time each agent was busy",
                field_config={"color": {"mode": "continuous-GrYlRd"}, "min": 0, "max": 1}),
            series("Event durations (mean) by event type", [prom(
                f"sum by (event_type) (rate(taskpulse_event_duration_seconds_total[{RI}])) "
                f"/ sum by (event_type) (rate(taskpulse_event_durations_total[{RI}]))", "{{event_type}}")],
                unit="s", w=12),
            series("Alerts", [
                prom("sum by (severity) (taskpulse_alerts_firing)", "firing {{severity}}"),
                prom("sum by (severity) (taskpulse_alerts_pending)", "pending {{severity}}"),
            ], w=12),
        ]),
        ("Pipeline health", [
            series("Consumer lag", [
                prom("sum by (topic) (taskpulse_consumer_lag_messages)", "ingest {{topic}}"),
                prom("sum by (topic) (taskpulse_metrics_consumer_lag_messages)", "metrics {{topic}}"),
            ]),
            series("DLQ / duplicates per second", [
                prom(f"sum by (reason) (rate(taskpulse_events_rejected_total[{RI}]))", "rejected {{reason}}"),
                prom(f"sum(rate(taskpulse_events_duplicate_total[{RI}]))", "duplicates"),
            ], unit="ops"),
            series("End-to-end delay p95", [
                prom(quantile(0.95, "taskpulse_event_delay_seconds"), "event → ClickHouse"),
                prom(quantile(0.95, "taskpulse_metrics_event_delay_seconds"), "event → metrics"),
            ], unit="s"),
            series("ClickHouse write latency p95", [prom(
                f"histogram_quantile(0.95, sum by (le, table) (rate(taskpulse_clickhouse_write_seconds_bucket[{RI}])))",
                "{{table}}")], unit="s"),
            series("Sink errors and backpressure", [
                prom(f"sum by (sink) (rate(taskpulse_sink_errors_total[{RI}]))", "errors {{sink}}"),
                prom("max(taskpulse_backpressure)", "backpressure"),
            ]),
            series("Batch size (messages, p50)", [prom(
                f"histogram_quantile(0.5, sum by (le) (rate(taskpulse_batch_messages_bucket[{RI}])))", "p50")]),
            series("Rows written/s", [prom(
                f"sum by (table) (rate(taskpulse_clickhouse_rows_written_total[{RI}]))", "{{table}}")], unit="ops"),
            series("Metrics role input", [
                prom(f"sum by (topic) (rate(taskpulse_metrics_messages_total[{RI}]))", "{{topic}}"),
                prom(f"sum by (topic) (rate(taskpulse_metrics_bad_records_total[{RI}]))", "bad {{topic}}"),
            ], unit="ops"),
            series("Metrics role memory", [
                prom("sum(taskpulse_metrics_tracked_tasks)", "open tasks tracked"),
                prom("sum(taskpulse_metrics_tracked_agents)", "agents tracked"),
                prom("max by (label) (taskpulse_metrics_label_values)", "{{label}} label values"),
            ]),
        ]),
    ]  # fmt: skip


def history_rows() -> list[tuple[str, list[Panel]]]:
    tf = "$__timeFilter"
    return [
        ("Throughput (rollups)", [
            series("Events per hour by entity type", [ch(f"""
                SELECT window_start AS time, entity_type, sum(count) AS events
                FROM taskpulse.rollups WHERE granularity = '1h' AND {tf}(window_start)
                GROUP BY time, entity_type ORDER BY time""")], w=12),
            series("Tasks finished per day by outcome", [ch(f"""
                SELECT window_start AS time, outcome, sum(count) AS tasks
                FROM taskpulse.rollups
                WHERE granularity = '1d' AND entity_type = 'task' AND outcome != '' AND {tf}(window_start)
                GROUP BY time, outcome ORDER BY time""")], w=12),
            series("p95 task.completed duration per agent (hourly)", [ch(f"""
                SELECT window_start AS time, agent, tpQuantile(sumMap(duration_sketch), 0.95) / 1000 AS p95_s
                FROM taskpulse.rollups
                WHERE granularity = '1h' AND event_type = 'task.completed' AND {tf}(window_start)
                GROUP BY time, agent ORDER BY time""")], unit="s", w=12),
            series("Failure rate per task type (daily)", [ch(f"""
                SELECT window_start AS time, task_type,
                       sum(failures) / greatest(sum(successes + failures), 1) AS failure_rate
                FROM taskpulse.rollups
                WHERE granularity = '1d' AND entity_type = 'task' AND outcome IN ('success', 'failure')
                  AND {tf}(window_start)
                GROUP BY time, task_type ORDER BY time""")], unit="percentunit", w=12),
        ]),
        ("Task executions", [
            series("p95 execution / queue wait per task type (daily)", [ch(f"""
                SELECT toStartOfDay(finished_at) AS time, task_type,
                       quantile(0.95)(execution_ms) / 1000 AS execution_p95_s,
                       quantile(0.95)(queue_wait_ms) / 1000 AS queue_wait_p95_s
                FROM taskpulse.task_executions FINAL WHERE {tf}(finished_at)
                GROUP BY time, task_type ORDER BY time""")], unit="s", w=12),
            Panel("Agent performance (range)", "table", [ch(f"""
                SELECT agent, count() AS tasks, round(avg(success), 3) AS success_rate,
                       round(avg(execution_ms) / 1000, 1) AS avg_execution_s,
                       round(avg(confidence), 2) AS avg_confidence, sum(retry_count) AS retries
                FROM taskpulse.task_executions FINAL WHERE {tf}(finished_at)
                GROUP BY agent ORDER BY tasks DESC""", table=True)], w=12),
            Panel("Task groups", "table", [ch("""
                SELECT group_key, total, pending, in_progress, completed, failed, percentage,
                       estimated_completion
                FROM taskpulse.task_groups ORDER BY first_created_at DESC LIMIT 100""", table=True)], w=12),
            Panel("Recent failures", "table", [ch(f"""
                SELECT finished_at, task_id, task_type, agent, final_state, retry_count, error
                FROM taskpulse.task_executions FINAL WHERE {tf}(finished_at) AND NOT success
                ORDER BY finished_at DESC LIMIT 100""", table=True)], w=12),
        ]),
        ("Agents and input quality", [
            Panel("Agent status", "table", [ch("""
                SELECT agent, status, active_tasks, tasks_completed_today, success_rate, utilization,
                       uptime_s, cpu_percent, memory_mb, last_seen
                FROM taskpulse.agent_overview ORDER BY agent""", table=True)], w=12),
            Panel("Alert history", "table", [ch(f"""
                SELECT at, rule, severity, state, change, value, threshold, summary
                FROM taskpulse.alerts WHERE {tf}(at) ORDER BY at DESC LIMIT 200""", table=True)], w=12),
            series("DLQ entries per hour by reason", [ch(f"""
                SELECT toStartOfHour(received_at) AS time, reason, count() AS entries
                FROM taskpulse.dlq WHERE {tf}(received_at)
                GROUP BY time, reason ORDER BY time""")], w=12),
        ]),
    ]  # fmt: skip


def build(uid: str, title: str, rows: list[tuple[str, list[Panel]]], time_from: str, refresh: str) -> dict[str, Any]:
    """A Grafana dashboard model (schema 39) laid out row by row on the 24-column grid."""
    panels: list[dict[str, Any]] = []
    y, next_id = 0, 1
    for row_title, row_panels in rows:
        panels.append({"id": next_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []})  # fmt: skip
        next_id += 1
        y += 1
        x, row_h = 0, 0
        for p in row_panels:
            if x + p.w > 24:
                x, y, row_h = 0, y + row_h, 0
            refs = "ABCDEFGHIJKLMNOP"
            datasource = CLICKHOUSE if p.targets[0].sql else PROMETHEUS
            defaults: dict[str, Any] = {**p.field_config}
            if p.unit:
                defaults["unit"] = p.unit
            panels.append({
                "id": next_id, "type": p.kind, "title": p.title, "description": p.description,
                "gridPos": {"x": x, "y": y, "w": p.w, "h": p.h}, "datasource": datasource,
                "targets": [t.render(refs[i]) for i, t in enumerate(p.targets)],
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "options": p.options, "transformations": p.transformations,
            })  # fmt: skip
            next_id += 1
            x += p.w
            row_h = max(row_h, p.h)
        y += row_h
    return {
        "uid": uid, "title": title, "tags": ["taskpulse"], "timezone": "utc", "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": refresh, "graphTooltip": 1,
        "time": {"from": time_from, "to": "now"}, "templating": {"list": []},
        "annotations": {"list": []}, "links": [], "panels": panels,
    }  # fmt: skip


def dashboards() -> dict[str, dict[str, Any]]:
    """File name → dashboard model."""
    return {
        "taskpulse-live.json": build("taskpulse-live", "taskpulse — live", live_rows(), "now-1h", "10s"),
        "taskpulse-history.json": build("taskpulse-history", "taskpulse — history", history_rows(), "now-7d", "5m"),
    }


def render(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name, model in dashboards().items():
        path = directory / name
        path.write_text(render(model))
        out.append(path)
    return out


if __name__ == "__main__":  # python -m pipeline.dashboards [DIR]
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("deploy/grafana/dashboards")
    for p in write(target):
        print(p)  # noqa: T201
