"""The worker's HTTP API on Faust's web server: /api/status (every role's section), /api/sql
(queries on the worker's ClickHouse: chDB allows one engine per process) and /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import generate_latest

from pipeline.app import Pipeline
from pipeline.errors import TaskpulseError

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def register(p: Pipeline) -> None:
    app = p.app

    @app.page("/api/status")
    async def status(web: View, request: Request) -> Response:
        out: dict[str, Any] = {"roles": p.settings.role_list}
        for name, section in list(p.status_sections.items()):
            part = await section()
            if name == "ingest":
                out.update(part)
            else:
                out[name] = part
        return web.json(out)

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        body = b"".join(generate_latest(r) for r in p.registries)
        # The text format generate_latest writes.  Passed as a header: aiohttp refuses a
        # charset inside content_type.
        return web.bytes(body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    @app.page("/api/sql")
    class SqlView(View):  # type: ignore[misc]
        """POST {"query": "SELECT …"} (or GET ?query=…) → {"columns": [...], "rows": [[...]]}."""

        async def post(self, request: Request) -> Response:
            body = await request.json()
            return await self._run(str(body.get("query", "")))

        async def get(self, request: Request) -> Response:
            return await self._run(str(request.query.get("query", "")))

        async def _run(self, query: str) -> Response:
            if not query.strip():
                return self.json({"error": "no query given"}, status=400)
            try:
                result = await asyncio.to_thread((p.query_store or p.store).query, query)
            except TaskpulseError as exc:
                return self.json({"error": str(exc)}, status=400)
            rows = [[jsonable(v) for v in row] for row in result.result_rows]
            return self.json({"columns": list(result.column_names), "rows": rows})


def jsonable(v: Any) -> Any:
    """A ClickHouse value as JSON (datetimes and decimals as text, bytes decoded)."""
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return str(v)
