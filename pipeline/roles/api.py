"""The HTTP API as one FastAPI application (``create_app``), served two ways: by the worker,
on its own event loop and web port (``register``: uvicorn through Faust's ``serve_asgi``,
which replaces Faust's aiohttp server), and alone by ``taskpulse api`` (``standalone``:
no pipeline, ClickHouse through the read-only user, scalable behind a load balancer).

Routes: /metrics, /api/status (every role's section), /api/sql (read-only analyst SQL),
/api/schema (migrations), /api/dlq (entries; POST /api/dlq/replay for operators), the
versioned resources under /api/v1 (``api_v1``), HTTP ingest (``api_ingest``), the session
login (``api_auth``) and the web UI's router (``pipeline.roles.ui``, when present).  Every
route goes through one guard (``api_auth.Guard``).  These unversioned routes keep their
``{"error": "<message>"}`` bodies (the CLI reads them); /api/v1 answers
``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry, generate_latest

from pipeline.core.auth import TokenFileError, TokenTable
from pipeline.core.ingest.replay import Filters
from pipeline.errors import ConfigError, TaskpulseError
from pipeline.roles import api_ingest, api_privacy, api_v1, dlq
from pipeline.roles.api_auth import Guard, JSONResponse, install_errors, principal, session_router
from pipeline.settings import Settings, redact
from pipeline.sinks.clickhouse import ClickHouseStore

if TYPE_CHECKING:
    from pipeline.app import Pipeline

log = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
API_VERSION = "1"


@dataclass
class ApiContext:
    """What the API's handlers use, from a worker's pipeline or from ``taskpulse api`` alone."""

    settings: Settings
    tokens: TokenTable
    #: the pipeline's store (schema status, DLQ replay records); the read-only one when alone
    store: ClickHouseStore
    #: where reads run: the read-only user's store in server mode, else ``store``
    query_store: ClickHouseStore
    registry: CollectorRegistry
    kafka_kwargs: dict[str, Any] = field(default_factory=dict)
    #: the roles this process runs (none: the API alone)
    roles: list[str] = field(default_factory=list)
    #: role name → coroutine giving its part of /api/status (``ingest``'s is the top level)
    status_sections: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = field(default_factory=dict)
    #: set by ``create_app``: publishes HTTP-ingested events to the raw topics
    ingest: Any = None
    #: the writer store: audit rows and erasures (the worker's own; ``taskpulse api`` alone
    #: opens one with the writer's credentials, TASKPULSE_CLICKHOUSE_URL / _PASSWORD)
    writer_store: ClickHouseStore | None = None

    @property
    def writer(self) -> ClickHouseStore:
        if self.writer_store is None:
            self.writer_store = ClickHouseStore.from_settings(self.settings)
        return self.writer_store

    @classmethod
    def of_pipeline(cls, p: Pipeline, tokens: TokenTable) -> ApiContext:
        return cls(
            p.settings, tokens, p.store, p.query_store or p.store, p.registry, dict(p.kafka_kwargs),
            list(p.settings.role_list), p.status_sections, writer_store=p.store,
        )  # fmt: skip


def load_tokens(settings: Settings) -> TokenTable:
    """The tokens the API accepts (``TASKPULSE_API_TOKEN``, ``…_TOKENS_FILE``, ``…_METRICS_TOKEN``),
    and the refusal to serve a non-loopback address without one."""
    text = None
    path = settings.api_tokens_file
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"TASKPULSE_API_TOKENS_FILE: cannot read {path}: {exc.strerror}") from exc
    try:
        tokens = TokenTable.build(
            settings.api_token.get_secret_value(), text, settings.api_metrics_token.get_secret_value(),
            settings.api_session_secret.get_secret_value(),
        )
    except TokenFileError as exc:
        raise ConfigError(f"TASKPULSE_API_TOKENS_FILE ({path}): {exc}") from exc
    if not settings.api_on_loopback and not tokens.enabled:
        raise ConfigError(
            f"the HTTP API would listen on {settings.api_host} (not loopback) without authentication: set "
            "TASKPULSE_API_TOKEN (e.g. export TASKPULSE_API_TOKEN=$(python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')) or TASKPULSE_API_TOKENS_FILE (lines from `taskpulse token "
            "create NAME --role ROLE`), or bind TASKPULSE_API_HOST=127.0.0.1"
        )
    if not settings.api_on_loopback and settings.metrics_port:
        raise ConfigError(
            f"TASKPULSE_METRICS_PORT={settings.metrics_port} serves /metrics without authentication on "
            f"{settings.api_host}: leave it 0 (/metrics on the API port takes a reader token) or bind 127.0.0.1"
        )
    return tokens


def redacted(value: Any) -> Any:
    """Every string in ``value`` (nested dicts and lists) passed through ``redact``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return value


