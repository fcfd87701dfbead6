"""The worker's HTTP API on Faust's web server: /api/status (every role's section), /api/sql
(read-only analyst SQL), /api/schema (migrations), /api/dlq (entries; POST /api/dlq/replay
for operators) and /metrics, behind one guard (``guard``) that every request,
Faust's own pages included, goes through.

The guard: when tokens are set, every route but /metrics needs ``Authorization: Bearer
<token>`` with a role that allows the request (``core.auth.required_role``); /metrics is
open when the API is bound to loopback and needs a reader token otherwise.  Requests that
send a body must send JSON or NDJSON (a browser form is refused: CSRF).  The caller's
``Principal`` is ``request["principal"]`` for handlers (None when the API is open).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web as aioweb
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from pipeline.app import Pipeline
from pipeline.core.auth import Role, TokenFileError, TokenTable, bearer, body_type_allowed, required_role
from pipeline.core.ingest.replay import Filters
from pipeline.errors import ConfigError, TaskpulseError
from pipeline.roles import dlq
from pipeline.settings import Settings, redact

log = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PRINCIPAL = "principal"

Handler = Callable[[aioweb.Request], Awaitable[aioweb.StreamResponse]]


def _json_error(status: int, message: str, **headers: str) -> aioweb.Response:
    return aioweb.json_response({"error": message}, status=status, headers=headers or None)


def guard(tokens: TokenTable, metrics_open: bool) -> Any:
    """The aiohttp middleware that authenticates and authorises every request."""

    @aioweb.middleware
    async def middleware(request: aioweb.Request, handler: Handler) -> aioweb.StreamResponse:
        request[PRINCIPAL] = None
        if request.method not in ("GET", "HEAD", "OPTIONS") and request.body_exists:
            if not body_type_allowed(request.headers.get("Content-Type")):
                return _json_error(415, "send the body as application/json (or application/x-ndjson)")
        if not tokens.enabled or (request.path == "/metrics" and metrics_open):
            return await handler(request)
        presented = bearer(request.headers.get("Authorization"))
        principal = tokens.authenticate(presented) if presented else None
        if principal is None:
            what = "a valid" if presented else "an"
            return _json_error(
                401, f"{what} API token is required: send Authorization: Bearer <token>",
                **{"WWW-Authenticate": 'Bearer realm="taskpulse"'},
            )  # fmt: skip
        needed = Role.READER if request.path == "/metrics" else required_role(request.method, request.path)
        if not principal.may(needed):
            return _json_error(403, f"token {principal.name!r} has role {principal.role}; this needs {needed}")
        request[PRINCIPAL] = principal
        return await handler(request)

    return middleware


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
            settings.api_token.get_secret_value(), text, settings.api_metrics_token.get_secret_value()
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


def register(p: Pipeline) -> None:
    app = p.app
    tokens = load_tokens(p.settings)
    web_app: Any = getattr(app.web, "web_app")  # noqa: B009 - the aiohttp driver's Application
    web_app.middlewares.append(guard(tokens, metrics_open=p.settings.api_on_loopback))
    log.info(
        "HTTP API on %s:%s: %s", p.settings.api_host, p.settings.api_port,
        f"{len(tokens.entries)} token(s)" if tokens.enabled else "open (loopback, no token set)",
    )  # fmt: skip

    @app.page("/api/status")
    async def status(web: View, request: Request) -> Response:
        out: dict[str, Any] = {"roles": p.settings.role_list}
        for name, section in list(p.status_sections.items()):
            part = await section()
            if name == "ingest":
                out.update(part)
            else:
                out[name] = part
        return web.json(redacted(out))

    @app.page("/api/schema")
    async def schema(web: View, request: Request) -> Response:
        """Applied and pending migration steps, TTLs against the settings (reader)."""
        try:
            return web.json(redacted(await asyncio.to_thread(p.store.schema_status)))
        except TaskpulseError as exc:
            return web.json({"error": redact(str(exc))}, status=503)

    @app.page("/api/dlq")
    async def dlq_list(web: View, request: Request) -> Response:
        """GET ?reason=&topic=&since_ms=&id=&limit= → the DLQ entries (reader)."""
        try:
            f = Filters.from_json(dict(request.query))
            return web.json(redacted({"entries": await asyncio.to_thread(dlq.listing, p.store, f)}))
        except ValueError as exc:
            return web.json({"error": str(exc)}, status=400)
        except TaskpulseError as exc:
            return web.json({"error": redact(str(exc))}, status=503)

    @app.page("/api/dlq/replay")
    class DlqReplayView(View):  # type: ignore[misc]
        """POST {"reason", "topic", "since_ms", "id", "limit", "dry_run", "wait_s"} → the
        replay's report (operator: ``core.auth``)."""

        async def post(self, request: Request) -> Response:
            try:
                body = await request.json()
                if not isinstance(body, dict):
                    raise ValueError("the body must be a JSON object")
                f = Filters.from_json(body)
                wait_s = min(float(body.get("wait_s") or 0), 300.0)
            except ValueError as exc:
                return self.json({"error": str(exc)}, status=400)
            principal = cast(Any, request).get(PRINCIPAL)  # the guard's; aiohttp's request is a mapping
            by = f"api:{principal.name}" if principal is not None else "api"
            try:
                report = await dlq.Replayer(p.settings, p.store, p.kafka_kwargs).run(
                    f, bool(body.get("dry_run")), wait_s, by
                )
            except TaskpulseError as exc:
                return self.json({"error": redact(str(exc))}, status=503)
            return self.json(redacted(report.to_json()))

    @app.page("/metrics")
    async def metrics(web: View, request: Request) -> Response:
        body = generate_latest(p.registry)
        # The text format generate_latest writes.  Passed as a header: aiohttp refuses a
        # charset inside content_type.
        return web.bytes(body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    @app.page("/api/sql")
    class SqlView(View):  # type: ignore[misc]
        """POST {"query": "SELECT …"} → {"columns": [...], "rows": [[...]]}.  No GET: a query
        is never run from a URL (a link or an image tag could send it)."""

        async def post(self, request: Request) -> Response:
            try:
                body = await request.json()
            except ValueError:
                return self.json({"error": 'the body must be JSON: {"query": "SELECT …"}'}, status=400)
            query = str(body.get("query", "")) if isinstance(body, dict) else ""
            if not query.strip():
                return self.json({"error": "no query given"}, status=400)
            try:
                result = await asyncio.to_thread((p.query_store or p.store).analyst_query, query)
            except TaskpulseError as exc:
                return self.json({"error": redact(str(exc))}, status=400)
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
