"""The ``taskpulse`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import orjson
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from pipeline.errors import TaskpulseError
from pipeline.settings import Settings, install_log_redaction, secret_values

cli = typer.Typer(
    name="taskpulse",
    help="See what fleets of AI agents and task runners are doing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)
alerts_app = typer.Typer(help="Alert rules and alert history.", no_args_is_help=True)
export_app = typer.Typer(help="Export data (CSV).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (TASKPULSE_API_TOKENS_FILE).", no_args_is_help=True)
cli.add_typer(alerts_app, name="alerts")
cli.add_typer(export_app, name="export")
cli.add_typer(token_app, name="token")


def _settings() -> Settings:
    settings = Settings()
    install_log_redaction(secret_values(settings))
    return settings


def _auth_headers(settings: Settings) -> dict[str, str]:
    """The worker API's Authorization header from TASKPULSE_API_TOKEN (none when unset)."""
    token = settings.api_token.get_secret_value()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _refused(status: int, body: Any) -> None:
    """Fail with the worker's answer to a request it did not authorise."""
    why = body.get("error", "") if isinstance(body, dict) else ""
    _fail(
        f"the worker refused the request (HTTP {status}: {why}); set TASKPULSE_API_TOKEN to a token "
        "it accepts with a role that allows this"
    )


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


# --------------------------------------------------------------------------- worker


@cli.command()
def worker(
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR")] = "",
    roles: Annotated[
        str, typer.Option(help="Comma-separated: ingest, correlate, alerts, metrics (default: all; TASKPULSE_ROLES)")
    ] = "",
) -> None:
    """Run the pipeline worker (Faust): ingest, correlate, alert and export metrics."""
    settings = _settings()
    if roles:
        settings = settings.model_copy(update={"roles": roles})
    if not settings.kafka_url:
        _fail(
            "the worker needs TASKPULSE_KAFKA_URL (e.g. kafka://127.0.0.1:9092); "
            "`taskpulse up` starts an embedded broker and a worker for you"
        )
    from pipeline.app import build_pipeline
    from pipeline.kafka_security import KafkaSecurity, client_kwargs
    from pipeline.roles import register_roles
    from pipeline.roles.api import load_tokens
    from pipeline.settings import kafka_bootstrap
    from pipeline.sinks.kafka import ensure_topics
    from pipeline.topics import ALL_TOPICS

    try:
        load_tokens(settings)  # refuses a non-loopback API without a token before anything starts
    except TaskpulseError as exc:
        _fail(str(exc))
    level = (log_level or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("taskpulse.worker")
    log.warning("starting worker with settings %s", json.dumps(settings.masked()))
    try:
        asyncio.run(
            ensure_topics(
                kafka_bootstrap(settings.kafka_url),
                ALL_TOPICS,
                settings.partitions,
                settings.topic_retention_ms,
                settings.topic_retention_bytes,
                client_kwargs=client_kwargs(KafkaSecurity.from_settings(settings)),
            )
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        _use_uvloop()
        # Each batch allocates hundreds of thousands of short-lived dicts; the default gen0
        # threshold (700) makes the collector run thousands of times per batch.
        gc.set_threshold(100_000, 50, 100)
        asyncio.set_event_loop(asyncio.new_event_loop())
        pipeline = build_pipeline(settings, settings.kafka_url, settings.effective_clickhouse_url)
    except TaskpulseError as exc:
        _fail(str(exc))
        return
    try:
        register_roles(pipeline, settings.role_list)
    except (ValueError, TaskpulseError) as exc:
        _fail(str(exc))
    import faust

    class _Worker(faust.Worker):  # type: ignore[misc]
        """A Faust worker without the terminal spinner (it forces DEBUG on the root logger)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.spinner = None

    w = _Worker(pipeline.app, loglevel=level, quiet=True, redirect_stdouts=False)
    w.execute_from_commandline()


def _use_uvloop() -> None:
    """uvloop makes Faust's per-message scheduling cheaper; plain asyncio if it is missing."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --------------------------------------------------------------------------- up


@contextlib.contextmanager
def _embedded(settings: Settings) -> Iterator[tuple[str, int | None]]:
    """(Kafka URL, embedded broker pid): the configured broker, or an embedded one."""
    if settings.kafka_url:
        yield settings.kafka_url, None
        return
    from pipeline.embedded import EmbeddedBroker

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=settings.data_dir / "tansu.log") as broker:
        yield broker.url, broker.proc.pid if broker.proc else None


def _spawn_worker(settings: Settings, kafka_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TASKPULSE_KAFKA_URL": kafka_url}
    if settings.embedded_kafka:  # the embedded broker speaks PLAINTEXT whatever the environment says
        env["TASKPULSE_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
    out = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "worker"], stdout=out, stderr=subprocess.STDOUT, env=env
    )


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def _get_status(
    session: aiohttp.ClientSession, api: str, headers: dict[str, str] | None = None
) -> dict[str, Any] | None:
    try:
        async with session.get(
            f"{api}/api/status", headers=headers, timeout=aiohttp.ClientTimeout(total=5)
        ) as r:
            if r.status in (401, 403):
                _refused(r.status, await r.json(content_type=None))
            if r.status == 200:
                data: dict[str, Any] = await r.json()
                return data
    except (aiohttp.ClientError, TimeoutError):
        return None
    return None


@cli.command()
def up(
    demo: Annotated[bool, typer.Option(help="Publish realistic demo traffic.")] = True,
    rate: Annotated[float, typer.Option(help="Demo tasks started per second.")] = 20.0,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: run until Ctrl-C).")] = 0.0,  # noqa: E501
) -> None:
    """Start the embedded stack (broker, ClickHouse, worker), demo traffic and a live status view."""
    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / "worker.log"
    with _embedded(settings) as (kafka_url, broker_pid):
        console.print(f"[bold]taskpulse[/] broker {kafka_url}, ClickHouse {settings.effective_clickhouse_url}")
        console.print(f"worker log: {log_path}; API: {settings.effective_api_url}")
        proc = _spawn_worker(settings, kafka_url, log_path)
        try:
            asyncio.run(_up_loop(settings, kafka_url, proc, demo, rate, duration, broker_pid))
        except KeyboardInterrupt:
            pass
        finally:
            console.print("stopping worker…")
            _stop(proc)
    console.print("stopped.")


