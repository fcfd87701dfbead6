"""The metrics role's Prometheus metrics (on an injected registry) and how each input record
updates them: normalized events, task lifecycle records, rollup partials and alert state
changes.  The state behind the gauges (open tasks, agents, alerts) is the pure
``pipeline.core.metrics.state``; gauges are read from it at scrape time.

Cardinality: ids (task, event, user) are never labels; agents and task types are capped
(``TASKPULSE_METRICS_MAX_AGENTS`` / ``_MAX_TASK_TYPES``) with an ``other`` bucket; event
types are the known ones (unknown types never reach the normalized topic).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import ValidationError

from pipeline.core.ingest.dedup import SeenIds
from pipeline.core.metrics.state import (
    AGENT_STATUSES,
    OPEN_STATES,
    OTHER,
    AgentStates,
    AlertStates,
    LabelCap,
    RecordVersions,
    TaskStates,
    alert_fields,
    task_state_of,
)
from pipeline.core.normalized import Decoded
from pipeline.events import TaskExecution

#: seconds; tasks take from sub-second tool calls to hours of research
TASK_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
DELAY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


class ExporterMetrics:
    """Counters and histograms updated per record; gauges computed from the state."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        max_agents: int = 50,
        max_task_types: int = 25,
        max_tracked_tasks: int = 100_000,
        dedup_capacity: int = 200_000,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.agent_label = LabelCap(max_agents)
        self.task_type_label = LabelCap(max_task_types)
        self.tasks = TaskStates(max_tracked_tasks)
        self.agents = AgentStates(max(max_agents * 20, 1000))
        self.alerts = AlertStates()
        self.seen = SeenIds(dedup_capacity)
        self.versions = RecordVersions(max_tracked_tasks)

        self.events = Counter(
            "taskpulse_events_total",
            "Normalized events seen by the metrics role (each event id once)",
            ["entity_type", "event_type"],
            registry=r,
        )
        self.redelivered = Counter(
            "taskpulse_metrics_redelivered_events_total",
            "Normalized events delivered again (same id) and not counted twice",
            registry=r,
        )
        self.task_transitions = Counter(
            "taskpulse_task_state_transitions_total",
            "Tasks entering each state (from the normalized task events)",
            ["state"],
            registry=r,
        )
        self.finished = Counter(
            "taskpulse_tasks_finished_total",
            "Finished tasks by outcome (first lifecycle record of each task)",
            ["task_type", "agent", "outcome"],
            registry=r,
        )
        self.corrections = Counter(
            "taskpulse_task_record_corrections_total",
            "Lifecycle records that correct an earlier one (higher version), by the new outcome",
            ["outcome"],
            registry=r,
        )
        self.retries = Counter(
            "taskpulse_task_retries_total", "Retries of finished tasks", ["task_type"], registry=r
        )
        hist = {"buckets": TASK_BUCKETS, "registry": r}
        labels = ["task_type", "agent"]
        self.queue_wait = Histogram(
            "taskpulse_task_queue_wait_seconds", "Task created/queued → started", labels, **hist  # type: ignore[arg-type]
        )
        self.execution = Histogram(
            "taskpulse_task_execution_seconds", "Task started → finished", labels, **hist  # type: ignore[arg-type]
        )
        self.cycle = Histogram(
            "taskpulse_task_cycle_seconds", "Task created → finished", labels, **hist  # type: ignore[arg-type]
        )
        self.event_duration = Counter(
            "taskpulse_event_duration_seconds",
            "Sum of the events' metrics.duration_ms, in seconds (from the 1m rollups)",
            ["entity_type", "event_type"],
            registry=r,
        )
        self.event_durations = Counter(
            "taskpulse_event_durations",
            "Events that carried a duration (from the 1m rollups)",
            ["entity_type", "event_type"],
            registry=r,
        )
        self.rollup_partials = Counter(
            "taskpulse_rollup_partials_total", "Rollup partial aggregates read", ["granularity"], registry=r
        )
        self.alert_changes = Counter(
            "taskpulse_alert_state_changes_total",
            "Alert state changes (pending, firing, resolved)",
            ["severity", "state"],
            registry=r,
        )
        self.messages = Counter(
            "taskpulse_metrics_messages_total", "Kafka messages read by the metrics role", ["topic"], registry=r
        )
        self.bad_records = Counter(
            "taskpulse_metrics_bad_records_total",
            "Records the metrics role could not read (skipped)",
            ["topic"],
            registry=r,
        )
        self.delay = Histogram(
            "taskpulse_metrics_event_delay_seconds",
            "Event time → seen by the metrics role (newest event of each message)",
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "taskpulse_metrics_consumer_lag_messages",
            "Messages the metrics role has not read yet",
            ["topic"],
            registry=r,
        )
        r.register(_StateCollector(self))

    # ------------------------------------------------------------------ inputs

    def normalized(self, message: Decoded, origin: tuple[str, int, int], now_s: float) -> None:
        """One message of ``taskpulse.events.normalized``, decoded by the one decoder of the topic."""
        if message.errors:
            self.bad_records.labels(origin[0]).inc(len(message.errors))
        newest = None
        by_type: Tally[tuple[str, str]] = Tally()  # counted per message: labels() is not free
        transitions: Tally[str] = Tally()
        redelivered = 0
        self.seen.prefetch(ev.id for _, ev in message.events)  # one lookup step per message
        for index, ev in message.events:
            event_type = ev.event_type
            if not self.seen.first_delivery(ev.id, (*origin, index, "")):  # process-local: one log
                redelivered += 1
                continue
            t = ev.event_time_ms
            newest = t if newest is None else max(newest, t)
            by_type[(ev.entity_type.value, event_type)] += 1
            state = ev.current_state
            entity_id = ev.entity_id
            if event_type.startswith("task."):
                new_state = task_state_of(event_type, state)
                if new_state is not None and self.tasks.apply(entity_id, new_state, t):
                    transitions[new_state] += 1
            elif event_type == "agent.status_changed":
                self.agent_label(entity_id)  # admitted in order of first appearance
                active = state.get("active_tasks", 0)
                self.agents.status_changed(
                    entity_id, str(state.get("status", "")), active if isinstance(active, int) else 0, t
                )
            elif event_type == "agent.heartbeat":
                self.agent_label(entity_id)
                self.agents.heartbeat(entity_id, state)
        for labels, n in by_type.items():
            self.events.labels(*labels).inc(n)
        for task_state, n in transitions.items():
            self.task_transitions.labels(task_state).inc(n)
        if redelivered:
            self.redelivered.inc(redelivered)
        if newest:
            self.delay.observe(max(0.0, now_s - newest / 1000))

    def lifecycle(self, record: dict[str, Any], topic: str) -> None:
        """One ``TaskExecution`` record of ``taskpulse.tasks.lifecycle``."""
        try:
            rec = TaskExecution.model_validate(record)
        except ValidationError:
            self.bad_records.labels(topic).inc()
            return
        kind = self.versions.classify(rec.task_id, rec.version)
        if kind == "replay":
            return
        if kind == "corrected":
            self.corrections.labels(rec.outcome).inc()
            return
        task_type, agent = self.task_type_label(rec.task_type), self.agent_label(rec.agent)
        self.finished.labels(task_type, agent, rec.outcome).inc()
        if rec.retry_count:
            self.retries.labels(task_type).inc(rec.retry_count)
        for hist, ms in ((self.queue_wait, rec.queue_wait_ms), (self.execution, rec.execution_ms),
                         (self.cycle, rec.cycle_ms)):  # fmt: skip
            if ms is not None and ms >= 0:
                hist.labels(task_type, agent).observe(ms / 1000)

    def rollups(self, partials: Iterable[dict[str, Any]], topic: str) -> None:
        """One message of ``taskpulse.rollups`` (partial window aggregates)."""
        for part in partials:
            granularity = part.get("granularity")
            dims = part.get("dims")
            if not isinstance(granularity, str) or not isinstance(dims, list) or len(dims) < 2:
                self.bad_records.labels(topic).inc()
                continue
            self.rollup_partials.labels(granularity).inc()
            if granularity != "1m":  # every event is in exactly one 1m partial
                continue
            n, avg = part.get("duration_count") or 0, part.get("duration_avg_ms")
            if isinstance(n, int) and n > 0 and isinstance(avg, int | float):
                self.event_durations.labels(str(dims[0]), str(dims[1])).inc(n)
                self.event_duration.labels(str(dims[0]), str(dims[1])).inc(avg * n / 1000)

    def seed(self, tasks: Iterable[tuple[Any, ...]], agents: Iterable[tuple[Any, ...]]) -> tuple[int, int]:
        """Open tasks ``(task_id, state, last_event_ms)`` and agents ``(agent, status,
        active_tasks, status_ms, cpu_percent, memory_mb)`` known before this process
        started (the correlation tables); later events update them as usual."""
        n_tasks = n_agents = 0
        for task_id, state, at_ms in tasks:
            self.tasks.seed(str(task_id), str(state), int(at_ms))
            n_tasks += 1
        for agent, status, active, at_ms, cpu, mem in agents:
            self.agent_label(str(agent))
            self.agents.seed(str(agent), str(status), int(active), int(at_ms), cpu, mem)
            n_agents += 1
        return n_tasks, n_agents

    def forget(self, drop: Callable[[str], bool]) -> None:
        """Forget the tasks and agents whose entity id ``drop`` selects."""
        self.tasks.forget(drop)
        self.agents.forget(drop)

    def alert(self, record: dict[str, Any], topic: str) -> None:
        """One state change of ``taskpulse.alerts``."""
        fields = alert_fields(record)
        if fields is None:
            self.bad_records.labels(topic).inc()
            return
        key, state, severity = fields
        self.alert_changes.labels(severity, state).inc()
        self.alerts.apply(key, state, severity)


