"""A scripted week of seed-shaped traffic for the analytics tests, and an independent
reference computation of every KPI and of the calibration from the script itself (never
from the engine).

Seed 001's fields (user_id, request, the assigned agent's confidence on a 0-100 scale,
every other agent's confidence), seed 000's envelope and lifecycle, user feedback, agent
availability, and usage (``metrics.cost`` or token counts).  Each task records what the
script did to it (times, agent, outcome, retries, pauses, reviews, cost), and the
reference functions compute the KPIs from those facts with plain Python.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from pipeline.sdk import make_event

HOUR = 3_600_000
DAY = 24 * HOUR
PRICES = '{"currency": "USD", "models": {"gpt-4o": {"input_per_1m": 2.5, "output_per_1m": 10}}}'
PRICE_IN, PRICE_OUT = 2.5e-6, 10e-6
AGENTS = ("researcher", "writer", "coder", "tester")
TYPES = ("research", "writing", "code")
OPEN_GROUP = "batch-open"


@dataclass
class Task:
    task_id: str
    task_type: str
    agent: str
    confidence: float
    others: dict[str, float]
    created: int
    queued: int
    started: int
    finished: int
    outcome: str  # success | failure | cancelled
    retries: int = 0
    paused_ms: int = 0
    reopened: bool = False
    failed_review: bool = False
    cost: float | None = None
    tokens: int = 0
    unpriced: int = 0


@dataclass
class World:
    start: int
    end: int
    events: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    #: (time, passed) of each review
    reviews: list[tuple[int, bool]] = field(default_factory=list)
    #: (time, score) of each user.feedback
    feedback: list[tuple[int, float]] = field(default_factory=list)
    #: agent → [(time, id, up)] of its availability events
    availability: dict[str, list[tuple[int, str, bool]]] = field(default_factory=lambda: defaultdict(list))
    #: agent → [(from, to)] offline windows (no task of the agent overlaps one)
    offline: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))


def build(start: int, n_tasks: int = 160, seed: int = 7) -> World:
    """A week ``[start, start + 7 days)`` of tasks, feedback and agent availability."""
    rng = random.Random(seed)
    w = World(start, start + 7 * DAY)

    def ev(et: str, entity: str, state: dict[str, Any], t: int, metrics: dict[str, Any] | None = None) -> None:
        w.events.append(make_event(et, entity, state, timestamp=t, metrics=metrics,
                                   metadata={"triggered_by": "system"}))  # fmt: skip

    def agent_ev(agent: str, et: str, t: int, state: dict[str, Any] | None = None) -> None:
        ev(et, agent, state or {}, t)
        w.availability[agent].append((t, w.events[-1]["id"], et != "agent.offline"))

    # availability: online before the week, heartbeats every 6 h, one offline window each
    for i, agent in enumerate(AGENTS):
        agent_ev(agent, "agent.online", start - HOUR + i * 1000, {"capabilities": ["x"]})
        off_from = start + (2 + i) * DAY + 10 * HOUR
        off_to = off_from + (3 + i) * HOUR
        w.offline[agent].append((off_from, off_to))
        agent_ev(agent, "agent.offline", off_from, {"reason": "maintenance"})
        agent_ev(agent, "agent.online", off_to, {"capabilities": ["x"]})
        t = start + 6 * HOUR + i * 7000
        while t < w.end:
            if not any(a <= t <= b for a, b in w.offline[agent]):
                agent_ev(agent, "agent.heartbeat", t, {"cpu_percent": 20.0, "memory_mb": 512.0, "active_tasks": 0})
            t += 6 * HOUR

    def free(agent: str, a: int, b: int) -> bool:
        return not any(a <= y and x <= b for x, y in w.offline[agent])

    for n in range(n_tasks):
        tid = f"wk-{n:04d}"
        ttype = TYPES[n % len(TYPES)]
        created = start + rng.randrange(0, 7 * DAY - 8 * HOUR)
        queued = created + rng.randrange(100, 5000)
        started = queued + rng.randrange(1000, 600_000)
        duration = rng.randrange(20_000, 3 * HOUR)
        agent = AGENTS[rng.randrange(len(AGENTS))]
        if not free(agent, created, started + duration + 4 * HOUR):
            agent = next(a for a in AGENTS if free(a, created, started + duration + 4 * HOUR))
        # seed 001: confidences 0-100, the chosen agent usually the best rated
        conf = float(rng.choice([35, 55, 65, 72, 80, 88, 92, 97]))
        others = {a: float(rng.randrange(5, 99)) for a in AGENTS if a != agent and rng.random() < 0.7}
        kind = rng.choices(["ok", "fail", "retry", "review_fail", "reopen", "pause", "cancel"],
                           [50, 14, 10, 8, 6, 8, 4])[0]  # fmt: skip
        # success probability follows confidence a little: calibration has something to say
        if kind == "ok" and rng.random() > conf / 100 + 0.15:
            kind = "fail"
        t = Task(tid, ttype, agent, conf, others, created, queued, started, started + duration, "success")
        st = {"task_type": ttype}
        ev("task.created", tid, {**st, "user_id": f"U{rng.randrange(100, 999)}",
                                 "request": f"Request {n}: summarise, then \"draft\""}, created)  # fmt: skip
        ev("task.queued", tid, st, queued)
        assign = {**st, "agent_id": agent, "confidence": conf, "evaluations": {agent: conf, **others}}
        ev("task.assigned", tid, assign, queued + 50)
        usage: dict[str, Any] | None = None
        roll = rng.random()
        if roll < 0.4:
            a, b = rng.randrange(100, 5000), rng.randrange(50, 2000)
            usage = {"model": "gpt-4o", "input_tokens": a, "output_tokens": b}
            t.cost, t.tokens = a * PRICE_IN + b * PRICE_OUT, a + b
        elif roll < 0.45:
            a = rng.randrange(100, 5000)
            usage = {"model": "mystery-model", "input_tokens": a}
            t.tokens, t.unpriced = a, a
        ev("task.started", tid, {**st, "agent_id": agent}, started, usage)
        fin = t.finished
        if kind == "cancel":
            t.outcome = "cancelled"
            fin = t.finished = started + 1000
            ev("task.cancelled", tid, {**st, "reason": "user withdrew"}, fin)
        elif kind == "fail":
            t.outcome = "failure"
            ev("task.failed", tid, {**st, "error": rng.choice(["OOM", "rate limited", "bad output"]),
                                    "will_retry": False}, fin)  # fmt: skip
        elif kind == "retry":
            ev("task.failed", tid, {**st, "error": "transient", "will_retry": True, "retry_count": 0}, started + 5000)
            ev("task.queued", tid, st, started + 6000)
            ev("task.assigned", tid, assign, started + 6100)
            ev("task.started", tid, {**st, "agent_id": agent}, started + 7000)
            t.retries = 1
            _complete(ev, tid, st, fin, rng, t, w)
        elif kind == "review_fail":
            ev("task.review", tid, {**st, "reviewer": "qa", "passed": False, "quality_score": 40}, fin - 10_000)
            w.reviews.append((fin - 10_000, False))
            ev("task.started", tid, {**st, "agent_id": agent}, fin - 9000)
            t.failed_review = True
            _complete(ev, tid, st, fin, rng, t, w)
        elif kind == "reopen":
            _complete(ev, tid, st, fin - 20_000, rng, t, w, review=False)
            ev("task.status_changed", tid, {**st, "status": "EXECUTING"}, fin - 15_000)
            ev("task.completed", tid, {**st, "success": True}, fin)
            t.reopened = True
        elif kind == "pause":
            ev("task.paused", tid, {**st, "reason": "waiting for input"}, started + 2000)
            ev("task.resumed", tid, st, started + 12_000)
            t.paused_ms = 10_000
            _complete(ev, tid, st, fin, rng, t, w)
        else:
            _complete(ev, tid, st, fin, rng, t, w)
        if t.outcome == "success" and rng.random() < 0.5:
            score = float(rng.randrange(3, 11))
            ev("user.feedback", f"U{n}", {"user_id": f"U{n}", "score": score, "task_id": tid}, fin + 60_000)
            w.feedback.append((fin + 60_000, score))
        w.tasks.append(t)
    # a group still open at the end of the week: one task executing, two waiting
    for i in range(3):
        tid = f"open-{i}"
        t0 = w.end - 2 * HOUR + i * 1000
        ev("task.created", tid, {"task_type": TYPES[i], "group": OPEN_GROUP}, t0)
        ev("task.queued", tid, {"task_type": TYPES[i]}, t0 + 100)
        if i == 0:
            ev("task.assigned", tid, {"task_type": TYPES[i], "agent_id": AGENTS[0], "confidence": 80}, t0 + 200)
            ev("task.started", tid, {"task_type": TYPES[i], "agent_id": AGENTS[0]}, t0 + 300)
    return w


def _complete(ev: Any, tid: str, st: dict[str, Any], fin: int, rng: random.Random, t: Task, w: World,
              review: bool = True) -> None:  # fmt: skip
    if review and rng.random() < 0.5:
        ev("task.review", tid, {**st, "reviewer": "qa", "status": "passed", "quality_score": 90}, fin - 1000)
        w.reviews.append((fin - 1000, True))
    cost = None
    if rng.random() < 0.3:
        cost = round(rng.uniform(0.001, 0.2), 6)
        t.cost = (t.cost or 0.0) + cost
    ev("task.completed", tid, {**st, "success": True, "result": {"ok": True}}, fin,
       {"cost": cost, "currency": "USD"} if cost is not None else None)  # fmt: skip


# ----------------------------------------------------------------------------- reference


def quantile_exact(values: list[float], q: float) -> float | None:
    """ClickHouse's quantileExact: the element at floor(q * n) of the sorted values."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, math.floor(q * len(s)))]


