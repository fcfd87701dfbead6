"""The web UI's pure part (``core.live``): the snapshot's shapes, the per-minute series with
its gaps, the agent's busy share and the task timeline's invalid transitions, checked
against the correlation role's own lifecycle (``core.tasks.lifecycle.derive``)."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from pipeline.core import live
from pipeline.core.tasks import lifecycle

MIN = 60_000


def test_series_fills_every_minute_of_the_hour() -> None:
    now = 1_700_000_000_000 + 25_000  # 25 s into a minute
    this_minute = now // MIN * MIN
    rows = [(this_minute, 3, 1, 120.0, 900.0), (this_minute - 10 * MIN, 0, 2, float("nan"), float("nan"))]
    s = live.shape_series(rows, now)
    assert len(s["t"]) == 60
    assert s["t"][-1] == this_minute // 1000 and s["t"][0] == (this_minute - 59 * MIN) // 1000
    assert s["succeeded"][-1] == 3 and s["failed"][-1] == 1 and s["p95_ms"][-1] == 900.0
    assert s["failed"][-11] == 2 and s["p50_ms"][-11] is None  # an empty quantile is no number
    assert sum(s["succeeded"]) == 3 and sum(s["failed"]) == 3  # nothing invented in the gaps
    assert s["p50_ms"][-2] is None


def test_board_has_every_lifecycle_column_in_order_and_keeps_unknown_states() -> None:
    cards = [("t1", "EXECUTING", "code", "coder", "g", 1000, 50.0, 1, 0, 2),
             ("c1", "COMPLETED", "code", "coder", "g", 900, 100.0, 0, 0, 5), ("w", "WEIRD", "", "", "", 1, 0, 0, 0, 1)]
    board = live.shape_board(cards)
    states = [c["state"] for c in board["columns"]]
    assert states[: len(live.BOARD_STATES)] == list(live.BOARD_STATES) and states[-1] == "WEIRD"
    by = {c["state"]: c for c in board["columns"]}
    assert by["EXECUTING"]["count"] == 2 and by["EXECUTING"]["tasks"][0]["id"] == "t1"
    assert by["QUEUED"] == {"state": "QUEUED", "count": 0, "tasks": []}
    assert by["COMPLETED"]["count"] == 5 and len(by["COMPLETED"]["tasks"]) == 1  # counts are full counts


def test_kpis_count_agent_states_and_guard_an_empty_day() -> None:
    agents = [{"status": s} for s in ("online", "busy", "busy", "offline", "unknown")]
    k = live.shape_kpis((4, 0, 0, float("nan")), agents, 2)
    assert k["success_rate"] is None and k["p95_execution_ms"] is None
    assert (k["agents_online"], k["agents_busy"], k["agents_offline"], k["agents_total"]) == (1, 2, 1, 5)
    assert k["alerts_firing"] == 2 and k["active_tasks"] == 4
    assert live.shape_kpis((0, 8, 6, 10.0), [], 0)["success_rate"] == 0.75


def test_busy_share_per_minute() -> None:
    start = 1_700_000_040_000 // MIN * MIN
    now = start + 30_000  # half a minute into the current minute
    changes = [(start - 90 * MIN, "online"), (start - 2 * MIN, "busy"), (start - MIN - 30_000, "online"),
               (start, "busy")]
    out = live.busy_share(changes, now)
    assert len(out["t"]) == 60 and out["t"][-1] == start // 1000
    assert out["busy"][-1] == 1.0  # busy since the minute began
    assert out["busy"][-2] == 0.0  # online the whole minute before
    assert out["busy"][-3] == 0.5  # busy, then online at half past
    assert out["busy"][0] == 0.0  # the status before the window counts from its start
    assert live.busy_share([], now)["busy"] == [None] * 60


def _event(eid: str, et: str, t: int, **state: object) -> tuple[object, ...]:
    """A row of ``api_queries.task_timeline``: (id, event_type, time ms, current_state, metadata)."""
    return (eid, et, t, json.dumps(state), json.dumps({"correlation_id": "g"}))


def _timeline(events: list[tuple[object, ...]]) -> list[dict[str, object]]:
    page = live.shape_task("task-1", None, None, events)
    assert page is not None
    return page["timeline"]  # type: ignore[no-any-return]


def test_timeline_marks_the_transitions_the_correlator_counts() -> None:
    events = [
        _event("e1", "task.created", 1000, task_type="code"),
        _event("e2", "task.queued", 1100),
        _event("e4", "task.completed", 1200, success=True),  # ASSIGNED -> COMPLETED: not allowed
        _event("e3", "task.assigned", 1150, agent_id="a", confidence=0.9, evaluations={"a": 0.9, "b": 0.2}),
        _event("e5", "task.progress", 1300, percentage=50),  # COMPLETED -> EXECUTING: not allowed
    ]
    tl = _timeline(events)
    assert [e["id"] for e in tl] == ["e1", "e2", "e3", "e4", "e5"]  # by event time, whatever the input order
    assert [e["invalid"] for e in tl] == [None, None, None, "ASSIGNED->COMPLETED", "COMPLETED->EXECUTING"]
    assert tl[2]["data"]["evaluations"] == {"a": 0.9, "b": 0.2} and tl[2]["state"] == "ASSIGNED"


@pytest.mark.parametrize("seed", range(40))
def test_timeline_agrees_with_the_lifecycle_on_random_histories(seed: int) -> None:
    rng = random.Random(seed)
    kinds = [
        ("task.created", {}), ("task.queued", {}), ("task.assigned", {"agent_id": "a"}), ("task.started", {}),
        ("task.progress", {"percentage": 40}), ("task.review", {"passed": True}), ("task.review", {"passed": False}),
        ("task.completed", {"success": True}), ("task.failed", {"will_retry": True}), ("task.failed", {}),
        ("task.paused", {}), ("task.resumed", {}), ("task.cancelled", {}),
        ("task.status_changed", {"status": "queued"}),
    ]  # fmt: skip
    events = []
    for i in range(rng.randint(1, 12)):
        et, data = rng.choice(kinds)
        events.append(_event(f"e{i:02d}", et, 1000 + rng.randint(0, 6) * 100, **data))
    tl = _timeline(events)
    history = [lifecycle.compact(str(e[0]), str(e[1]), int(e[2]), json.loads(e[3]), {}) for e in events]  # type: ignore[arg-type]
    view = lifecycle.derive("task-1", history)
    assert [e["invalid"] for e in tl if e["invalid"]] == view.invalid


class CountingStore:
    """Answers every dashboard query with no rows (the KPI query with one row of zeros) and
    counts the queries by their first words: the feed's fan-out is what is under test."""

    database = "taskpulse"

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def read(self, sql: str, params: dict[str, object] | None = None) -> object:
        from types import SimpleNamespace

        return SimpleNamespace(result_rows=self._rows(sql))

    def _rows(self, sql: str) -> list[tuple[object, ...]]:
        key = "kpis" if sql.startswith("SELECT (SELECT count()") else sql[:60]
        if "OVER (PARTITION BY state)" in sql:
            key = "board"
        self.calls[key] = self.calls.get(key, 0) + 1
        return [(0, 0, 0, None)] if key == "kpis" else []