class _StateCollector(Collector):
    """Gauges read from the remembered state at scrape time."""

    def __init__(self, m: ExporterMetrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        m = self.m
        tasks = GaugeMetricFamily("taskpulse_tasks", "Open tasks by current state", labels=["state"])
        counts = dict(m.tasks.counts)
        for state in OPEN_STATES:
            tasks.add_metric([state], counts.get(state, 0))
        yield tasks

        agents = list(m.agents.agents.items())
        by_status = Tally(info.status for _, info in agents)
        fam = GaugeMetricFamily("taskpulse_agents", "Known agents by availability", labels=["status"])
        for name in (*AGENT_STATUSES, "unknown"):
            fam.add_metric([name], by_status.get(name, 0))
        yield fam

        status = GaugeMetricFamily(
            "taskpulse_agent_status", "Agents in each availability status (1 per named agent)",
            labels=["agent", "status"],
        )  # fmt: skip
        active = GaugeMetricFamily("taskpulse_agent_active_tasks", "Tasks the agent works on", labels=["agent"])
        util = GaugeMetricFamily(
            "taskpulse_agent_utilization_ratio",
            "Busy share of the agent's available time right now (0 or 1 per named agent; "
            "avg_over_time gives utilization)",
            labels=["agent"],
        )
        cpu = GaugeMetricFamily(
            "taskpulse_agent_cpu_ratio", "Agent CPU (last heartbeat), 1 = one core", labels=["agent"]
        )
        mem = GaugeMetricFamily("taskpulse_agent_memory_bytes", "Agent memory (last heartbeat)", labels=["agent"])
        buckets: dict[str, Tally[str]] = {}
        load: Tally[str] = Tally()
        for agent, info in agents:
            label = m.agent_label(agent)
            buckets.setdefault(label, Tally())[info.status] += 1
            load[label] += info.active_tasks
            if label != OTHER:
                if info.cpu_percent is not None:
                    cpu.add_metric([label], info.cpu_percent / 100)
                if info.memory_mb is not None:
                    mem.add_metric([label], info.memory_mb * 1024 * 1024)
        for label, tally in buckets.items():
            for st in AGENT_STATUSES:
                status.add_metric([label, st], tally.get(st, 0))
            active.add_metric([label], load[label])
            available = tally.get("online", 0) + tally.get("busy", 0)
            if available:
                util.add_metric([label], tally.get("busy", 0) / available)
        yield from (status, active, util, cpu, mem)

        firing = GaugeMetricFamily("taskpulse_alerts_firing", "Alerts firing now", labels=["severity"])
        pending = GaugeMetricFamily("taskpulse_alerts_pending", "Alerts pending now", labels=["severity"])
        for fam_, st in ((firing, "firing"), (pending, "pending")):
            tally = m.alerts.counts(st)
            for sev in sorted({"critical", "high", "medium", "low", *tally}):
                fam_.add_metric([sev], tally.get(sev, 0))
            yield fam_

        yield GaugeMetricFamily("taskpulse_metrics_tracked_tasks", "Open tasks remembered", value=len(m.tasks))
        yield GaugeMetricFamily(
            "taskpulse_metrics_tracked_agents", "Agents remembered", value=len(m.agents.agents)
        )
        values = GaugeMetricFamily(
            "taskpulse_metrics_label_values",
            "Distinct values admitted per capped label (at the cap, new values go to `other`)",
            labels=["label"],
        )
        values.add_metric(["agent"], len(m.agent_label))
        values.add_metric(["task_type"], len(m.task_type_label))
        yield values