async def _up_loop(
    settings: Settings,
    kafka_url: str,
    proc: subprocess.Popen[bytes],
    demo: bool,
    rate: float,
    duration: float,
    broker_pid: int | None = None,
) -> None:
    import psutil

    from pipeline.status import RateTracker, render

    def broker_mib() -> int | None:
        # Tansu's memory storage keeps every message (it does not apply retention.ms):
        # show its size so a long demo run does not surprise anyone.
        if broker_pid is None:
            return None
        with contextlib.suppress(psutil.Error):
            return int(psutil.Process(broker_pid).memory_info().rss / 2**20)
        return None

    api = settings.effective_api_url
    headers = _auth_headers(settings)
    published = [0]
    demo_task: asyncio.Task[None] | None = None
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        with console.status("starting the worker (opening ClickHouse, joining the consumer group)…"):
            while (status := await _get_status(session, api, headers)) is None:
                if proc.poll() is not None:
                    _fail(f"the worker exited with code {proc.returncode}; see {settings.data_dir / 'worker.log'}")
                await asyncio.sleep(0.5)
        if demo:
            demo_task = asyncio.create_task(_demo_traffic(settings, kafka_url, rate, published))
        rates = RateTracker()
        hint = "Ctrl-C to stop · taskpulse sql \"SELECT …\" in another terminal"
        try:
            with Live(render(status, rates), console=console, refresh_per_second=2) as live:
                while not duration or time.monotonic() - started < duration:
                    await asyncio.sleep(1.0)
                    if proc.poll() is not None:
                        _fail(f"the worker exited with code {proc.returncode}; see {settings.data_dir / 'worker.log'}")
                    status = await _get_status(session, api, headers) or status
                    extra = {"published": published[0], "hint": hint, "broker_mib": broker_mib()}
                    live.update(render(status, rates, extra))
        finally:
            if demo_task:
                demo_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await demo_task