async def test_one_poll_feeds_every_browser() -> None:
    from pipeline.roles.ui import LiveFeed

    store = CountingStore()
    feed = LiveFeed(store, interval_s=0.01)  # type: ignore[arg-type]
    everyone, coder = live.BoardFilter(), live.BoardFilter(agent="coder")
    got: list[list[dict[str, object]]] = [[] for _ in range(6)]

    async def browser(i: int, f: live.BoardFilter) -> None:
        async with feed.subscribe(f) as q:
            while len(got[i]) < 5:
                got[i].append(await q.get())

    await asyncio.wait_for(asyncio.gather(*(browser(i, everyone if i < 5 else coder) for i in range(6))), 30)
    await feed.close()
    assert all(s["filter"] == {"task_type": "", "agent": "", "group": ""} for g in got[:5] for s in g)
    assert all(s["filter"]["agent"] == "coder" for s in got[5])  # type: ignore[index]
    # each poll ran the shared queries once, and the board once per distinct filter
    assert store.calls["kpis"] == feed.polls
    assert store.calls["board"] <= 2 * feed.polls
    assert feed.polls < sum(len(g) for g in got)  # six browsers, not six polls per snapshot
    assert feed.subscribers == 0


@pytest.mark.parametrize(
    ("path", "open_"),
    [("/", True), ("/ui/app.js", True), ("/ui/vendor/uplot/uPlot.iife.min.js", True), ("/api/v1/stream", False),
     ("/api/v1/tasks/x/timeline", False), ("/ui", False), ("/uix/a", False), ("/api/status", False)],
)
def test_only_the_page_and_its_static_files_are_open(path: str, open_: bool) -> None:
    """The page holds no data and must load before a token is asked for; the data never is open."""
    from pipeline.core.auth import is_open

    assert is_open(path) is open_