def _clip(a: int, b: int, lo: int, hi: int) -> int:
    return max(0, min(b, hi) - max(a, lo))


def prob(c: float) -> float:
    return min(max(c / 100 if c > 1 else c, 0.0), 1.0)


def reference(w: World, lo: int, hi: int) -> dict[str, Any]:
    """Every KPI over ``[lo, hi)`` (the names of ``kpis.summarize``), from the script."""
    fin = [t for t in w.tasks if lo <= t.finished < hi]
    decided = [t for t in fin if t.outcome in ("success", "failure")]
    ok = [t for t in fin if t.outcome == "success"]
    cycle = [float(t.finished - t.created) for t in fin]
    wait = [float(t.started - t.queued) for t in fin]
    proc = [float(t.finished - t.started - t.paused_ms) for t in fin]
    reviews = [p for at, p in w.reviews if lo <= at < hi]
    scores = [s for at, s in w.feedback if lo <= at < hi]
    delivered = [t for t in fin if t.outcome == "success" or t.reopened or t.failed_review]
    costed = [t for t in fin if t.cost is not None]
    out: dict[str, Any] = {
        "tasks_finished": len(fin),
        "tasks_completed": len(ok),
        "throughput_per_hour": len(ok) / ((hi - lo) / HOUR),
        "cycle_ms": {"avg": sum(cycle) / len(cycle), "p50": quantile_exact(cycle, 0.5),
                     "p95": quantile_exact(cycle, 0.95)},
        "wait_ms": {"avg": sum(wait) / len(wait), "p50": quantile_exact(wait, 0.5), "p95": quantile_exact(wait, 0.95)},
        "processing_ms": {"avg": sum(proc) / len(proc), "p50": quantile_exact(proc, 0.5),
                          "p95": quantile_exact(proc, 0.95)},
        "first_time_success_rate": sum(t.outcome == "success" and t.retries == 0 for t in decided) / len(decided),
        "review_pass_rate": sum(reviews) / len(reviews),
        "reviews": len(reviews),
        "user_satisfaction": sum(scores) / len(scores),
        "feedback_responses": len(scores),
        "defect_rate": sum(t.reopened or t.failed_review for t in delivered) / len(delivered),
        "defects": sum(t.reopened or t.failed_review for t in delivered),
        "error_rate": sum(t.outcome == "failure" for t in decided) / len(decided),
        "cost_total": sum(t.cost for t in costed if t.cost is not None),
        "currency": "USD",
        "tokens": sum(t.tokens for t in fin),
        "unpriced_tokens": sum(t.unpriced for t in fin),
    }  # fmt: skip
    out["cost_per_task"] = out["cost_total"] / len(fin)
    out["cost_per_successful_task"] = out["cost_total"] / len(ok)
    # uptime: each availability event to the next (the last one to the end of time)
    up_total = seen_total = 0
    ups: dict[str, int] = {}
    for agent, evs in w.availability.items():
        evs = sorted(evs)
        for i, (at, _id, up) in enumerate(evs):
            to = evs[i + 1][0] if i + 1 < len(evs) else 2**62
            d = _clip(at, to, lo, hi)
            seen_total += d
            if up:
                up_total += d
                ups[agent] = ups.get(agent, 0) + d
    out["agent_uptime_rate"] = up_total / seen_total
    out["agents_seen"] = len(w.availability)
    # MTTR: per agent, a failure after a success (or first) → the next success
    recoveries = []
    for agent in AGENTS:
        mine = sorted((t.finished, t.task_id, t.outcome == "success") for t in w.tasks
                      if t.agent == agent and t.outcome != "cancelled")  # fmt: skip
        prev_ok, fail_start = True, None
        for at, _tid, good in mine:
            if not good and prev_ok:
                fail_start = at
            if good and not prev_ok and fail_start is not None and lo <= at < hi:
                recoveries.append(at - fail_start)
            prev_ok = good
    out["recoveries"] = len(recoveries)
    out["mttr_ms"] = sum(recoveries) / len(recoveries) if recoveries else None
    # utilization: union of each agent's started → finished, clipped, over its up time
    busy_total = up_sum = 0
    for agent in AGENTS:
        spans = sorted((t.started, t.finished) for t in w.tasks if t.agent == agent and t.finished > t.started)
        merged: list[list[int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        busy = sum(_clip(a, b, lo, hi) for a, b in merged)
        up = ups.get(agent, 0)
        if up > 0:
            busy_total += min(busy, up)
            up_sum += up
    out["utilization_rate"] = busy_total / up_sum
    out["idle_rate"] = 1 - out["utilization_rate"]
    cal = [t for t in decided]
    out["calibrated_tasks"] = len(cal)
    out["brier_score"] = sum((prob(t.confidence) - (t.outcome == "success")) ** 2 for t in cal) / len(cal)
    return out


def reliability(w: World, lo: int, hi: int) -> dict[tuple[str, int], tuple[int, float, float]]:
    """(agent, bucket) → (tasks, mean predicted, observed success rate)."""
    acc: dict[tuple[str, int], list[tuple[float, bool]]] = defaultdict(list)
    for t in w.tasks:
        if lo <= t.finished < hi and t.outcome in ("success", "failure"):
            p = prob(t.confidence)
            acc[(t.agent, min(math.floor(p * 10), 9))].append((p, t.outcome == "success"))
    return {k: (len(v), sum(p for p, _ in v) / len(v), sum(o for _, o in v) / len(v)) for k, v in acc.items()}


def choice(w: World, lo: int, hi: int) -> dict[bool, tuple[int, float]]:
    """chosen agent top-rated? → (tasks, success rate), over tasks rated by other agents."""
    acc: dict[bool, list[bool]] = defaultdict(list)
    for t in w.tasks:
        if lo <= t.finished < hi and t.outcome in ("success", "failure") and t.others:
            best = max(prob(c) for c in t.others.values())
            acc[prob(t.confidence) >= best].append(t.outcome == "success")
    return {k: (len(v), sum(v) / len(v)) for k, v in acc.items()}
