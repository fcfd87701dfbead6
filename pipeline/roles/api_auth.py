"""Who may call the HTTP API, as a FastAPI dependency every route goes through (``Guard``),
the session cookie (``POST`` / ``DELETE /api/v1/session``) and the API's JSON errors.

A caller authenticates with ``Authorization: Bearer <token>`` or the ``taskpulse_session``
cookie (HttpOnly, SameSite=Strict) that ``POST /api/v1/session`` issues for a token.  The
role a request needs comes from ``core.auth.required_role``; /metrics is open when the API is
bound to loopback; the API description (``/api/v1/openapi.json``, ``/api/v1/docs``), the
session routes and the web UI's page and static files are open (``core.auth.is_open``).  A
request with a body must send JSON or NDJSON (a browser form is refused: CSRF).  With no
token configured (loopback only) the API is open and the principal is None.

Errors are ``{"error": {"code": …, "message": …}}`` (``ApiError``); an unknown route is
authenticated first, so it answers 401/403 before 404 and reveals nothing to a stranger.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse as StarletteJSONResponse

from pipeline.core.auth import Principal, Role, TokenTable, bearer, body_type_allowed, is_open, required_role

SESSION_COOKIE = "taskpulse_session"
#: the largest body of a JSON route (/api/sql, the session, DLQ replay); HTTP ingest has its own
JSON_BODY_MAX = 1024 * 1024
#: routes that bound their bodies themselves
_OWN_BODY_LIMIT = frozenset({"/api/v1/events"})


class JSONResponse(StarletteJSONResponse):
    """JSON by orjson: fast, and NaN / infinities (which JSON lacks) written as null."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class ApiError(Exception):
    """An error answer: HTTP status, a stable code, a message that says what to do."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `unauthorized`, `not_found`.")
    message: str = Field(description="What is wrong and how to fix it.")


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


#: The error answers every /api/v1 route may give, for the OpenAPI document.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A parameter is invalid."},
    401: {"model": ErrorResponse, "description": "No valid token or session."},
    403: {"model": ErrorResponse, "description": "The token's role does not allow this."},
    503: {"model": ErrorResponse, "description": "ClickHouse (or Kafka) cannot be reached."},
}


class Guard:
    """The dependency that authenticates and authorises a request; returns its principal."""

    def __init__(self, tokens: TokenTable, metrics_open: bool) -> None:
        self.tokens = tokens
        self.metrics_open = metrics_open

    def principal_of(self, request: Request) -> Principal | None:
        presented = bearer(request.headers.get("Authorization"))
        if presented:
            return self.tokens.authenticate(presented)
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.tokens.from_session(cookie, int(time.time())) if cookie else None

    def check(self, request: Request) -> Principal | None:
        """Raises ``ApiError`` (401, 403, 415) for a request that may not proceed."""
        method, path = request.method, request.url.path
        if method not in ("GET", "HEAD", "OPTIONS") and _has_body(request):
            if not body_type_allowed(request.headers.get("Content-Type")):
                raise ApiError(
                    415, "unsupported_media_type",
                    "send the body as application/json (or application/x-ndjson)",
                )  # fmt: skip
            length = request.headers.get("Content-Length", "")
            if path not in _OWN_BODY_LIMIT:
                if not length.isdigit():
                    raise ApiError(411, "length_required", "send the body with a Content-Length")
                if int(length) > JSON_BODY_MAX:
                    raise ApiError(413, "payload_too_large", f"the body is larger than {JSON_BODY_MAX} bytes")
        if not self.tokens.enabled or is_open(path) or (path == "/metrics" and self.metrics_open):
            return None
        principal = self.principal_of(request)
        if principal is None:
            sent = bool(request.headers.get("Authorization") or request.cookies.get(SESSION_COOKIE))
            raise ApiError(
                401, "unauthorized",
                f"{'a valid' if sent else 'an'} API token is required: send Authorization: Bearer <token> "
                f"(or log in with POST /api/v1/session for the {SESSION_COOKIE} cookie)",
                {"WWW-Authenticate": 'Bearer realm="taskpulse"'},
            )  # fmt: skip
        needed = Role.READER if path == "/metrics" else required_role(method, path)
        if not principal.may(needed):
            raise ApiError(403, "forbidden", f"token {principal.name!r} has role {principal.role}; this needs {needed}")
        return principal

    async def __call__(self, request: Request) -> Principal | None:
        principal = self.check(request)
        request.state.principal = principal
        return principal


def _has_body(request: Request) -> bool:
    length = request.headers.get("Content-Length")
    return bool(length and length != "0") or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def principal(request: Request) -> Principal | None:
    """The caller the guard let in (None: the API is open)."""
    return getattr(request.state, "principal", None)


def install_errors(app: FastAPI, guard: Guard) -> None:
    """JSON errors for ``ApiError``, invalid parameters (400) and unknown routes (after the guard)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return error_response(400, "bad_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            try:
                guard.check(request)  # a stranger learns nothing about which routes exist
            except ApiError as denied:
                return error_response(denied.status, denied.code, denied.message, denied.headers)
        if exc.status_code == 404:
            return error_response(404, "not_found", f"no route {request.url.path}; see /api/v1/docs")
        code = {405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


class SessionRequest(BaseModel):
    token: str = Field("", description="An API token (or send it as Authorization: Bearer).")


class SessionInfo(BaseModel):
    name: str | None = Field(description="The token's name (null: the API is open, no tokens are set).")
    role: str
    expires_at: int | None = Field(description="Epoch seconds when the session cookie expires.")


def session_router(guard: Guard, ttl_s: int) -> APIRouter:
    """``POST /api/v1/session`` (log in with a token: sets the cookie) and ``DELETE`` (log out)."""
    router = APIRouter(prefix="/api/v1", tags=["session"])

    @router.post("/session", response_model=SessionInfo, responses={401: {"model": ErrorResponse}})
    async def login(request: Request, response: Response, body: SessionRequest | None = None) -> SessionInfo:
        """Exchange a token for the ``taskpulse_session`` cookie (HttpOnly, SameSite=Strict) that
        browsers send with every later request."""
        if not guard.tokens.enabled:
            return SessionInfo(name=None, role=Role.ADMIN.value, expires_at=None)
        token = (body.token if body else "") or bearer(request.headers.get("Authorization")) or ""
        who = guard.tokens.authenticate(token) if token else None
        if who is None:
            raise ApiError(401, "unauthorized", "a valid API token is required in the body ({\"token\": …}) "
                           "or as Authorization: Bearer <token>")  # fmt: skip
        now = int(time.time())
        response.set_cookie(
            SESSION_COOKIE, guard.tokens.session(who.name, now, ttl_s), max_age=ttl_s, httponly=True,
            samesite="strict", secure=request.url.scheme == "https", path="/",
        )  # fmt: skip
        return SessionInfo(name=who.name, role=who.role.value, expires_at=now + ttl_s)

    @router.delete("/session", status_code=204)
    async def logout(response: Response) -> Response:
        """Clear the session cookie."""
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        response.status_code = 204
        return response

    return router