@pytest.mark.parametrize(
    ("path", "status"),
    [("index.html", 200), ("app.js", 200), ("vendor/uplot/LICENSE", 200), ("../__init__.py", 404),
     ("vendor/../../__init__.py", 404), (".hidden", 404), ("vendor", 404), ("", 404), ("nope.js", 404),
     ("..\\__init__.py", 404)],
)
def test_static_files_are_served_from_the_package_and_nothing_else(path: str, status: int) -> None:
    from pipeline.roles.ui import _static

    r = _static(path)
    assert r.status_code == status
    if status == 200:
        assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_task_page_from_the_api_queries_rows() -> None:
    from datetime import datetime

    from pipeline.core.tasks import api_queries

    t0 = datetime(2026, 1, 2, 3, 4, 5, 678000)  # naive: UTC, as the client returns DateTime64(3, 'UTC')
    row = dict.fromkeys(api_queries.TASK_COLUMNS, None) | {
        "task_id": "task-1", "state": "COMPLETED", "task_type": "code", "group_key": "g", "agent": "a",
        "priority": "high", "requester_id": "u", "created_at": t0, "last_event_at": t0, "progress": 100.0,
        "retry_count": 1, "invalid_transitions": 0, "finished": True,
    }  # fmt: skip
    x = dict.fromkeys(api_queries.EXECUTION_COLUMNS, None) | {
        "outcome": "success", "queue_wait_ms": 200.0, "execution_ms": float("nan"), "paused_ms": 0.0,
        "other_agents": {"b": 0.2}, "invalid_transition_list": [], "error": "", "request": "r", "confidence": 0.9,
    }  # fmt: skip
    page = live.shape_task("task-1", row, x, [_event("e1", "task.created", 1000)])
    assert page is not None
    assert page["created_ms"] == 1767323045678 and page["retries"] == 1 and page["finished"] is True
    assert page["execution"]["queue_wait_ms"] == 200.0 and page["execution"]["execution_ms"] is None
    assert page["execution"]["other_agents"] == {"b": 0.2}
    assert live.shape_task("nothing", None, None, []) is None



async def test_a_failing_database_is_shown_and_the_feed_recovers() -> None:
    from pipeline.errors import SinkUnavailable
    from pipeline.roles.ui import LiveFeed

    class Flaky(CountingStore):
        def __init__(self) -> None:
            super().__init__()
            self.down = True

        def read(self, sql: str, params: dict[str, object] | None = None) -> object:
            if self.down:
                raise SinkUnavailable("cannot reach ClickHouse at http://default:s3cret@ch:8123: refused")
            return super().read(sql, params)

    store = Flaky()
    feed = LiveFeed(store, interval_s=0.01)  # type: ignore[arg-type]
    async with feed.subscribe(live.BoardFilter()) as q:
        first = await asyncio.wait_for(q.get(), 10)
        assert "cannot reach ClickHouse" in first["error"] and "s3cret" not in first["error"]
        store.down = False
        while "error" in (snap := await asyncio.wait_for(q.get(), 10)):
            pass
        assert snap["kpis"]["active_tasks"] == 0
    await feed.close()


def test_firing_alerts_are_the_apis_and_shaped_for_the_banner() -> None:
    from datetime import datetime

    from pipeline.core.alerts import api_queries as alert_queries

    assert live.firing_alerts("taskpulse") == alert_queries.alerts_page("taskpulse", True, (), (), None, 99)
    at = datetime(2026, 1, 1, 0, 0, 1)
    row = dict.fromkeys(alert_queries.ALERT_COLUMNS, None) | {
        "at": at, "rule": "r", "severity": "high", "summary": "s", "value": float("nan"), "threshold": 0.2,
    }  # fmt: skip
    (a,) = live.shape_alerts([(*row.values(), 1)])
    assert a == {"rule": "r", "severity": "high", "summary": "s", "fired_ms": 1767225601000, "value": None,
                 "threshold": 0.2}  # fmt: skip


async def test_distinct_filters_are_bounded_without_dropping_anyone(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.roles import ui

    monkeypatch.setattr(ui, "MAX_FILTERS", 2)
    feed = ui.LiveFeed(CountingStore(), interval_s=0.01)  # type: ignore[arg-type]
    async with feed.subscribe(live.BoardFilter(agent="a")) as qa, feed.subscribe(live.BoardFilter(agent="b")) as qb:
        async with feed.subscribe(live.BoardFilter(agent="c")) as qc:
            assert "board filters are being watched" in (await asyncio.wait_for(qc.get(), 10))["error"]
        assert (await asyncio.wait_for(qa.get(), 10))["filter"]["agent"] == "a"
        assert (await asyncio.wait_for(qb.get(), 10))["filter"]["agent"] == "b"
        async with feed.subscribe(live.BoardFilter(agent="a")) as qa2:  # a filter already polled: shared
            assert (await asyncio.wait_for(qa2.get(), 10))["filter"]["agent"] == "a"
    await feed.close()