async def _demo_traffic(settings: Settings, kafka_url: str, tasks_per_s: float, published: list[int]) -> None:
    """Publish the demo fleet's events in real time (event time = now)."""
    from pipeline.demo import DemoFleet
    from pipeline.kafka_security import KafkaSecurity
    from pipeline.sdk import TaskpulseProducer

    fleet = DemoFleet(seed=int(time.time()), tasks_per_s=tasks_per_s)
    start = int(time.time() * 1000)
    security = KafkaSecurity.from_settings(settings)
    async with TaskpulseProducer(kafka_url, batch_size=50, linger_ms=50, security=security) as producer:
        last_flush = time.monotonic()
        for ts, event in fleet.timed(start):
            ahead = ts / 1000 - time.time()
            if ahead > 0:
                await producer.flush()
                await asyncio.sleep(min(ahead, 1.0))
            await producer.send(event)
            published[0] += 1
            if time.monotonic() - last_flush > 0.2:
                await producer.flush()
                last_flush = time.monotonic()


# --------------------------------------------------------------------------- producers


@cli.command()
def emit(
    event_type: Annotated[str, typer.Argument(help="e.g. task.created")],
    entity_id: Annotated[str, typer.Argument(help="the task / agent / component / user id")],
    state: Annotated[str, typer.Option("--state", "-s", help="current_state as JSON")] = "{}",
    metrics: Annotated[str, typer.Option(help="metrics as JSON, e.g. '{\"duration_ms\": 150}'")] = "{}",
    metadata: Annotated[str, typer.Option(help="metadata as JSON")] = "{}",
    timestamp: Annotated[str, typer.Option(help="event time; default now")] = "",
) -> None:
    """Publish one event."""
    from pipeline.sdk import TaskpulseProducer

    settings = _settings()
    url = _require_kafka(settings)
    try:
        parsed = {k: orjson.loads(v) for k, v in (("state", state), ("metrics", metrics), ("metadata", metadata))}
    except orjson.JSONDecodeError as exc:
        _fail(f"--state/--metrics/--metadata must be JSON objects: {exc}")
        return

    async def go() -> str:
        async with TaskpulseProducer(url, batch_size=1, security=_kafka_security(settings)) as p:
            return await p.emit(
                event_type, entity_id, parsed["state"], metrics=parsed["metrics"],
                metadata=parsed["metadata"], timestamp=timestamp or None,
            )  # fmt: skip

    console.print(f"published {event_type} {entity_id} id={asyncio.run(go())}")


def _kafka_security(settings: Settings) -> Any:
    """The TLS / SASL of TASKPULSE_KAFKA_* for the SDK producers the commands use."""
    from pipeline.kafka_security import KafkaSecurity, client_kwargs

    security = KafkaSecurity.from_settings(settings)
    try:
        client_kwargs(security)  # unreadable CA / certificate files, SASL without a user: say so
    except TaskpulseError as exc:
        _fail(str(exc))
    return security


def _require_kafka(settings: Settings) -> str:
    if not settings.kafka_url:
        _fail(
            "set TASKPULSE_KAFKA_URL to the broker (the URL `taskpulse up` printed, "
            "or your Kafka cluster, e.g. kafka://127.0.0.1:9092)"
        )
    return settings.kafka_url


@cli.command("demo")
def demo_cmd(
    events: Annotated[int, typer.Option(help="How many events to publish.")] = 10_000,
    batch_size: Annotated[int, typer.Option(help="Events per Kafka message (1: one each).")] = 100,
    seed: int = 7,
) -> None:
    """Publish realistic synthetic traffic (a fleet taking tasks through the lifecycle)."""
    from rich.progress import Progress

    from pipeline.demo import DemoFleet
    from pipeline.sdk import TaskpulseProducer

    settings = _settings()
    url = _require_kafka(settings)
    start = int(time.time() * 1000) - 3_600_000

    async def go() -> None:
        fleet = DemoFleet(seed=seed)
        async with TaskpulseProducer(url, batch_size=batch_size, security=_kafka_security(settings)) as p:
            with Progress(console=console) as bar:
                task = bar.add_task("publishing", total=events)
                for i, ev in enumerate(fleet.stream(start)):
                    if i >= events:
                        break
                    await p.send(ev)
                    if i % 1000 == 0:
                        bar.update(task, completed=i)
                await p.flush()
                bar.update(task, completed=events)

    asyncio.run(go())
    console.print(f"published {events:,} events")