def jsonable(v: Any) -> Any:
    """A ClickHouse value as JSON (datetimes and decimals as text, bytes decoded, NaN and
    infinities as null: JSON has no such numbers)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, str | int | bool) or v is None:
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return str(v)


def _legacy_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def operations_router(ctx: ApiContext) -> APIRouter:
    """/metrics, /api/status, /api/schema, /api/dlq, /api/dlq/replay and /api/sql."""
    router = APIRouter(tags=["operations"])

    @router.get("/api/status")
    async def status() -> JSONResponse:
        """Each role's health, lag and last errors (secrets redacted)."""
        out: dict[str, Any] = {"roles": ctx.roles}
        if not ctx.roles:
            out["api"] = {"mode": "standalone"}
        for name, section in list(ctx.status_sections.items()):
            part = await section()
            if name == "ingest":
                out.update(part)
            else:
                out[name] = part
        return JSONResponse(redacted(out))

    @router.get("/api/schema")
    async def schema() -> JSONResponse:
        """Applied and pending migration steps, TTLs against the settings (reader)."""
        try:
            return JSONResponse(redacted(await asyncio.to_thread(ctx.store.schema_status)))
        except TaskpulseError as exc:
            return _legacy_error(503, redact(str(exc)))

    @router.get("/api/dlq")
    async def dlq_list(request: Request) -> JSONResponse:
        """?reason=&topic=&since_ms=&id=&limit= → the DLQ entries (reader)."""
        try:
            f = Filters.from_json(dict(request.query_params))
            return JSONResponse(redacted({"entries": await asyncio.to_thread(dlq.listing, ctx.query_store, f)}))
        except ValueError as exc:
            return _legacy_error(400, str(exc))
        except TaskpulseError as exc:
            return _legacy_error(503, redact(str(exc)))

    @router.post("/api/dlq/replay")
    async def dlq_replay(request: Request) -> JSONResponse:
        """{"reason", "topic", "since_ms", "id", "limit", "dry_run", "wait_s"} → the replay's
        report (operator: ``core.auth``)."""
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            f = Filters.from_json(body)
            wait_s = min(float(body.get("wait_s") or 0), 300.0)
        except ValueError as exc:
            return _legacy_error(400, str(exc))
        who = principal(request)
        by = f"api:{who.name}" if who is not None else "api"
        try:
            report = await dlq.Replayer(ctx.settings, ctx.store, ctx.kafka_kwargs).run(
                f, bool(body.get("dry_run")), wait_s, by
            )
        except TaskpulseError as exc:
            return _legacy_error(503, redact(str(exc)))
        return JSONResponse(redacted(report.to_json()))

    @router.get("/metrics")
    async def metrics() -> Response:
        """Prometheus exposition of every role of this process."""
        return Response(generate_latest(ctx.registry), headers={"Content-Type": METRICS_CONTENT_TYPE})

    @router.post("/api/sql")
    async def sql(request: Request) -> JSONResponse:
        """{"query": "SELECT …"} → {"columns": [...], "rows": [[...]]}.  No GET: a query is
        never run from a URL (a link or an image tag could send it)."""
        try:
            body = await request.json()
        except ValueError:
            return _legacy_error(400, 'the body must be JSON: {"query": "SELECT …"}')
        query = str(body.get("query", "")) if isinstance(body, dict) else ""
        if not query.strip():
            return _legacy_error(400, "no query given")
        try:
            result = await asyncio.to_thread(ctx.query_store.analyst_query, query)
        except TaskpulseError as exc:
            return _legacy_error(400, redact(str(exc)))
        rows = [[jsonable(v) for v in row] for row in result.result_rows]
        return JSONResponse({"columns": list(result.column_names), "rows": rows})

    return router


def _docs_router(app: FastAPI) -> APIRouter:
    """/api/v1/docs: Swagger UI from files shipped in a Python package (fastapi-offline's copy
    of swagger-ui-dist, Apache-2.0), so the page works without internet access."""
    router = APIRouter(include_in_schema=False)

    @router.get("/api/v1/docs")
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/api/v1/openapi.json",
            title="taskpulse API",
            swagger_js_url="/api/v1/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/api/v1/docs/static/swagger-ui.css",
            swagger_favicon_url="/api/v1/docs/static/favicon.png",
        )

    return router


