"""The one query client of the command line: the worker's HTTP API (``/api/status``,
``/api/sql``) when a worker answers, else ClickHouse itself (``Querier``)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from pipeline.errors import TaskpulseError
from pipeline.output import fail, quiet_client_logs
from pipeline.settings import Settings


def auth_headers(settings: Settings) -> dict[str, str]:
    """The worker API's Authorization header from TASKPULSE_API_TOKEN (none when unset)."""
    token = settings.api_token.get_secret_value()
    return {"Authorization": f"Bearer {token}"} if token else {}


def refused(status: int, body: Any) -> None:
    """Fail with the worker's answer to a request it did not authorise."""
    why = body.get("error", "") if isinstance(body, dict) else ""
    if isinstance(why, dict):  # {"error": {"code", "message"}}
        why = why.get("message", "")
    fail(
        f"the worker refused the request (HTTP {status}: {why}); set TASKPULSE_API_TOKEN to a token "
        "it accepts with a role that allows this"
    )


async def get_status(
    session: aiohttp.ClientSession, api: str, headers: dict[str, str] | None = None
) -> dict[str, Any] | None:
    try:
        async with session.get(
            f"{api}/api/status", headers=headers, timeout=aiohttp.ClientTimeout(total=5)
        ) as r:
            if r.status in (401, 403):
                refused(r.status, await r.json(content_type=None))
            if r.status == 200:
                data: dict[str, Any] = await r.json()
                return data
    except (aiohttp.ClientError, TimeoutError):
        return None
    return None


def query_via_worker(settings: Settings, query: str) -> tuple[list[str], list[list[Any]]] | None:
    async def go() -> tuple[list[str], list[list[Any]]] | None:
        try:
            async with aiohttp.ClientSession() as s, s.post(
                f"{settings.effective_api_url}/api/sql",
                json={"query": query},
                headers=auth_headers(settings),
                timeout=aiohttp.ClientTimeout(total=settings.sql_max_execution_s + 30, connect=2),
            ) as r:
                body = await r.json(content_type=None)
                status = r.status
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        if status in (401, 403):
            refused(status, body)
        if "error" in body:
            fail(body["error"])
        return body["columns"], body["rows"]

    return asyncio.run(go())


def worker_call(
    settings: Settings, method: str, path: str, body: Any = None, timeout_s: float = 30.0
) -> tuple[int, Any] | None:
    """(HTTP status, JSON answer) of one request to the running worker's API; None when no
    worker answers.  A refused token fails with the worker's reason."""

    async def go() -> tuple[int, Any] | None:
        try:
            async with aiohttp.ClientSession() as s, s.request(
                method, f"{settings.effective_api_url}{path}", json=body, headers=auth_headers(settings),
                timeout=aiohttp.ClientTimeout(total=timeout_s, connect=2),
            ) as r:  # fmt: skip
                return r.status, await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    answer = asyncio.run(go())
    if answer is not None and answer[0] in (401, 403):
        refused(*answer)
    return answer


def worker_answers(settings: Settings) -> bool:
    """True when a worker serves the API at ``settings.effective_api_url``."""
    answer = worker_call(settings, "GET", "/api/status", timeout_s=5)
    return answer is not None and answer[0] == 200


class Querier:
    """Queries through the running worker, or on the database itself when no worker runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        quiet_client_logs()
        self.via_worker: bool | None = None
        self.store: Any = None

    def __call__(self, query: str, parameters: dict[str, Any] | None = None) -> tuple[list[str], list[list[Any]]]:
        """Columns and rows of ``query``; ``parameters`` (``%(name)s`` placeholders) are bound
        by the ClickHouse client library before the query leaves."""
        if parameters:
            from pipeline.sinks.clickhouse import bind_parameters

            query = bind_parameters(query, parameters)
        if self.via_worker is not False:
            result = query_via_worker(self.settings, query)
            if result is not None:
                self.via_worker = True
                return result
            if self.via_worker:
                fail(f"the worker at {self.settings.effective_api_url} stopped answering")
            self.via_worker = False
        from pipeline.sinks.clickhouse import ClickHouseStore

        self._require_database()
        try:
            if self.store is None:
                s = self.settings
                self.store = ClickHouseStore.from_settings(s, reader=True)
                if not s.clickhouse_read_url:  # the read-only user cannot (and need not) create the schema
                    self.store.ensure_schema(s.auto_migrate, applied_by="taskpulse (query without a worker)")
            res = self.store.analyst_query(query)
        except TaskpulseError as exc:
            fail(str(exc))
            raise
        return list(res.column_names), [list(r) for r in res.result_rows]


    def _require_database(self) -> None:
        """A reader never creates a data directory: with no worker answering and no embedded
        database where TASKPULSE_DATA_DIR points, say where it looked."""
        s = self.settings
        if s.clickhouse_url:
            return
        path = (s.data_dir / "clickhouse").resolve()
        refuse_if_held(path, s)
        if not path.is_dir():
            fail(
                f"nothing to read: no worker answers at {s.effective_api_url} and there is no database "
                f"at {path}. Start one with `taskpulse up`, run this from the directory you started it "
                "in, or set TASKPULSE_DATA_DIR (TASKPULSE_API_URL / _API_PORT for a worker elsewhere)"
            )


def refuse_if_held(path: Any, settings: Settings, for_migrate: bool = False) -> None:
    """Fail in one line when a running worker holds the embedded database at ``path``."""
    from pipeline.sinks.clickhouse import chdb_lock_holder

    holder = chdb_lock_holder(path)
    if not holder:
        return
    who = f"process {holder.removeprefix('PID:').strip()} (a running `taskpulse up` or worker)"
    if for_migrate:
        fail(f"the embedded database {path} is in use by {who}: that worker applied the schema at its start; "
             "stop it first to migrate by hand")  # fmt: skip
    fail(
        f"the embedded database {path} is in use by {who} and no worker answers at "
        f"{settings.effective_api_url}: point TASKPULSE_API_URL / _API_PORT at that worker, or stop it"
    )