@cli.command()
def ingest(
    file: Annotated[Path, typer.Argument(help="NDJSON file: one event per line")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep reading appended lines.")] = False,
) -> None:
    """Publish the events of an NDJSON file (each line as it is; the pipeline validates)."""
    from pipeline.sdk import TaskpulseProducer
    from pipeline.topics import RAW_TOPICS

    settings = _settings()
    url = _require_kafka(settings)
    if not file.exists():
        _fail(f"{file} does not exist")

    async def go() -> int:
        n = 0
        async with TaskpulseProducer(url, batch_size=1, security=_kafka_security(settings)) as p:
            with file.open("rb") as fh:
                while True:
                    line = fh.readline()
                    if not line:
                        if not follow:
                            break
                        await p.flush()
                        await asyncio.sleep(0.5)
                        continue
                    line = line.strip()
                    if not line:
                        continue
                    topic, key = RAW_TOPICS["system"], None
                    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
                        doc = orjson.loads(line)
                        topic = RAW_TOPICS.get(str(doc.get("entity_type")), topic)
                        key = str(doc.get("entity_id", "")).encode() or None
                    await p.send_raw(topic, line, key=key)
                    n += 1
        return n

    try:
        console.print(f"published {asyncio.run(go()):,} lines from {file}")
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------- analysts


@cli.command()
def sql(
    query: Annotated[str, typer.Argument(help="A ClickHouse SQL query")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, tsv or json")] = "table",
) -> None:
    """Run a SQL query on the taskpulse ClickHouse (through the running worker if there is one)."""
    settings = _settings()
    columns, rows = _Querier(settings)(query)
    if fmt == "json":
        sys.stdout.write(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str) + "\n")
    elif fmt == "tsv":
        sys.stdout.write("\t".join(columns) + "\n")
        for r in rows:
            sys.stdout.write("\t".join("" if v is None else str(v) for v in r) + "\n")
    else:
        table = Table(*columns)
        for r in rows:
            table.add_row(*("NULL" if v is None else str(v) for v in r))
        console.print(table)


def _query_via_worker(settings: Settings, query: str) -> tuple[list[str], list[list[Any]]] | None:
    async def go() -> tuple[list[str], list[list[Any]]] | None:
        try:
            async with aiohttp.ClientSession() as s, s.post(
                f"{settings.effective_api_url}/api/sql",
                json={"query": query},
                headers=_auth_headers(settings),
                timeout=aiohttp.ClientTimeout(total=settings.sql_max_execution_s + 30, connect=2),
            ) as r:
                body = await r.json(content_type=None)
                status = r.status
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        if status in (401, 403):
            _refused(status, body)
        if "error" in body:
            _fail(body["error"])
        return body["columns"], body["rows"]

    return asyncio.run(go())


@cli.command()
def migrate() -> None:
    """Apply the ClickHouse schema (idempotent)."""
    from pipeline.sinks.clickhouse import store_from_settings

    settings = _settings()
    try:
        store = store_from_settings(settings)
        n = len(store.migrate(settings.sketch_relative_accuracy))
    except TaskpulseError as exc:
        _fail(str(exc))
        return
    console.print(f"schema applied: {n} statements on {settings.clickhouse_database}")


@cli.command()
def status(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every second.")] = False,
    group: Annotated[str, typer.Option("--group", "-g", help="Progress of one task group (batch, week, correlation id)")] = "",  # noqa: E501
) -> None:
    """Show the running worker's status, or the live progress of a task group."""
    from pipeline.status import RateTracker, render, render_group

    settings = _settings()
    api = settings.effective_api_url
    if group:
        query = _Querier(settings)
        db = settings.clickhouse_database
        key = group.replace("\\", "\\\\").replace("'", "\\'")

        def frame() -> Any:
            cols, rows = query(f"SELECT * FROM {db}.task_groups WHERE group_key = '{key}'")
            _, states = query(
                f"SELECT state, count() FROM {db}.tasks FINAL WHERE group_key = '{key}' GROUP BY state ORDER BY 2 DESC"
            )
            if not rows:
                _fail(f"no tasks in group {group!r} (groups come from the task's `group` or correlation id)")
            return render_group(dict(zip(cols, rows[0], strict=True)), {str(k): int(n) for k, n in states})

        with contextlib.suppress(KeyboardInterrupt):
            if not watch:
                console.print(frame())
                return
            with Live(frame(), console=console) as live:
                while True:
                    time.sleep(1)
                    live.update(frame())
        return

    async def go() -> None:
        rates = RateTracker()
        headers = _auth_headers(settings)
        async with aiohttp.ClientSession() as s:
            st = await _get_status(s, api, headers)
            if st is None:
                _fail(f"no worker answers at {api} (start one with `taskpulse up`)")
                return
            if not watch:
                console.print(render(st, rates))
                return
            with Live(render(st, rates), console=console) as live:
                while True:
                    await asyncio.sleep(1)
                    st = await _get_status(s, api, headers) or st
                    live.update(render(st, rates))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())


