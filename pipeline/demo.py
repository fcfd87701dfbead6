"""Realistic synthetic traffic: a fleet of agents taking tasks through the whole lifecycle.

Deterministic for a (run id, seed).  ``DemoFleet.stream(start_ms)`` yields event envelopes in
event time order, forever: users make requests, tasks are created, queued, evaluated by every
agent (confidences), assigned to the most confident one, started, report progress, are
reviewed, and complete or fail (and are retried); some are paused and resumed, a few are
cancelled.  Agents send heartbeats and self-reports, the system reports metrics and
errors, users give feedback.

Every run carries its run id in its task and group ids (``task-<run>-0000003``,
``batch-<run>-00000``) and draws its event ids from (run id, seed), so several demo runs
beside each other never merge tasks or collide on event ids.  Task times fit the shipped
alert rules (``deploy/alerts/rules.yml``): about 2 s of execution, p95 of the completed
tasks' duration about 3.5 s in any 5-minute window (the ``slow_responses`` threshold is
5 s), about 9 % of the attempts fail (most are retried).
"""

from __future__ import annotations

import heapq
import itertools
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

AGENTS = ["researcher", "writer", "coder", "reviewer", "planner", "analyst", "tester", "ops"]
#: task type → (median execution seconds, failure probability, agents that are good at it)
TASK_TYPES: dict[str, tuple[float, float, tuple[str, ...]]] = {
    "research": (1.5, 0.08, ("researcher", "analyst")),
    "content": (1.8, 0.06, ("writer", "planner")),
    "code": (1.2, 0.15, ("coder", "tester")),
    "review": (0.8, 0.04, ("reviewer",)),
    "maintenance": (0.5, 0.10, ("ops",)),
}
#: spread of execution times (lognormal sigma): p95 is about 1.9 × the median
EXEC_SIGMA = 0.4
USERS = [f"user-{i}" for i in range(25)]
REQUESTS = [
    "Summarise the latest CNCF landscape changes",
    "Write a blog post about week {n} projects",
    "Fix the flaky integration test in the billing service",
    "Review PR #{n} for security issues",
    "Rotate the staging certificates",
    "Research vector databases for the search revamp",
    'Draft release notes for v{n}.0, with "highlights"',
]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