def _swagger_static() -> str:
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the fastapi-offline package (Swagger UI files) is missing: pip install fastapi-offline")
    return f"{next(iter(spec.submodule_search_locations))}/static"


def create_app(ctx: ApiContext) -> FastAPI:
    """The HTTP API of one process."""
    guard = Guard(ctx.tokens, metrics_open=ctx.settings.api_on_loopback)
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if ctx.ingest is not None:
            await ctx.ingest.close()

    app = FastAPI(
        lifespan=lifespan,
        title="taskpulse",
        version=API_VERSION,
        summary="Tasks, agents, KPIs, alerts and anomalies of a taskpulse deployment; HTTP ingest.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        default_response_class=JSONResponse,
        dependencies=[Depends(guard)],
    )
    install_errors(app, guard)
    app.mount("/api/v1/docs/static", StaticFiles(directory=_swagger_static()), name="docs-static")
    ctx.ingest = api_ingest.Ingest(ctx)
    routers = [
        _docs_router(app), session_router(guard, ctx.settings.api_session_ttl_s), operations_router(ctx),
        api_v1.router(ctx), api_ingest.router(ctx.ingest), api_privacy.router(ctx),
    ]  # fmt: skip
    api_privacy.install_audit(app, ctx, guard)
    if importlib.util.find_spec("pipeline.roles.ui") is not None:
        # the web UI's routes: ``pipeline.roles.ui.router(ctx: ApiContext) -> APIRouter``; first, so
        # its /tasks/{id}/timeline is matched before /tasks/{id} (ids may hold "/": run_id/task_id)
        routers.insert(0, importlib.import_module("pipeline.roles.ui").router(ctx))
    for router in routers:
        app.include_router(router)
    #: every route of the app, for the test that the OpenAPI document covers them all
    app.state.api_routers = routers
    _document_envelope(app)
    return app


def _document_envelope(app: FastAPI) -> None:
    """Add the event envelope's JSON Schema (``pipeline.events.Envelope``) to the OpenAPI
    components, as ``EventEnvelope`` (the body of ``POST /api/v1/events``)."""
    from fastapi.openapi.utils import get_openapi

    from pipeline.events import Envelope

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes,
            )  # fmt: skip
            schema = Envelope.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for name, sub in schema.pop("$defs", {}).items():
                schemas.setdefault(name, sub)
            schemas["EventEnvelope"] = schema
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings for the API: no access log (the worker logs what matters), no
    server header, our logging configuration; at shutdown, open responses that never end by
    themselves (the web UI's event stream) are closed after 3 s."""
    return {
        "access_log": False, "server_header": False, "log_config": None, "timeout_keep_alive": 30,
        "timeout_graceful_shutdown": 3,
    }  # fmt: skip


def register(p: Pipeline) -> None:
    """Serve the API from the worker: uvicorn on the worker's event loop and web port
    (Faust's ``serve_asgi``; it starts once the app has started, after table recovery)."""
    from faust.contrib.asgi import serve_asgi

    tokens = load_tokens(p.settings)
    app = create_app(ApiContext.of_pipeline(p, tokens))
    serve_asgi(p.app, app, host=p.settings.api_host, port=p.settings.api_port, **uvicorn_options(p.settings))
    log.info(
        "HTTP API on %s:%s: %s", p.settings.api_host, p.settings.api_port,
        f"{len(tokens.entries)} token(s)" if tokens.enabled else "open (loopback, no token set)",
    )  # fmt: skip


def standalone(settings: Settings) -> tuple[FastAPI, ApiContext]:
    """The API without the pipeline (``taskpulse api``): reads through the read-only user
    (``TASKPULSE_CLICKHOUSE_READ_URL``, else the writer's URL), publishes HTTP ingest to Kafka."""
    tokens = load_tokens(settings)
    from pipeline.kafka_security import KafkaSecurity, client_kwargs

    store = ClickHouseStore.from_settings(settings, reader=True)
    ctx = ApiContext(
        settings, tokens, store, store, CollectorRegistry(), client_kwargs(KafkaSecurity.from_settings(settings))
    )
    if not settings.clickhouse_read_url:
        ctx.writer_store = store  # one user for both: the writer's (audit rows, erasures)
    return create_app(ctx), ctx