@cli.command()
def schemas(
    out: Annotated[Path, typer.Option(help="Where to write them")] = Path("schemas"),
) -> None:
    """Write the JSON Schemas of the event models and the ClickHouse DDL to schemas/."""
    from pipeline.schema_export import write_schemas

    files = write_schemas(out)
    console.print(f"wrote {len(files)} files under {out}/")


# --------------------------------------------------------------------------- export (correlation)


class _Querier:
    """Queries through the running worker, or on the database itself when no worker runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.via_worker: bool | None = None
        self.store: Any = None

    def __call__(self, query: str) -> tuple[list[str], list[list[Any]]]:
        if self.via_worker is not False:
            result = _query_via_worker(self.settings, query)
            if result is not None:
                self.via_worker = True
                return result
            if self.via_worker:
                _fail(f"the worker at {self.settings.effective_api_url} stopped answering")
            self.via_worker = False
        from pipeline.sinks.clickhouse import store_from_settings

        try:
            if self.store is None:
                s = self.settings
                self.store = store_from_settings(s, reader=True)
                if not s.clickhouse_read_url:  # the read-only user cannot (and need not) create the schema
                    self.store.migrate(s.sketch_relative_accuracy)
            res = self.store.analyst_query(query)
        except TaskpulseError as exc:
            _fail(str(exc))
            raise
        return list(res.column_names), [list(r) for r in res.result_rows]


@export_app.command("csv")
def export_csv(
    since: Annotated[str, typer.Option(help="From this request time: ISO 8601, or 24h / 7d back from now")] = "",
    until: Annotated[str, typer.Option(help="Before this request time (same forms)")] = "",
    agent: Annotated[str, typer.Option(help="Only tasks assigned to this agent")] = "",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout)")] = None,
    page_rows: Annotated[int, typer.Option(help="Rows per query page (memory bound)")] = 10_000,
) -> None:
    """Export finished tasks as the task-log CSV (one row per task, streamed page by page)."""
    import csv

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from pipeline.core.tasks.export import CSV_HEADER, count_sql, csv_row, page_sql, parse_time

    settings = _settings()
    now_ms = int(time.time() * 1000)
    try:
        since_ms = parse_time(since, now_ms) if since else None
        until_ms = parse_time(until, now_ms) if until else None
    except ValueError as exc:
        _fail(f"--since/--until: {exc}")
        return
    db = settings.clickhouse_database
    query = _Querier(settings)
    total = int(query(count_sql(db, since_ms, until_ms, agent or None))[1][0][0])
    fh = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    show = output is not None and err.is_terminal
    written = 0
    try:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        with Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=err, disable=not show,
        ) as bar:  # fmt: skip
            job = bar.add_task("exporting tasks", total=total)
            after: tuple[str, str] | None = None
            while True:
                _, rows = query(page_sql(db, since_ms, until_ms, agent or None, after, page_rows))
                for row in rows:
                    fields, after = csv_row(row)
                    writer.writerow(fields)
                written += len(rows)
                bar.update(job, completed=written)
                if len(rows) < page_rows:
                    break
    finally:
        if output:
            fh.close()
    if output:
        err.print(f"wrote {written:,} tasks to {output}")



@cli.command()
def report(
    period_name: Annotated[str, typer.Argument(metavar="daily|weekly|monthly", help="The period: the last full "
                                               "UTC day, 7 days or 30 days")] = "daily",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the markdown here")] = None,
    end: Annotated[str, typer.Option(help="End of the period (ISO 8601, now, 2h…); default: last UTC midnight")] = "",
) -> None:
    """A periodic report: summary, tasks by type, agent rankings, system health, findings."""
    from rich.markdown import Markdown

    from pipeline.core.tasks import report as rep
    from pipeline.core.tasks.export import parse_time

    settings = _settings()
    now_ms = int(time.time() * 1000)
    try:
        p = rep.period(period_name, now_ms, parse_time(end, now_ms) if end else None)
    except ValueError as exc:
        _fail(str(exc))
        return
    query = _Querier(settings)
    answers = {name: query(sql)[1] for name, sql in rep.queries(settings.clickhouse_database, p).items()}
    text = rep.render(p, answers)
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote the {p.name} report to {output}")
    elif console.is_terminal:
        console.print(Markdown(text))
    else:
        sys.stdout.write(text)


# --------------------------------------------------------------------------- tokens


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Who uses the token (recorded as the source of what it sends)")],
    role: Annotated[str, typer.Option(help="reader, writer, operator or admin")] = "reader",
) -> None:
    """Make a new API token: prints the secret (once; it is not stored) and the line to add to
    TASKPULSE_API_TOKENS_FILE."""
    import secrets

    from pipeline.core.auth import TokenFileError, token_line

    secret = secrets.token_urlsafe(32)
    try:
        line = token_line(name, role, secret)
    except TokenFileError as exc:
        _fail(str(exc).replace("tokens file line 1: ", ""))
        return
    sys.stdout.write(f"secret: {secret}\nline:   {line}\n")
    err.print(
        "Give the secret to the client (it sends Authorization: Bearer <secret>; the CLI reads "
        "TASKPULSE_API_TOKEN); it is shown once and not stored. Add the line to TASKPULSE_API_TOKENS_FILE "
        "and restart the worker.",
        highlight=False,
    )


# --------------------------------------------------------------------------- alerts


@alerts_app.command("check")
def alerts_check(
    file: Annotated[Path, typer.Argument(help="The rules YAML file (e.g. deploy/alerts/rules.yml)")],
) -> None:
    """Validate an alert rules file without starting anything (exit 0: valid, 2: not)."""
    from pipeline.core.alerts.rules import RulesError, parse_rules

    if not file.is_file():
        _fail(f"{file}: no such file")
    try:
        rules = parse_rules(file.read_text(), str(file))
    except RulesError as exc:
        _fail(str(exc))
        return
    console.print(f"{file}: OK, {len(rules.rules)} rules")
    for r in rules.rules:
        cond = f"{r.measure} anomaly (z > {r.anomaly_settings.z})" if r.type == "anomaly" else (
            f"{r.measure} {r.op} {r.threshold:g}"
        )
        by = f" by {','.join(r.group_by)}" if r.group_by else ""
        console.print(f"  {r.name}: {cond}{by} over {r.window}, for {r.for_:g}s, {r.severity}"
                      f" -> {', '.join(rules.notifiers_for(r.severity))}")


_ALERT_LIST_COLUMNS = "at, rule, state, change, severity, group_labels, value, threshold, summary"


@alerts_app.command("list")
def alerts_list(
    firing: Annotated[bool, typer.Option("--firing", help="Only alerts firing now (latest state per alert).")] = False,
    limit: Annotated[int, typer.Option(help="Most recent state changes to show.")] = 50,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
) -> None:
    """Show alert state changes, newest first (through the running worker if there is one)."""
    settings = _settings()
    db = settings.clickhouse_database
    if firing:
        query = (
            f"SELECT {_ALERT_LIST_COLUMNS} FROM (SELECT * FROM {db}.alerts ORDER BY at DESC, notifications DESC "
            f"LIMIT 1 BY fingerprint) WHERE state = 'firing' ORDER BY at DESC LIMIT {int(limit)}"
        )
    else:
        query = f"SELECT {_ALERT_LIST_COLUMNS} FROM {db}.alerts ORDER BY at DESC LIMIT {int(limit)}"
    columns, rows = _Querier(settings)(query)
    if fmt == "json":
        sys.stdout.write(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str) + "\n")
        return
    if not rows:
        console.print("no firing alerts" if firing else "no alert state changes recorded")
        return
    table = Table(*columns)
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    console.print(table)



def main() -> None:
    cli()
