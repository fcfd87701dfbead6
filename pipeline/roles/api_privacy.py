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
from pipeline.roles.api_auth import COMMON_ERRORS, ApiError, Guard, JSONResponse, principal
from pipeline.settings import redact
from pipeline.sinks import privacy as priv

if TYPE_CHECKING:
    from pipeline.roles.api import ApiContext

log = logging.getLogger(__name__)

#: paths not audited: ingest (writes, counted on /metrics), the session, the API description,
#: the UI's event stream (long-lived), and the privacy routes (they audit themselves)
_NOT_AUDITED = ("/api/v1/events", "/api/v1/session", "/api/v1/openapi.json", "/api/v1/docs", "/api/v1/stream")
#: routes that write their own audit row when they answer 200 (refusals are recorded here)
_SELF_AUDITED = "/api/v1/privacy/"
_AUDITED = ("/api/v1/", "/api/sql", "/api/dlq")
#: answers larger than this are audited without counting their rows
_COUNT_MAX_BYTES = 8 * 1024 * 1024


class EraseRequest(BaseModel):
    user: str = Field(description="The person's id as producers sent it, or its pseudonym (pn_…).")


def _who(request: Request, guard: Guard | None = None) -> tuple[str, str]:
    p = principal(request)
    if p is None and guard is not None and guard.tokens.enabled:
        p = guard.principal_of(request)  # refused before the guard let it in: still name the caller
        if p is None:
            return "(unauthenticated)", ""
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


def install_audit(app: FastAPI, ctx: ApiContext, guard: Guard) -> None:
    """Record every audited request in ``audit`` (after its answer is made)."""

    @app.middleware("http")
    async def audit_trail(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        if not audited(path):
            return await call_next(request)
        response = await call_next(request)
        if path.startswith(_SELF_AUDITED) and response.status_code == 200:
            return response
        rows = -1
        if "json" in response.headers.get("content-type", "") and int(
            response.headers.get("content-length") or 0
        ) <= _COUNT_MAX_BYTES:
            body = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
            rows = _rows_of(body)
            response = Response(body, status_code=response.status_code, headers=dict(response.headers))
        who, role = _who(request, guard)
        query = request.url.query if not path.startswith(_SELF_AUDITED) else ""  # never a raw user id
        target = f"{request.method} {path}" + (f"?{query}" if query else "")
        action = _action(path)
        await asyncio.to_thread(priv.audit, ctx.writer, who, role, action, target, rows, response.status_code)
        return response


def _action(path: str) -> str:
    if path.startswith(_SELF_AUDITED):
        return path.removeprefix(_SELF_AUDITED).split("/", 1)[0]  # export / erase (refused)
    if path.startswith("/api/sql"):
        return "sql"
    if path.startswith("/api/dlq") or path.startswith("/api/v1/dlq"):
        return "dlq"
    if path.startswith("/api/v1/report"):
        return "report"
    return "query"


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
        data = await off_loop(priv.erase, ctx.writer, rules, body.user, f"api:{who}", ctx.settings.erasure_refresh_s)
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
