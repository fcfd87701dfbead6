"""Privacy over HTTP: ``GET /api/v1/privacy/export`` (reader), ``POST /api/v1/privacy/erase``
(admin), ``GET /api/v1/audit`` (admin), and the audit middleware that records every query
(``/api/v1/…``, ``/api/sql``, ``/api/dlq…``) with the caller, the status and the rows returned.

Audit rows and erasures go through ``ctx.writer`` (the process's writer store), never the
read-only query store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, FastAPI, Query, Request, Response
from pydantic import BaseModel, Field

from pipeline.errors import SinkUnavailable, TaskpulseError
from pipeline.roles.api_auth import COMMON_ERRORS, ApiError, JSONResponse, principal
from pipeline.settings import redact
from pipeline.sinks import privacy as priv

if TYPE_CHECKING:
    from pipeline.roles.api import ApiContext

log = logging.getLogger(__name__)

#: paths not audited: ingest (writes, counted on /metrics), the session, the API description,
#: the UI's event stream (long-lived), and the privacy routes (they audit themselves)
_NOT_AUDITED = ("/api/v1/events", "/api/v1/session", "/api/v1/openapi.json", "/api/v1/docs", "/api/v1/stream",
                "/api/v1/privacy")  # fmt: skip
_AUDITED = ("/api/v1/", "/api/sql", "/api/dlq")
#: answers larger than this are audited without counting their rows
_COUNT_MAX_BYTES = 8 * 1024 * 1024


class EraseRequest(BaseModel):
    user: str = Field(description="The person's id as producers sent it, or its pseudonym (pn_…).")


def _who(request: Request) -> tuple[str, str]:
    p = principal(request)
    return (p.name, p.role.value) if p is not None else ("(open)", "admin")


def audited(path: str) -> bool:
    return path.startswith(_AUDITED) and not path.startswith(_NOT_AUDITED)


def _rows_of(body: bytes) -> int:
    """Rows an answer returned: the length of its first list (items, rows, entries, …), else 1."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return -1
    if isinstance(doc, list):
        return len(doc)
    if isinstance(doc, dict):
        if "error" in doc:
            return 0
        for key in ("items", "rows", "entries", "data", "events", "tasks", "agents", "alerts", "groups"):
            if isinstance(doc.get(key), list):
                return len(doc[key])
        return 1
    return 1


def install_audit(app: FastAPI, ctx: ApiContext) -> None:
    """Record every audited request in ``audit`` (after its answer is made)."""

    @app.middleware("http")
    async def audit_trail(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if not audited(path):
            return await call_next(request)
        response = await call_next(request)
        rows = -1
        if "json" in response.headers.get("content-type", "") and int(
            response.headers.get("content-length") or 0
        ) <= _COUNT_MAX_BYTES:
            body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
            rows = _rows_of(body)
            response = Response(body, status_code=response.status_code, headers=dict(response.headers))
        who, role = _who(request)
        target = f"{request.method} {path}" + (f"?{request.url.query}" if request.url.query else "")
        await asyncio.to_thread(priv.audit, ctx.writer, who, role, "query", target, rows, response.status_code)
        return response


def router(ctx: ApiContext) -> APIRouter:
    r = APIRouter(prefix="/api/v1", responses=COMMON_ERRORS, tags=["privacy"])
    rules = priv.privacy_of(ctx.settings)

    async def off_loop(fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from exc
        except SinkUnavailable as exc:
            raise ApiError(503, "database_unavailable", redact(str(exc))) from exc
        except (TaskpulseError, RuntimeError) as exc:
            raise ApiError(503, "query_failed", redact(str(exc))) from exc

    @r.get("/privacy/export")
    async def privacy_export(
        request: Request, user: str = Query(description="Raw id or pseudonym (pn_…)")
    ) -> JSONResponse:
        """Everything stored about one person, in every table (reader; audited)."""
        who, role = _who(request)
        data = await off_loop(priv.export, ctx.query_store, rules, user)
        await asyncio.to_thread(priv.audit, ctx.writer, who, role, "export", ",".join(data["subjects"]), data["rows"])
        return JSONResponse(data)

    @r.post("/privacy/erase")
    async def privacy_erase(request: Request, body: EraseRequest) -> JSONResponse:
        """Delete every row naming one person from every table and the DLQ, waited for and
        verified; the person joins the erasure list (admin; audited)."""
        who, role = _who(request)
        data = await off_loop(priv.erase, ctx.writer, rules, body.user, f"api:{who}")
        await asyncio.to_thread(priv.audit, ctx.writer, who, role, "erase", ",".join(data["subjects"]), data["rows"],
                                200, orjson.dumps(data["deleted"]).decode())  # fmt: skip
        return JSONResponse(data)

    @r.get("/audit")
    async def audit_trail(
        limit: int = Query(100, ge=1, le=10_000), since: str = "", who: str = "", action: str = ""
    ) -> JSONResponse:
        """The audit trail, newest first (admin)."""
        rows = await off_loop(priv.audit_rows, ctx.writer, limit, since, who, action)
        return JSONResponse({"items": rows})

    return r
