"""The live web UI: the static page at ``/`` (files shipped in ``pipeline/web/static``) and
``GET /api/v1/stream``, Server-Sent Events that carry the dashboard's snapshot.

Every browser's stream is fed by one ``LiveFeed`` per process: a single poll of ClickHouse
(``core.live``'s queries) every ``interval_s`` while anyone is watching, whose snapshot is
handed to every subscriber; a board filter (task type, agent, group) costs one more board
query per distinct filter per poll, never one per browser.  A slow browser only ever gets
the newest snapshot (its queue holds one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from importlib import resources
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from pipeline.core import live
from pipeline.core.tasks import api_queries
from pipeline.errors import TaskpulseError
from pipeline.settings import redact
from pipeline.sinks.clickhouse import ClickHouseStore

log = logging.getLogger(__name__)

STATIC = resources.files("pipeline.web") / "static"
#: seconds between two polls of ClickHouse while a browser watches
POLL_S = 2.0
#: distinct board filters polled at once (a browser asking for one more is told so)
MAX_FILTERS = 32
#: events a task's page shows at most (as ``/api/v1/tasks/{id}``)
TIMELINE_CAP = 1000
#: a comment line sent when nothing else was, so proxies keep the stream open
KEEPALIVE_S = 15.0

MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}  # fmt: skip


class LiveFeed:
    """One poll of ClickHouse per process, shared by every subscriber."""

    def __init__(self, store: ClickHouseStore, interval_s: float = POLL_S, clock: Callable[[], float] = time.time):
        self.store = store
        self.interval_s = interval_s
        self.clock = clock
        self._subscribers: dict[live.BoardFilter, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._latest: dict[live.BoardFilter, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: polls done (each one round of queries, whatever the number of subscribers)
        self.polls = 0
        #: how long the last poll took (ms)
        self.last_poll_ms = 0.0

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    @contextlib.asynccontextmanager
    async def subscribe(self, f: live.BoardFilter) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        """A queue that always holds the newest snapshot for ``f`` (the last one at once)."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1)
        if f not in self._subscribers and len(self._subscribers) >= MAX_FILTERS:
            # each distinct filter costs a board query per poll: bounded, and nobody else's view is dropped
            q.put_nowait({"error": f"{MAX_FILTERS} different board filters are being watched already; "
                                   "clear the filter or try again later"})  # fmt: skip
            yield q
            return
        self._subscribers.setdefault(f, set()).add(q)
        if f in self._latest:
            q.put_nowait(self._latest[f])
        else:
            self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="taskpulse-ui-feed")
        try:
            yield q
        finally:
            subs = self._subscribers.get(f)
            if subs is not None:
                subs.discard(q)
                if not subs:
                    del self._subscribers[f]
                    self._latest.pop(f, None)

    async def _run(self) -> None:
        while self._subscribers:
            began = time.monotonic()
            try:
                snapshots = await asyncio.to_thread(self.poll, list(self._subscribers))
            except TaskpulseError as exc:
                log.warning("web UI: polling ClickHouse failed: %s", redact(str(exc)))
                snapshots = {f: {"error": redact(str(exc))} for f in self._subscribers}
            except Exception:  # a bug must not leave every browser waiting forever
                log.exception("web UI: the dashboard poll failed")
                snapshots = {f: {"error": "the dashboard poll failed; see the server's log"} for f in self._subscribers}
            self.polls += 1
            self.last_poll_ms = round((time.monotonic() - began) * 1000, 1)
            for f, snap in snapshots.items():
                self._latest[f] = snap
                for q in list(self._subscribers.get(f, ())):
                    with contextlib.suppress(asyncio.QueueEmpty):
                        q.get_nowait()
                    q.put_nowait(snap)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)

    def poll(self, filters: list[live.BoardFilter]) -> dict[live.BoardFilter, dict[str, Any]]:
        """One round of queries: the shared part once, the board once per filter."""
        db, rows = self.store.database, partial(read, self.store)
        now_ms = int(self.clock() * 1000)
        agents = live.shape_agents(rows(*live.agents(db)))
        alerts = live.shape_alerts(rows(*live.firing_alerts(db)))
        shared = {
            "now_ms": now_ms,
            "kpis": live.shape_kpis(rows(*live.task_kpis(db))[0], agents, len(alerts)),
            "agents": agents,
            "alerts": alerts,
            "series": live.shape_series(rows(*live.per_minute(db)), now_ms),
            "groups": live.shape_groups(rows(*live.groups(db))),
            "options": live.shape_options(rows(*live.filter_options(db))),
        }
        out = {}
        for f in filters:
            board = live.shape_board(rows(*live.board_cards(db, f)))
            chosen = {"task_type": f.task_type, "agent": f.agent, "group": f.group}
            out[f] = {**shared, "filter": chosen, "board": board}
        return out

    async def status(self) -> dict[str, Any]:
        """The feed's part of /api/status."""
        return {"watchers": self.subscribers, "filters": len(self._subscribers), "polls": self.polls,
                "last_poll_ms": self.last_poll_ms, "interval_s": self.interval_s}  # fmt: skip

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