class DemoFleet:
    """A simulated fleet.  ``tasks_per_s`` sets the load; events/task is about 14."""

    def __init__(
        self, seed: int = 7, tasks_per_s: float = 20.0, agents: list[str] | None = None, run_id: str = ""
    ) -> None:
        #: in every task and group id; by default derived from the seed (deterministic)
        self.run_id = run_id or f"s{seed}"
        self.rng = random.Random(f"{self.run_id}:{seed}")
        self.tasks_per_s = tasks_per_s
        self.agents = agents or AGENTS
        self._seq = itertools.count()
        self._uuid_rng = random.Random(f"{self.run_id}:{seed}:ids")
        #: tasks started so far (each is finished by the events the fleet yields)
        self.tasks = 0

    def _id(self) -> str:
        return str(uuid.UUID(int=self._uuid_rng.getrandbits(128), version=4))

    def _event(self, ms: int, event_type: str, entity_id: str, state: dict[str, Any], **kw: Any) -> dict[str, Any]:  # noqa: E501
        return {
            "id": self._id(),
            "timestamp": _iso(ms),
            "event_type": event_type,
            "entity_type": event_type.split(".", 1)[0],
            "entity_id": entity_id,
            "previous_state": kw.get("previous_state", {}),
            "current_state": state,
            "metadata": kw.get("metadata", {"triggered_by": "system"}),
            "metrics": kw.get("metrics", {}),
        }

    def _task(self, t0: int, n: int) -> list[tuple[int, dict[str, Any]]]:
        """Every event of one task, with absolute event times (ms)."""
        rng = self.rng
        task_type = rng.choice(list(TASK_TYPES))
        mean_s, p_fail, experts = TASK_TYPES[task_type]
        task_id = f"task-{self.run_id}-{n:07d}"
        user = rng.choice(USERS)
        corr = f"batch-{self.run_id}-{n // 50:05d}"
        md = {"triggered_by": user, "correlation_id": corr, "session_id": f"s-{user}", "tags": [task_type]}
        request = rng.choice(REQUESTS).format(n=n % 97)
        out: list[tuple[int, dict[str, Any]]] = []

        def add(ms: int, et: str, state: dict[str, Any], **kw: Any) -> None:
            state = {"task_type": task_type, **state}
            out.append((ms, self._event(ms, et, task_id, state, metadata=kw.pop("metadata", md), **kw)))

        out.append((t0, self._event(t0, "user.request", user, {"user_id": user, "request": request}, metadata=md)))
        t = t0 + rng.randint(5, 60)
        add(t, "task.created", {"priority": rng.choice(["critical", "high", "normal", "normal", "low"]),
                                 "requester_type": "human", "requester_id": user, "request": request,
                                 "group": corr})  # fmt: skip
        t += rng.randint(20, 400)
        add(t, "task.queued", {"queue": "default"}, previous_state={"status": "CREATED"})
        queued_at = t
        retries = 0
        while True:
            t += int(rng.expovariate(1 / 2500)) + 50
            evals = {a: round(min(0.99, max(0.01, rng.gauss(0.8 if a in experts else 0.35, 0.1))), 2)
                     for a in self.agents}  # fmt: skip
            agent = max(evals, key=lambda a: evals[a])
            add(t, "task.assigned", {"agent_id": agent, "confidence": evals[agent],
                                      "evaluations": evals, "method": "assigned"})  # fmt: skip
            t += rng.randint(50, 800)
            wait_ms = t - queued_at
            add(t, "task.started", {"agent_id": agent}, metrics={"duration_ms": wait_ms})
            started = t
            exec_ms = int(rng.lognormvariate(0, EXEC_SIGMA) * mean_s * 1000)
            paused_ms = 0
            if rng.random() < 0.05:
                tp = started + exec_ms // 3
                paused_ms = rng.randint(500, 3000)
                add(tp, "task.paused", {"agent_id": agent, "reason": "waiting for input"})
                add(tp + paused_ms, "task.resumed", {"agent_id": agent})
            for i, pct in enumerate((25, 50, 75), start=1):
                add(started + paused_ms + exec_ms * i // 4, "task.progress",
                    {"agent_id": agent, "percentage": pct, "step": f"step-{i}"})  # fmt: skip
            t = started + paused_ms + exec_ms
            if rng.random() < 0.01:
                add(t, "task.cancelled", {"agent_id": agent, "reason": "user cancelled"})
                return out
            if rng.random() < p_fail:
                will_retry = retries < 2
                add(t, "task.failed", {"agent_id": agent, "error": rng.choice(
                    ["timeout calling tool", "rate limited", "invalid output schema", "OOM"]),
                    "retry_count": retries, "will_retry": will_retry},
                    metrics={"duration_ms": exec_ms})  # fmt: skip
                if not will_retry:
                    return out
                retries += 1
                t += rng.randint(500, 3000)
                add(t, "task.queued", {"queue": "retry"}, previous_state={"status": "FAILED"})
                queued_at = t
                continue
            if rng.random() < 0.6:
                reviewer = "reviewer" if agent != "reviewer" else "planner"
                t += int(rng.expovariate(1 / 400)) + 100
                add(t, "task.review", {"agent_id": agent, "reviewer": reviewer, "passed": True,
                                        "quality_score": round(rng.uniform(60, 100), 1)})  # fmt: skip
            add(t, "task.completed", {"agent_id": agent, "success": True, "result": {"artifacts": rng.randint(0, 5)}},
                metrics={"duration_ms": t - started})  # fmt: skip
            if rng.random() < 0.4:
                t += rng.randint(1000, 30000)
                out.append((t, self._event(t, "user.feedback", user,
                                            {"user_id": user, "score": rng.randint(1, 10), "task_id": task_id},
                                            metadata=md)))  # fmt: skip
            return out

    def stream(self, start_ms: int) -> Iterator[dict[str, Any]]:
        """Events in event-time order from ``start_ms`` on, forever."""
        for _, event in self.timed(start_ms):
            yield event

    def timed(self, start_ms: int, events: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """(event time ms, event) in event-time order from ``start_ms`` on: forever, or (with
        ``events``) until that many were yielded and then the rest of the tasks already
        started, so every task of the run is complete."""
        heap: list[tuple[int, int, dict[str, Any]]] = []
        rng = self.rng
        next_task = start_ms
        next_tick = start_ms
        yielded = 0
        while True:
            horizon = min(next_task, next_tick)
            while heap and heap[0][0] <= horizon:
                ms, _, event = heapq.heappop(heap)
                yield ms, event
                yielded += 1
                if events is not None and yielded >= events:
                    yield from self._finish(heap)
                    return
            if next_task <= next_tick:
                for ms, ev in self._task(next_task, self.tasks):
                    heapq.heappush(heap, (ms, next(self._seq), ev))
                self.tasks += 1
                next_task += max(1, int(rng.expovariate(self.tasks_per_s / 1000)))
            else:
                for ms, ev in self._tick(next_tick):
                    heapq.heappush(heap, (ms, next(self._seq), ev))
                next_tick += 1000

    @staticmethod
    def _finish(heap: list[tuple[int, int, dict[str, Any]]]) -> Iterator[tuple[int, dict[str, Any]]]:
        """The events still due of the tasks already started (no new tasks, no new ticks)."""
        while heap:
            ms, _, event = heapq.heappop(heap)
            yield ms, event

    def events_per_s(self, sample_s: int = 120) -> float:
        """Events per simulated second at this load (measured on a copy of the fleet)."""
        probe = DemoFleet(seed=0, tasks_per_s=self.tasks_per_s, agents=self.agents, run_id="probe")
        n = sum(1 for _ in itertools.takewhile(lambda te: te[0] < sample_s * 1000, probe.timed(0)))
        return max(1.0, n / sample_s)

    def _tick(self, ms: int) -> list[tuple[int, dict[str, Any]]]:
        """Once a simulated second: heartbeats (every 10 s per agent), self-reports, metrics."""
        rng = self.rng
        out = []
        sec = ms // 1000
        for i, agent in enumerate(self.agents):
            if (sec + i) % 10 == 0:
                out.append((ms + i, self._event(ms + i, "agent.heartbeat", agent, {
                    "cpu_percent": round(rng.uniform(5, 95), 1), "memory_mb": round(rng.uniform(200, 4000)),
                    "active_tasks": rng.randint(0, 6)}, metadata={"triggered_by": agent})))  # fmt: skip
            if (sec + i) % 30 == 0:
                out.append((ms + i, self._event(ms + i, "agent.self_report", agent, {
                    "status": rng.choice(["ready", "executing", "executing", "waiting"])},
                    metadata={"triggered_by": agent})))  # fmt: skip
        if sec % 15 == 0:
            for name, unit, lo, hi in (("queue_depth", "tasks", 0, 150), ("api_latency_ms", "ms", 20, 900)):
                out.append((ms, self._event(ms, "system.metric", "orchestrator",
                                            {"name": name, "value": round(rng.uniform(lo, hi), 1), "unit": unit},
                                            metrics={"duration_ms": rng.uniform(1, 50)})))  # fmt: skip
        if rng.random() < 0.01:
            out.append((ms, self._event(ms, "system.error", "orchestrator",
                                        {"message": "upstream 503 from model API", "component": "llm-gateway",
                                         "severity": "medium"})))  # fmt: skip
        if sec % 60 == 0:
            out.append((ms, self._event(ms, "system.health", "orchestrator",
                                        {"component": "scheduler", "status": "ok", "score": 98})))  # fmt: skip
        return out

    def take(self, n: int, start_ms: int) -> list[dict[str, Any]]:
        """The first ``n`` events from ``start_ms``."""
        return list(itertools.islice(self.stream(start_ms), n))