_JSON_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "The page's JSON", "content": {"application/json": {"schema": {"type": "object"}}}},
    404: {"description": "Not in ClickHouse: `{\"error\": {\"code\": \"not_found\", …}}`"},
    503: {"description": "ClickHouse cannot be reached"},
}


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def router(ctx: Any, interval_s: float = POLL_S) -> APIRouter:
    """The UI's routes, reading through ``ctx.query_store`` (the API's context: the read-only
    user's store in server mode).  The API app's guard authenticates every route; the page
    and its static files hold no data (``core.auth`` leaves them open)."""
    store: ClickHouseStore = ctx.query_store
    feed = LiveFeed(store, interval_s)
    sections = getattr(ctx, "status_sections", None)
    if isinstance(sections, dict):
        sections["ui"] = feed.status  # /api/status: browsers watching, polls, the last poll's time
    r = APIRouter()

    @r.get("/", include_in_schema=False)
    async def index() -> Response:
        return _static("index.html")

    @r.get("/ui/{path:path}", include_in_schema=False)
    async def static(path: str) -> Response:
        return _static(path)

    @r.get(
        "/api/v1/stream", tags=["ui"], response_class=StreamingResponse,
        responses={200: {"description": "`text/event-stream`: `event: snapshot` with the dashboard's JSON",
                         "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    )  # fmt: skip
    async def stream(
        request: Request,
        task_type: str | None = Query(None, description="only tasks of this type on the board"),
        agent: str | None = Query(None, description="only tasks of this agent on the board"),
        group: str | None = Query(None, description="only tasks of this group on the board"),
    ) -> StreamingResponse:
        """Server-Sent Events: a ``snapshot`` event (cards, board, agents, charts, alerts,
        groups) whenever the shared poll has a new one, at most every few seconds."""
        f = live.BoardFilter.of(task_type, agent, group)

        async def events() -> AsyncIterator[bytes]:
            yield b"retry: 3000\n\n"
            async with feed.subscribe(f) as q:
                while not await request.is_disconnected():
                    try:
                        snap = await asyncio.wait_for(q.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield b": keepalive\n\n"
                        continue
                    yield _sse("snapshot", snap)

        return StreamingResponse(
            events(), media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )  # fmt: skip

    @r.get("/api/v1/tasks/{task_id}/timeline", tags=["ui"], responses=_JSON_ANSWERS)
    async def task_timeline(task_id: str) -> Response:
        """A task's page: its current row, its finished record (queue wait, execution and
        review time, the assignment with every agent's confidence) and its events in
        lifecycle order, invalid transitions marked."""
        return await _answer(lambda: _task_page(store, task_id), f"no task {task_id!r} in ClickHouse")

    @r.get("/api/v1/agents/{agent}/activity", tags=["ui"], responses=_JSON_ANSWERS)
    async def agent_activity(agent: str) -> Response:
        """An agent's page: its grid entry, its 50 most recent executions and its busy share
        per minute over the last hour."""
        return await _answer(lambda: _agent_page(store, agent, feed.clock), f"no agent {agent!r} in ClickHouse")

    r.feed = feed  # type: ignore[attr-defined]  # for the app's shutdown and for tests
    return r


async def _answer(compute: Callable[[], dict[str, Any] | None], missing: str) -> Response:
    try:
        body = await asyncio.to_thread(compute)
    except TaskpulseError as exc:
        return _error(503, "clickhouse_unavailable", redact(str(exc)))
    if body is None:
        return _error(404, "not_found", missing)
    return Response(orjson.dumps(body), media_type="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return Response(orjson.dumps({"error": {"code": code, "message": message}}), status, media_type="application/json")


def read(store: ClickHouseStore, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Rows of one of the UI's queries, on the store's read-only, limited session (beside the
    pipeline's writes, like the API's resources)."""
    return [tuple(r) for r in store.read(sql, parameters).result_rows]


def _task_page(store: ClickHouseStore, task_id: str) -> dict[str, Any] | None:
    """The API's own queries of ``/api/v1/tasks/{id}`` (``core.tasks.api_queries``) and its
    timeline (``core.tasks.timeline``), with each event's fields for the page."""
    db = store.database
    row = next(iter(read(store, *api_queries.task_record(db, task_id))), None)
    execution = next(iter(read(store, *api_queries.task_execution(db, task_id))), None)
    events = read(store, *api_queries.task_timeline(db, task_id, TIMELINE_CAP))
    return live.shape_task(
        task_id, dict(zip(api_queries.TASK_COLUMNS, row, strict=True)) if row else None,
        dict(zip(api_queries.EXECUTION_COLUMNS, execution, strict=True)) if execution else None, events,
    )  # fmt: skip


def _agent_page(store: ClickHouseStore, agent: str, clock: Callable[[], float]) -> dict[str, Any] | None:
    db = store.database
    overview = next((a for a in live.shape_agents(read(store, *live.agents(db))) if a["agent"] == agent), None)
    return live.shape_agent(
        agent, overview, read(store, *live.agent_executions(db, agent)),
        read(store, *live.agent_status_changes(db, agent)), int(clock() * 1000),
    )  # fmt: skip


def _static(path: str) -> Response:
    """A file under ``pipeline/web/static`` (no directory listing, nothing outside it)."""
    parts = [p for p in path.split("/") if p]
    if not parts or any(p in (".", "..") or p.startswith(".") or "\\" in p for p in parts):
        return Response(status_code=404)
    node = STATIC.joinpath(*parts)
    if not node.is_file():
        return Response(status_code=404)
    suffix = "." + parts[-1].rsplit(".", 1)[-1] if "." in parts[-1] else ""
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if suffix == ".html":
        headers["Content-Security-Policy"] = (
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
        )
    with resources.as_file(node) as file_path:
        return FileResponse(file_path, media_type=MEDIA.get(suffix, "application/octet-stream"), headers=headers)
